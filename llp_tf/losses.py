"""LLP's losses (paper Eq. 1-4), per example, in log space.

exp(1 / 0.07) = 1.6e6 overflows float16 and loses precision in float32 sums, so every softmax over the
bank goes through logsumexp in float32. -log P(A|v) = logsumexp(all) - logsumexp(A) subtracts two
numbers near 1/tau and cancels when P(A|v) nears 1 (where training drives it), so it is computed as
softplus(logsumexp(outside A) - logsumexp(A)), the same value without the cancellation.
"""
import numpy as np
import tensorflow as tf


def bank_logits(embeddings: tf.Tensor, bank: tf.Tensor, tau: float) -> tf.Tensor:
    """[B, N] logits bank[j] . v / tau of the non-parametric softmax (Eq. 1)."""
    embeddings = tf.cast(embeddings, bank.dtype)
    return tf.matmul(embeddings, bank, transpose_b=True) / tau


def aggregation_loss(embeddings, bank, bank_labels, labels, tau: float) -> tf.Tensor:
    """-log P(A|v), A = every bank row whose current label equals the example's (Eq. 2-3). [B]."""
    logits = bank_logits(embeddings, bank, tau)
    in_set = tf.equal(bank_labels[None, :], tf.cast(labels, bank_labels.dtype)[:, None])
    return _minus_log_share(logits, in_set)


def instance_loss(embeddings, bank, indices, tau: float) -> tf.Tensor:
    """-log P(i|v) with i the example's own row: the aggregation loss when every example is its own
    class (the instance-recognition warm-up). [B]."""
    logits = bank_logits(embeddings, bank, tau)
    own = tf.one_hot(indices, tf.shape(logits)[1], on_value=True, off_value=False)
    return _minus_log_share(logits, own)


def _minus_log_share(logits, in_set):
    """-log(sum_{in_set} exp(logits) / sum_all exp(logits)) per row, as softplus(lse(out) - lse(in))."""
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


def llp_loss(aggregation, category, confidences, use_confidence=True, use_category=True):
    """c * (L_C + L_A) per example (Eq. 4, without the weight penalty which Keras adds)."""
    per_example = aggregation + category if use_category else aggregation
    if use_confidence:
        per_example = tf.cast(confidences, per_example.dtype) * per_example
    return per_example
