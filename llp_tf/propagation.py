"""Local label propagation (paper Eq. 5-8) and weighted kNN, chunked so no N x M matrix ever exists.

Every pass scores a block of query rows against a block of key rows ([query_chunk, key_chunk] floats at
most), keeps a running top-k per query, and merges blocks with `tf.math.top_k`. Cost O(N M D); memory is
the bank plus one block. The functions are dtype-generic (float32 in training, float64 in tests).
"""
import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Chunks:
    """Block sizes of a chunked pass: the score block is query_rows x key_rows floats."""
    query_rows: int = 1024
    key_rows: int = 16384


@dataclasses.dataclass
class Propagation:
    """Result of one propagation pass over the bank."""
    labels: np.ndarray          # int64 [N]: true label where labelled, pseudo-label elsewhere
    confidences: np.ndarray     # float32 [N]: 1 where labelled, p_{y_u} elsewhere (Eq. 6)
    log_density: np.ndarray     # float32 [M]: log rho of each labelled row (Eq. 7), 0 without density


@tf.function(reduce_retracing=True)
def _block_top_k(queries, keys, key_bias, query_ids, k, key_rows, exclude_self):
    """Top-k of queries . keys + key_bias over all keys, in key blocks; ties go to the lower key id.

    queries are pre-scaled by 1/tau. With exclude_self, key j is skipped for the query whose id is j.
    Returns (scores [q, k], key ids [q, k] int32).
    """
    num_keys = tf.shape(keys)[0]
    num_queries = tf.shape(queries)[0]
    best_scores = tf.fill([num_queries, k], tf.constant(-np.inf, queries.dtype))
    best_ids = tf.fill([num_queries, k], -1)
    for start in tf.range(0, num_keys, key_rows):
        block = keys[start:start + key_rows]
        block_ids = tf.range(start, start + tf.shape(block)[0])
        scores = tf.matmul(queries, block, transpose_b=True) + key_bias[start:start + key_rows][None, :]
        if exclude_self:
            is_self = tf.equal(query_ids[:, None], block_ids[None, :])
            scores = tf.where(is_self, tf.constant(-np.inf, scores.dtype), scores)
        block_scores, block_pos = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(block)[0]))
        # Earlier blocks first, so the merge keeps top_k's lower-index-first order on ties.
        merged_scores = tf.concat([best_scores, block_scores], axis=1)
        merged_ids = tf.concat([best_ids, tf.gather(block_ids, block_pos)], axis=1)
        best_scores, keep = tf.math.top_k(merged_scores, k=k)
        best_ids = tf.gather(merged_ids, keep, batch_dims=1)
    return best_scores, best_ids


def top_k_neighbours(bank, query_rows, key_rows, k, tau, key_bias=None, exclude_self=False,
                     chunks=Chunks()):
    """For each bank row in query_rows, the k key rows with the highest bank[q].bank[key]/tau + key_bias.

    query_rows, key_rows: int indices into bank. exclude_self skips key == query (by bank row).
    Returns (scores [Q, k], positions into key_rows [Q, k]) as tensors.
    """
    k, query_chunk, key_chunk = int(k), int(chunks.query_rows), int(chunks.key_rows)
    bank = tf.convert_to_tensor(bank)
    query_rows = tf.convert_to_tensor(query_rows, tf.int32)
    key_rows = tf.convert_to_tensor(key_rows, tf.int32)
    # Density searches all rows: use the bank itself rather than a copy of it.
    all_rows = key_rows.shape[0] == bank.shape[0] and bool(tf.reduce_all(key_rows == tf.range(bank.shape[0])))
    keys = bank if all_rows else tf.gather(bank, key_rows)
    if key_bias is None:
        key_bias = tf.zeros([tf.shape(keys)[0]], bank.dtype)
    key_bias = tf.cast(key_bias, bank.dtype)
    inv_tau = tf.constant(1.0 / tau, bank.dtype)
    # Self-exclusion compares positions in key_rows, so map each query's bank row to its key position.
    query_key_pos = _positions_in(query_rows, key_rows, tf.shape(bank)[0]) if exclude_self else query_rows
    all_scores, all_ids = [], []
    num_queries = int(query_rows.shape[0])
    for start in range(0, num_queries, query_chunk):
        rows = query_rows[start:start + query_chunk]
        queries = tf.gather(bank, rows) * inv_tau
        scores, ids = _block_top_k(queries, keys, key_bias, query_key_pos[start:start + query_chunk],
                                   tf.constant(k), tf.constant(key_chunk), exclude_self)
        all_scores.append(scores)
        all_ids.append(ids)
    if not all_scores:
        return tf.zeros([0, k], bank.dtype), tf.zeros([0, k], tf.int32)
    return tf.concat(all_scores, 0), tf.concat(all_ids, 0)


