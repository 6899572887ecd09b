"""LLP's losses (paper Eq. 1-4), per example.

exp(1 / 0.07) = 1.6e6 overflows float16, so every softmax over the bank is computed in float32 (the
heads and the bank are float32 under mixed precision). -log P(A|v) is log(1 + outside / inside) with the
sum inside A and the sum outside A taken separately: logsumexp(all) - logsumexp(A) would subtract two
numbers near 1/tau and cancel when P(A|v) nears 1, where training drives it.
"""
import numpy as np
import tensorflow as tf


def bank_logits(embeddings: tf.Tensor, bank: tf.Tensor, tau: float) -> tf.Tensor:
    """[B, N] logits bank[j] . v / tau of the non-parametric softmax (Eq. 1)."""
    embeddings = tf.cast(embeddings, bank.dtype)
    return tf.matmul(embeddings, bank, transpose_b=True) / tau


def aggregation_loss(embeddings, bank, bank_labels, labels, tau: float) -> tf.Tensor:
    """-log P(A|v), A = every bank row whose current label equals the example's (Eq. 2-3). [B]."""
    return minus_log_share(embeddings, bank, bank_labels, tf.cast(labels, bank_labels.dtype), tau)


def instance_loss(embeddings, bank, indices, tau: float) -> tf.Tensor:
    """-log P(i|v) with i the example's own row: the aggregation loss when every example is its own
    class (the instance-recognition warm-up). [B]."""
    indices = tf.cast(indices, tf.int64)
    return minus_log_share(embeddings, bank, tf.range(tf.shape(bank, out_type=tf.int64)[0]), indices, tau)


# Above this tau, exp(-2 / tau) is a normal float32 (> exp(-87)): the unit-vector path is exact.
UNIT_PATH_MIN_TAU = 2.0 / 80.0


def minus_log_share(embeddings, bank, bank_groups, groups, tau: float) -> tf.Tensor:
    """-log(sum_{j in A} exp(logits_j) / sum_j exp(logits_j)) per row b,
    A = {j: bank_groups[j] = groups[b]}, logits = bank_logits. [B].

    A row's group is what decides set membership: its own bank index in instance recognition
    (instance_loss), its current label in LLP (aggregation_loss).

    Embeddings and bank rows are unit vectors, so logits - 1/tau lies in [-2/tau, 0]: for
    tau >= UNIT_PATH_MIN_TAU its exp neither overflows nor underflows in float32 and needs no
    max-shift. Both sums are taken directly (no difference of near-equal numbers), with a hand-written
    gradient, because the [B, N] elementwise passes, not the matrix multiplies, dominated the step
    (BUILD.md). Smaller tau takes the log-space path. The bank gets no gradient.
    """
    bank = tf.stop_gradient(bank)
    if tau < UNIT_PATH_MIN_TAU:
        in_set = tf.equal(bank_groups[None, :], groups[:, None])
        return _minus_log_share_log_space(bank_logits(embeddings, bank, tau), in_set)
    return _minus_log_share_unit(tf.cast(embeddings, bank.dtype), bank, bank_groups, groups, tau)


def _minus_log_share_unit(embeddings, bank, bank_groups, groups, tau):
    @tf.custom_gradient
    def loss_of(embeddings):
        logits = tf.matmul(embeddings / tau, bank, transpose_b=True)
        weights, inside, outside = _weights_and_sums(logits, bank_groups, groups, tau)
        total = inside + outside

        def gradient(upstream):
            # d loss / d logit_j = w_j / total - [j in A] w_j / inside, with 1/total - 1/inside
            # written as -outside / (total * inside) so that it does not cancel either.
            per_outside = upstream / total
            per_inside = -upstream * outside / (total * inside)
            logit_gradient = _weighted_by_membership(weights, bank_groups, groups, per_inside,
                                                     per_outside)
            return tf.matmul(logit_gradient, bank) / tau

        return tf.math.log1p(outside / inside), gradient

    return loss_of(embeddings)


# XLA fuses each function's elementwise work on the [B, N] block into one pass that never
# materialises the [B, N] membership mask; unfused, these passes cost more than the two matrix
# multiplies. The multiplies stay outside XLA: TensorFlow's own (oneDNN on CPU) were faster
# (scripts/bench_step.py, BUILD.md).
@tf.function(jit_compile=True)
def _weights_and_sums(logits, bank_groups, groups, tau):
    """(w = exp(logits - 1/tau) [B, N], sum of w over A [B], sum of w outside A [B])."""
    weights = tf.exp(logits - 1.0 / tau)
    in_set = tf.equal(bank_groups[None, :], groups[:, None])
    zeros = tf.zeros_like(weights)
    inside = tf.reduce_sum(tf.where(in_set, weights, zeros), axis=1)
    outside = tf.reduce_sum(tf.where(in_set, zeros, weights), axis=1)
    return weights, inside, outside


@tf.function(jit_compile=True)
def _weighted_by_membership(weights, bank_groups, groups, per_inside, per_outside):
    """w_bj * (per_inside_b if j in A_b else per_outside_b). [B, N]."""
    in_set = tf.equal(bank_groups[None, :], groups[:, None])
    return weights * tf.where(in_set, per_inside[:, None], per_outside[:, None])


def _minus_log_share_log_space(logits, in_set):
    """softplus(lse(outside) - lse(inside)) per row: exact at any temperature, but several [B, N]
    passes more than the unit-vector path."""
    minus_inf = tf.constant(-np.inf, logits.dtype)
    inside = tf.reduce_logsumexp(tf.where(in_set, logits, minus_inf), axis=1)
    has_outside = tf.reduce_any(~in_set, axis=1)
    # Rows whose set is the whole bank lose nothing; keep their logsumexp finite so no NaN gradient
    # leaks through the unselected branch of the where below.
    outside_logits = tf.where(in_set | ~has_outside[:, None], minus_inf, logits)
    outside_logits = tf.where(has_outside[:, None], outside_logits, tf.zeros_like(logits))
    outside = tf.reduce_logsumexp(outside_logits, axis=1)
    return tf.where(has_outside, tf.nn.softplus(outside - inside), tf.zeros_like(inside))


def category_loss(labels, logits) -> tf.Tensor:
    """L_C: softmax cross-entropy of the classifier against the (pseudo-)label. [B]."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


def consistency_loss(strong_logits, weak_logits, threshold: float):
    """A departure from the paper (FixMatch's unlabelled loss, Sohn et al. 2020): the classifier's
    prediction on a weakly augmented view is the target of its logits on a strongly augmented view of
    the same image, where that prediction's probability reaches `threshold`; elsewhere 0. No gradient
    reaches the weak view. Returns (per-example loss [B], mask [B] of 1 where the target counts)."""
    probabilities = tf.nn.softmax(tf.stop_gradient(tf.cast(weak_logits, tf.float32)), axis=1)
    targets = tf.argmax(probabilities, axis=1)
    mask = tf.cast(tf.reduce_max(probabilities, axis=1) >= threshold, tf.float32)
    return category_loss(targets, strong_logits) * mask, mask


def llp_loss(aggregation, category, confidences, use_confidence=True, use_category=True):
    """c * (L_C + L_A) per example (Eq. 4, without the weight penalty which Keras adds)."""
    per_example = aggregation + category if use_category else aggregation
    if use_confidence:
        per_example = tf.cast(confidences, per_example.dtype) * per_example
    return per_example
