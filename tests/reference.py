"""Float64 NumPy references for the math of llp_tf, written from METHOD.md, not from the implementation.

Each function is the plain, brute-force reading of one formula (dense matrices, Python loops where they
read more clearly); they are slow and that is fine at test sizes. The tests compare llp_tf against them.

Notation (METHOD.md): bank [N, D] of unit rows; `is_labelled` [N] bool; labels [N] int; tau temperature.
"""
import numpy as np


# ----------------------------------------------------------------------------- test data

def clustered_bank(seed, num_rows=1500, dim=16, num_classes=6, labelled_fraction=0.1,
                   spreads=(0.25, 0.35, 0.45, 0.55, 0.65, 0.8)):
    """Unit rows around `num_classes` random unit centres, class c with Gaussian noise spreads[c].

    Different spreads give the classes different local densities, which is what the density weighting
    of LLP reacts to. The rows are rounded to float32 (and returned as float64), so that the float64
    and float32 runs of the implementation see exactly the same points.
    Returns (bank [N, D] float64, true labels [N] int64, is_labelled [N] bool).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, num_classes, size=num_rows)
    spreads = np.asarray(spreads, np.float64)[:num_classes]
    rows = centres[labels] + spreads[labels, None] * rng.normal(size=(num_rows, dim)) / np.sqrt(dim)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows = rows.astype(np.float32).astype(np.float64)
    is_labelled = rng.random(num_rows) < labelled_fraction
    return rows, labels.astype(np.int64), is_labelled


# ----------------------------------------------------------------------------- non-parametric softmax

def log_sum_exp(x):
    """log(sum(exp(x))) without overflow: max + log(sum(exp(x - max))). -inf for an empty x."""
    x = np.asarray(x, np.float64)
    if x.size == 0 or np.all(x == -np.inf):
        return -np.inf
    top = np.max(x)
    return top + np.log(np.sum(np.exp(x - top)))


def log_p_instance(v, bank, tau):
    """log P(i|v) for every bank row i (paper Eq. 1): bank[i].v/tau - log sum_j exp(bank[j].v/tau)."""
    logits = bank @ v / tau
    return logits - log_sum_exp(logits)


# ----------------------------------------------------------------------------- label propagation

def nearest(bank, query_rows, key_rows, k, tau, key_bias=None, exclude_self=False):
    """For each query row q: the k keys with the highest bank[q].bank[key]/tau + key_bias, best first,
    ties to the lower position in key_rows; with exclude_self, q's own row is no candidate.
    Returns (scores [Q, k], positions into key_rows [Q, k])."""
    key_rows = np.asarray(key_rows)
    bias = np.zeros(len(key_rows)) if key_bias is None else np.asarray(key_bias, np.float64)
    all_scores, all_positions = [], []
    for q in query_rows:
        scores = bank[key_rows] @ bank[q] / tau + bias
        candidates = [p for p in range(len(key_rows)) if not (exclude_self and key_rows[p] == q)]
        best = sorted(candidates, key=lambda p: (-scores[p], p))[:k]
        all_scores.append(scores[best])
        all_positions.append(best)
    return np.array(all_scores), np.array(all_positions)


def log_density(bank, labelled_rows, t, tau, include_self):
    """log rho(l) for each labelled row l (paper Eq. 7 with a constant Z, METHOD.md step 1).

    rho(l) = sum over the T nearest rows j of bank[l] (among all N rows; l itself only if include_self)
    of exp(bank[l].bank[j] / tau).
    """
    result = []
    for l in labelled_rows:
        scores = bank @ bank[l] / tau                      # [N]: bank[l].bank[j] / tau for every j
        candidates = np.arange(len(bank)) if include_self else np.delete(np.arange(len(bank)), l)
        nearest = np.sort(scores[candidates])[::-1][:t]    # the T largest
        result.append(log_sum_exp(nearest))
    return np.array(result)


def propagate(bank, is_labelled, labels, num_classes, k, t, tau, use_density, include_self):
    """Pseudo-labels and confidences of every row (METHOD.md "Label propagation", paper Eq. 5-8).

    LLP (use_density): s(l) = bank[l].v/tau - log rho(l), the K labelled with the highest s vote.
    Weighted kNN: s(l) = bank[l].v/tau, the K nearest labelled vote.
    Votes w_c = sum of exp(s(l)) over the voters labelled c; p_c = w_c / sum w; label argmax p;
    confidence max p. Labelled rows keep their label with confidence 1.

    Also returns, per unlabelled row, the two margins a low-precision run could get wrong: the gap
    between the K-th and (K+1)-th best score (who votes) and between the two largest p (who wins).
    Returns dict(labels, confidences, log_density, voter_gap, vote_margin).
    """
    labelled_rows = np.flatnonzero(is_labelled)
    labelled_labels = labels[labelled_rows]
    if use_density:
        log_rho = log_density(bank, labelled_rows, t, tau, include_self)
    else:
        log_rho = np.zeros(len(labelled_rows))
    out_labels = np.array(labels, np.int64)
    confidences = np.ones(len(bank))
    voter_gap = np.full(len(bank), np.inf)
    vote_margin = np.full(len(bank), np.inf)
    for u in np.flatnonzero(~is_labelled):
        v = bank[u]
        s = bank[labelled_rows] @ v / tau - log_rho                   # [M]
        order = np.argsort(-s, kind="stable")
        voters = order[:k]
        w = np.zeros(num_classes)
        for l in voters:
            w[labelled_labels[l]] += np.exp(s[l])                      # float64: exp(1/0.07) is fine
        p = w / w.sum()
        out_labels[u] = np.argmax(p)
        confidences[u] = np.max(p)
        if len(order) > k:
            voter_gap[u] = s[order[k - 1]] - s[order[k]]
        p_sorted = np.sort(p)[::-1]
        vote_margin[u] = p_sorted[0] - p_sorted[1] if num_classes > 1 else np.inf
    return dict(labels=out_labels, confidences=confidences, log_density=log_rho,
                voter_gap=voter_gap, vote_margin=vote_margin)


# ----------------------------------------------------------------------------- losses

def aggregation_loss(embeddings, bank, bank_labels, labels, tau):
    """L_A = -log P(A|v), A = {j : bank_labels[j] == y} (paper Eq. 2-3), over the whole bank.

    -log P(A|v) = -log(S_A / (S_A + S_rest)) = log(1 + S_rest / S_A), S_X = sum_{j in X} exp(bank[j].v/tau),
    i.e. log(1 + exp(lse_rest - lse_A)) with stable log-sum-exps. Unlike lse_all - lse_A (METHOD.md's
    way of writing it, the same number in exact arithmetic) this keeps full relative precision where
    P(A|v) is close to 1 and the loss is small.
    """
    losses = []
    for v, y in zip(embeddings, labels):
        logits = bank @ v / tau
        in_a = bank_labels == y
        losses.append(np.logaddexp(0.0, log_sum_exp(logits[~in_a]) - log_sum_exp(logits[in_a])))
    return np.array(losses)


def instance_loss(embeddings, bank, indices, tau):
    """-log P(i|v) with i the example's own bank row (paper Eq. 1, the IR warm-up loss):
    log(1 + sum_{j != i} exp(bank[j].v/tau) / exp(bank[i].v/tau)), as in aggregation_loss."""
    losses = []
    for v, i in zip(embeddings, indices):
        logits = bank @ v / tau
        losses.append(np.logaddexp(0.0, log_sum_exp(np.delete(logits, i)) - logits[i]))
    return np.array(losses)


def aggregation_loss_gradient(embeddings, bank, bank_labels, labels, tau):
    """d mean_b(L_A(v_b)) / d v_b = (1/B) sum_j (P(j|v) - P(j|v, A)) bank[j] / tau, where
    P(j|v, A) = P(j|v) / P(A|v) for j in A and 0 outside A. [B, D]."""
    grads = []
    for v, y in zip(embeddings, labels):
        p = np.exp(log_p_instance(v, bank, tau))                        # P(j|v)
        in_a = bank_labels == y
        p_given_a = np.where(in_a, p, 0.0) / p[in_a].sum()             # P(j|v, A)
        grads.append((p - p_given_a) @ bank / tau)
    return np.array(grads) / len(embeddings)


def softmax_cross_entropy(labels, logits):
    """L_C = -log softmax(logits)[y], per example."""
    return np.array([log_sum_exp(z) - z[y] for z, y in zip(np.asarray(logits, np.float64), labels)])


def consistency_loss(strong_logits, weak_logits, threshold):
    """The consistency departure (FixMatch's unlabelled loss): with p = softmax(weak logits), the
    target argmax p counts where max p >= threshold; the loss is -log softmax(strong logits)[target]
    there and 0 elsewhere. Returns (loss, mask) per example."""
    weak = np.asarray(weak_logits, np.float64)
    probabilities = np.exp(weak - weak.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    targets = probabilities.argmax(axis=1)
    mask = (probabilities.max(axis=1) >= threshold).astype(np.float64)
    return softmax_cross_entropy(targets, strong_logits) * mask, mask


# ----------------------------------------------------------------------------- memory bank

def blended_rows(old_rows, embeddings, momentum):
    """normalize(m * old + (1 - m) * v), row by row (METHOD.md "Memory bank")."""
    mixed = momentum * np.asarray(old_rows, np.float64) + (1.0 - momentum) * np.asarray(embeddings,
                                                                                       np.float64)
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
