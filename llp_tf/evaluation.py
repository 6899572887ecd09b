"""Evaluation of a model: weighted-kNN top-1 of held-out embeddings from the memory bank (Wu et al.
2018), and evaluate_model's classifier top-1 / top-5, kNN top-1, per-class accuracy and confusion
matrix from one pass of the network. Model-level only: evaluating a finished run's workdir (what
llp-eval writes) is llp_tf/finished.py."""
import weakref

import numpy as np
import tensorflow as tf

from llp_tf import propagation


def knn_predict(bank_rows, bank_labels, queries, num_classes, k, tau,
                block_sizes=propagation.BlockSizes()):
    """Weighted-kNN labels of queries against labelled bank rows (the plain vote of Eq. 5-6)."""
    k = min(k, len(bank_rows))
    stacked = tf.concat([tf.convert_to_tensor(bank_rows, tf.float32),
                         tf.convert_to_tensor(queries, tf.float32)], axis=0)
    key_rows = tf.range(len(bank_rows))
    query_rows = tf.range(len(bank_rows), len(bank_rows) + len(queries))
    predicted, _ = propagation.classify_by_neighbours(
        stacked, query_rows, key_rows, bank_labels, num_classes, k, tau, block_sizes=block_sizes)
    return predicted.numpy()


def knn_top1(state, eval_embeddings, eval_labels, num_classes, k=200, tau=0.07):
    """Top-1 of weighted kNN from the bank's labelled rows, with only their labels."""
    is_labelled = state.is_labelled.numpy()
    bank = tf.convert_to_tensor(state.bank).numpy()[is_labelled]
    labels = state.labels.numpy()[is_labelled]
    predicted = knn_predict(bank, labels, eval_embeddings, num_classes, k, tau)
    return float(np.mean(predicted == eval_labels))


# ----------------------------------------------------------------------------------------------
# One pass of the network

TOP_K = 5


def embed_and_classify(model, dataset, top_k=TOP_K):
    """One pass of the network over a dataset of (images, labels, indices):
    (embeddings [n, D] float32, top classes [n, min(top_k, Q)] int64 best first, labels [n] int64).

    A single tf.function gives both heads, and only the top classes leave it, so the memory is
    n * (D + top_k) numbers whatever the number of classes. Ties go to the lower class id (as argmax).
    """
    top_k = min(top_k, int(model.num_classes))
    step = _evaluation_step(model, top_k)
    embeddings, classes, labels = [], [], []
    for images, batch_labels, _ in dataset:
        batch_embeddings, batch_classes = step(images)
        embeddings.append(batch_embeddings.numpy())
        classes.append(batch_classes.numpy())
        labels.append(batch_labels.numpy())
    if not labels:
        raise ValueError("the evaluation split holds no examples")
    return np.concatenate(embeddings), np.concatenate(classes), np.concatenate(labels).astype(np.int64)


# One traced step per (model, top_k), kept while the model lives: a new tf.function at every epoch's
# evaluation would be traced anew each time (and TensorFlow warns of retracing).
_STEPS = weakref.WeakKeyDictionary()


def _evaluation_step(model, top_k):
    steps = _STEPS.setdefault(model, {})
    if top_k not in steps:
        model_ref = weakref.ref(model)  # the cache's value must not keep its key alive

        @tf.function(reduce_retracing=True)
        def step(images):
            outputs = model_ref()(images, training=False)
            _, classes = tf.math.top_k(tf.cast(outputs["logits"], tf.float32), k=top_k)
            return tf.cast(outputs["embeddings"], tf.float32), tf.cast(classes, tf.int64)
        steps[top_k] = step
    return steps[top_k]


def confusion_matrix(labels, predicted, num_classes):
    """int64 [Q, Q]: row = true class, column = predicted class."""
    labels = np.asarray(labels, np.int64)
    predicted = np.asarray(predicted, np.int64)
    return np.bincount(labels * num_classes + predicted,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate_model(model, dataset, class_names, knn_k=200, tau=0.07) -> dict:
    """Classifier top-1 / top-5, weighted-kNN top-1 from the bank's labelled rows, per-class accuracy
    and the confusion matrix of `model` (an LLPModel with its state) on `dataset`, from one pass."""
    num_classes = int(model.num_classes)
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    embeddings, top_classes, labels = embed_and_classify(model, dataset)
    predicted = top_classes[:, 0]
    matrix = confusion_matrix(labels, predicted, num_classes)
    counts = matrix.sum(axis=1)
    per_class = [{"class": c, "name": str(class_names[c]), "num_examples": int(counts[c]),
                  "accuracy": float(matrix[c, c] / counts[c]) if counts[c] else None}
                 for c in range(num_classes)]
    num_labelled = int(np.sum(model.state.is_labelled.numpy()))
    return {
        "num_examples": int(len(labels)),
        "num_classes": num_classes,
        "top1": float(np.mean(predicted == labels)),
        "top5": float(np.mean(np.any(top_classes == labels[:, None], axis=1)))
        if num_classes > TOP_K else None,
        "knn_top1": knn_top1(model.state, embeddings, labels, num_classes, k=knn_k, tau=tau),
        "knn_k": min(int(knn_k), num_labelled),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
    }

