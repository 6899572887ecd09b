"""LLP's losses (paper Eq. 1-4), per example, in log space.

exp(1 / 0.07) = 1.6e6 overflows float16 and loses precision in float32 sums, so every softmax over the
bank goes through logsumexp in float32.
"""
import tensorflow as tf


def bank_logits(embeddings: tf.Tensor, bank: tf.Tensor, tau: float) -> tf.Tensor:
    """[B, N] logits bank[j] . v / tau of the non-parametric softmax (Eq. 1)."""
    embeddings = tf.cast(embeddings, bank.dtype)
    return tf.matmul(embeddings, bank, transpose_b=True) / tau


def aggregation_loss(embeddings, bank, bank_labels, labels, tau: float) -> tf.Tensor:
    """-log P(A|v), A = every bank row whose current label equals the example's (Eq. 2-3). [B]."""
    logits = bank_logits(embeddings, bank, tau)
    same_label = tf.equal(bank_labels[None, :], tf.cast(labels, bank_labels.dtype)[:, None])
    in_set = tf.where(same_label, logits, tf.constant(-float("inf"), logits.dtype))
    return tf.reduce_logsumexp(logits, axis=1) - tf.reduce_logsumexp(in_set, axis=1)


def instance_loss(embeddings, bank, indices, tau: float) -> tf.Tensor:
    """-log P(i|v) with i the example's own row: the aggregation loss when every example is its own
    class (the instance-recognition warm-up). [B]."""
    logits = bank_logits(embeddings, bank, tau)
    own = tf.gather(logits, indices, axis=1, batch_dims=1)
    return tf.reduce_logsumexp(logits, axis=1) - own


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