def _positions_in(query_rows, key_rows, num_rows):
    """Position of each query row within key_rows, or -1 where the query is not a key."""
    lookup = tf.tensor_scatter_nd_update(tf.fill([num_rows], -1), key_rows[:, None],
                                         tf.range(tf.shape(key_rows)[0]))
    return tf.gather(lookup, query_rows)


def log_density(bank, labelled_rows, t, tau, include_self=False, chunks=Chunks()):
    """log rho(l) = log sum over the T nearest bank rows j of exp(bank[l].bank[j] / tau) (Eq. 7).

    Neighbours are searched among all N rows; include_self counts l among its own neighbours (the
    authors' released code) instead of skipping it (the paper's text, our default). [M] tensor.
    """
    num_rows = tf.shape(bank)[0]
    scores, _ = top_k_neighbours(bank, labelled_rows, tf.range(num_rows), t, tau,
                                 exclude_self=not include_self, chunks=chunks)
    return tf.reduce_logsumexp(scores, axis=1)


def vote(scores, neighbour_labels, num_classes):
    """Class probabilities from weighted votes (Eq. 5-6, 8): w_c = sum of exp(score) over the
    neighbours labelled c, p_c = w_c / sum w. Returns (labels int64 [Q], confidences [Q]).

    scores: [Q, K] sorted descending (as top_k gives them); the common factor exp(max) cancels in p.
    """
    weights = tf.exp(scores - scores[:, :1])
    num_queries = tf.shape(scores)[0]
    segment = tf.range(num_queries)[:, None] * num_classes + tf.cast(neighbour_labels, tf.int32)
    votes = tf.math.unsorted_segment_sum(tf.reshape(weights, [-1]), tf.reshape(segment, [-1]),
                                         num_queries * num_classes)
    votes = tf.reshape(votes, [num_queries, num_classes])
    probabilities = votes / tf.reduce_sum(votes, axis=1, keepdims=True)
    return tf.argmax(probabilities, axis=1), tf.reduce_max(probabilities, axis=1)


def classify_by_neighbours(bank, query_rows, labelled_rows, labelled_labels, num_classes, k, tau,
                           labelled_log_density=None, chunks=Chunks()):
    """Labels and confidences of query rows from their K best labelled rows.

    With labelled_log_density, the score of labelled l is bank[l].v/tau - log rho(l) and the K best
    by that score vote (LLP, Eq. 8); without it, the K nearest vote with exp(sim/tau) (weighted kNN).
    """
    key_bias = None if labelled_log_density is None else -tf.convert_to_tensor(labelled_log_density)
    scores, positions = top_k_neighbours(bank, query_rows, labelled_rows, k, tau, key_bias=key_bias,
                                         chunks=chunks)
    neighbour_labels = tf.gather(tf.convert_to_tensor(labelled_labels), positions)
    return vote(scores, neighbour_labels, num_classes)


def propagate(bank, is_labelled, labels, num_classes, k=10, t=25, tau=0.07, use_density=True,
              include_self=False, chunks=Chunks()) -> Propagation:
    """One LLP pass over the bank: density of the labelled rows, then labels of all unlabelled rows.

    is_labelled: bool [N]; labels: int [N], read only where labelled. use_density=False gives the
    plain weighted-kNN propagation (the "Top-K" ablation without "lw").
    """
    is_labelled = np.asarray(is_labelled, bool)
    labels = np.asarray(labels, np.int64)
    labelled_rows = np.flatnonzero(is_labelled).astype(np.int32)
    unlabelled_rows = np.flatnonzero(~is_labelled).astype(np.int32)
    check_propagation_sizes(len(is_labelled), len(labelled_rows), k, t, tau)
    if use_density:
        density = log_density(bank, labelled_rows, t, tau, include_self=include_self, chunks=chunks)
    else:
        density = None
    pseudo, confidence = classify_by_neighbours(
        bank, unlabelled_rows, labelled_rows, labels[labelled_rows], num_classes, k, tau,
        labelled_log_density=density, chunks=chunks)
    all_labels = labels.copy()
    all_labels[unlabelled_rows] = pseudo.numpy()
    confidences = np.ones(len(labels), np.float32)
    confidences[unlabelled_rows] = confidence.numpy()
    log_rho = np.zeros(len(labelled_rows), np.float32) if density is None else density.numpy()
    return Propagation(all_labels, confidences, log_rho.astype(np.float32))


def check_propagation_sizes(num_rows, num_labelled, k, t, tau):
    """Clear errors for settings the propagation cannot honour, before any work is done."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if num_labelled == 0:
        raise ValueError("propagation needs at least one labelled example; none is labelled")
    if not 1 <= k <= num_labelled:
        raise ValueError(f"K={k} neighbours need 1 <= K <= the {num_labelled} labelled examples")
    if not 1 <= t < num_rows:
        raise ValueError(f"T={t} density neighbours need 1 <= T < N={num_rows}")
