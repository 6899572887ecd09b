"""Evaluation from the memory bank: weighted-kNN top-1 of held-out embeddings (Wu et al. 2018)."""
import numpy as np
import tensorflow as tf

from llp_tf import propagation


def embed(model, dataset):
    """(embeddings [n, D] float32, labels [n] int64) of a dataset of (images, labels, indices)."""
    step = tf.function(lambda images: model(images, training=False)["embeddings"])
    embeddings, labels = [], []
    for images, batch_labels, _ in dataset:
        embeddings.append(step(images).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(embeddings), np.concatenate(labels).astype(np.int64)


def knn_predict(bank_rows, bank_labels, queries, num_classes, k, tau, chunks=propagation.Chunks()):
    """Weighted-kNN labels of queries against labelled bank rows (the plain vote of Eq. 5-6)."""
    k = min(k, len(bank_rows))
    stacked = tf.concat([tf.convert_to_tensor(bank_rows, tf.float32),
                         tf.convert_to_tensor(queries, tf.float32)], axis=0)
    key_rows = tf.range(len(bank_rows))
    query_rows = tf.range(len(bank_rows), len(bank_rows) + len(queries))
    predicted, _ = propagation.classify_by_neighbours(
        stacked, query_rows, key_rows, bank_labels, num_classes, k, tau, chunks=chunks)
    return predicted.numpy()


def knn_top1(state, eval_embeddings, eval_labels, num_classes, k=200, tau=0.07):
    """Top-1 of weighted kNN from the bank's labelled rows, with only their labels."""
    is_labelled = state.is_labelled.numpy()
    bank = tf.convert_to_tensor(state.bank).numpy()[is_labelled]
    labels = state.labels.numpy()[is_labelled]
    predicted = knn_predict(bank, labels, eval_embeddings, num_classes, k, tau)
    return float(np.mean(predicted == eval_labels))
