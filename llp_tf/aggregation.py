"""The paper's aggregation metric (Sec. 5, Fig. 2b-c): for each class, the L2 norm of the mean of its
examples' bank rows. Unit rows that cluster tightly give a norm near 1; scattered rows near 0."""
import numpy as np
import tensorflow as tf


def class_mean_norms(bank, labels, num_classes):
    """[Q] norm of each class's mean bank row; NaN for a class with no row. labels < 0 are skipped."""
    bank = tf.convert_to_tensor(bank)
    labels = tf.convert_to_tensor(labels, tf.int32)
    keep = labels >= 0
    rows, labels = tf.boolean_mask(bank, keep), tf.boolean_mask(labels, keep)
    sums = tf.math.unsorted_segment_sum(rows, labels, num_classes)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, bank.dtype), labels, num_classes)
    means = sums / tf.maximum(counts, 1)[:, None]
    norms = tf.norm(means, axis=1)
    return np.where(counts.numpy() > 0, norms.numpy(), np.nan)


def aggregation_summary(bank, true_labels, is_labelled, num_classes):
    """{"aggregation/norm_mean": over classes, with every training example's true label,
        "aggregation/norm_mean_labelled": with the labelled rows only (no true label of an
            unlabelled row),
        "class_norms": the per-class norms of the first} for TensorBoard."""
    true_labels = np.asarray(true_labels)
    labelled_only = np.where(np.asarray(is_labelled, bool), true_labels, -1)
    all_norms = class_mean_norms(bank, true_labels, num_classes)
    labelled_norms = class_mean_norms(bank, labelled_only, num_classes)
    return {"aggregation/norm_mean": float(np.nanmean(all_norms)),
            "aggregation/norm_mean_labelled": float(np.nanmean(labelled_norms)),
            "class_norms": all_norms}
