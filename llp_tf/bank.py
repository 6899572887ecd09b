"""The memory bank (Wu et al. 2018): a running average of every example's embedding, one row each.

Pure TF functions; the model keeps the bank in a `tf.Variable` and calls these.
"""
import tensorflow as tf


def random_unit_rows(num_rows: int, dim: int, seed: int = 0) -> tf.Tensor:
    """Random rows of unit length: the bank before training has filled it."""
    rows = tf.random.stateless_normal([num_rows, dim], seed=[seed, 0])
    return tf.math.l2_normalize(rows, axis=1)


def blended_rows(old_rows: tf.Tensor, embeddings: tf.Tensor, momentum: float) -> tf.Tensor:
    """normalize(m * old + (1 - m) * v): the new bank rows of a batch (METHOD.md, memory bank)."""
    mixed = momentum * old_rows + (1.0 - momentum) * tf.cast(embeddings, old_rows.dtype)
    return tf.math.l2_normalize(mixed, axis=1)


def read_whole(bank: tf.Variable, without_copy: bool = True) -> tf.Tensor:
    """The whole bank as a tensor.

    Once a variable has seen a scatter update or a row gather, TensorFlow copies it whole on every
    dense read (copy-on-read mode), a cost per step that grows with the bank (BUILD.md).
    DisableCopyOnRead ends that mode, so the read shares the variable's buffer; the next scatter
    update then copies first only if that tensor is still in use (copy-on-write), so the value read
    never changes. XLA cannot compile the op (and its reads do not copy): without_copy=False there.
    """
    if without_copy:
        tf.raw_ops.DisableCopyOnRead(resource=bank.handle)
    return tf.convert_to_tensor(bank)


def update_bank(bank: tf.Variable, indices: tf.Tensor, embeddings: tf.Tensor, momentum: float):
    """Blends a batch's embeddings into their rows of the bank, in place.

    Under a distribution strategy the caller passes the whole global batch (all-gathered), so every
    replica's copy receives the same update and the copies stay identical.
    """
    old_rows = tf.gather(bank, indices)
    new_rows = blended_rows(old_rows, embeddings, momentum)
    # scatter_update (not scatter_nd_update) is what MirroredVariables implement.
    return bank.scatter_update(tf.IndexedSlices(new_rows, indices))
