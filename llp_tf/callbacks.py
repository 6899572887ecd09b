"""Keras callbacks: thin glue that runs label propagation and writes summaries at epoch ends."""
import time

import keras
import numpy as np
import tensorflow as tf

from llp_tf import aggregation, evaluation, propagation


class PropagationCallback(keras.callbacks.Callback):
    """Refreshes log-density, pseudo-labels and confidences from the bank at the end of every epoch
    from `first_epoch` on (the last instance-recognition epoch's end is the switch to LLP), and before
    training if LLP starts with rows that were never propagated. With repeat=False it propagates only
    at the switch (the non-iterative two-stage baseline).

    true_labels (the true labels of every bank row, where known) only feed diagnostics: the
    pseudo-label accuracy on the unlabelled pool. They never reach the propagation.
    refresh_bank (a departure from the paper), when given, is called before each pass to rewrite the
    bank from the network's embeddings of the unaugmented images; fill_bank_at_switch the same, before
    the switch's pass only (after a supervised warm-up).
    """

    def __init__(self, num_classes, k=10, t=25, tau=0.07, use_density=True, include_self=False,
                 block_sizes=propagation.BlockSizes(), true_labels=None, first_epoch=0, repeat=True,
                 refresh_bank=None, fill_bank_at_switch=None):
        super().__init__()
        self.refresh_bank = refresh_bank
        self.fill_bank_at_switch = fill_bank_at_switch
        self.first_epoch = first_epoch
        self.repeat = repeat  # False: the two-stage baseline, which propagates once at the switch
        self.num_classes = num_classes
        self.options = dict(k=k, t=t, tau=tau, use_density=use_density, include_self=include_self,
                            block_sizes=block_sizes)
        self.true_labels = None if true_labels is None else np.asarray(true_labels, np.int64)
        self.history = []  # one dict of statistics per pass

    def propagate(self):
        """One pass over the bank; writes the results into the model's state variables."""
        state = self.model.state
        stats = {}
        if self.refresh_bank is not None:
            start = time.perf_counter()
            self.refresh_bank()
            stats["propagation/refresh_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        is_labelled = state.is_labelled.numpy()
        previous = state.labels.numpy()
        result = propagation.propagate(state.bank, is_labelled, previous, self.num_classes,
                                       strategy=self.model.distribute_strategy, **self.options)
        state.labels.assign(result.labels)
        state.confidences.assign(result.confidences)
        state.log_density.assign(result.log_density)
        stats |= {
            "propagation/seconds": time.perf_counter() - start,
            "propagation/changed_fraction": float(
                np.mean(result.labels[~is_labelled] != previous[~is_labelled])),
            "propagation/mean_confidence": float(np.mean(result.confidences[~is_labelled])),
        }
        if self.true_labels is not None:
            stats["propagation/pseudo_label_accuracy"] = pseudo_label_accuracy(
                result.labels, self.true_labels, is_labelled)
        self.history.append(stats)
        return stats

    def on_train_begin(self, logs=None):
        if self.model.phase == "llp" and self.model.state.needs_propagation():
            self.propagate()

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 < self.first_epoch or (not self.repeat and epoch + 1 > self.first_epoch):
            return
        if epoch + 1 == self.first_epoch and self.fill_bank_at_switch is not None:
            self.fill_bank_at_switch()
        stats = self.propagate()
        if logs is not None:
            logs.update(stats)


class RecordAtEpochEnd(keras.callbacks.Callback):
    """Assigns logs[key] at the end of epoch number `epoch` (counted from 1) to `variable`, e.g. the
    classifier's test top-1 at the end of the warm-up into a checkpointed variable; epoch None or 0:
    never."""

    def __init__(self, variable, key, epoch):
        super().__init__()
        self.variable, self.key, self.epoch = variable, key, epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.epoch and epoch + 1 == self.epoch and logs and self.key in logs:
            self.variable.assign(float(logs[self.key]))


def pseudo_label_accuracy(labels, true_labels, is_labelled):
    """Share of the unlabelled pool whose current label equals its true label."""
    unlabelled = ~np.asarray(is_labelled, bool)
    if not unlabelled.any():
        return float("nan")
    return float(np.mean(np.asarray(labels)[unlabelled] == np.asarray(true_labels)[unlabelled]))


class KnnCallback(keras.callbacks.Callback):
    """Adds `val_knn_top1` to the epoch's logs: weighted kNN of the eval set's embeddings against the
    bank's labelled rows (the paper's nearest-neighbour metric, Table 6)."""

    def __init__(self, dataset, k=200, tau=0.07):
        super().__init__()
        self.dataset, self.k, self.tau = dataset, k, tau

    def on_epoch_end(self, epoch, logs=None):
        embeddings, _, labels = evaluation.embed_and_classify(self.model, self.dataset)
        if logs is not None:
            logs["val_knn_top1"] = evaluation.knn_top1(
                self.model.state, embeddings, labels, self.model.num_classes, k=self.k, tau=self.tau)


class SummaryCallback(keras.callbacks.Callback):
    """The one writer of TensorBoard summaries: every epoch's logs as scalars, plus the aggregation
    metric of the bank (paper Fig. 2b-c) and the histogram of the unlabelled rows' confidences (once
    they have been propagated: from the switch's propagation on).

    The step is the optimizer's iteration count, so curves of runs with different phases and resumed
    runs line up. Keys "val_x" are written as "val/x", keys holding a "/" as they are, others as
    "train/x". true_labels (true labels of every bank row) feed only the aggregation diagnostic.
    """

    def __init__(self, logdir, num_classes, true_labels=None):
        super().__init__()
        self.writer = tf.summary.create_file_writer(logdir)
        self.num_classes = num_classes
        self.true_labels = true_labels

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        with self.writer.as_default(step=step):
            tf.summary.scalar("epoch", epoch + 1)
            tf.summary.scalar("learning_rate", current_learning_rate(self.model.optimizer))
            for key, value in (logs or {}).items():
                if np.ndim(value) == 0:
                    tf.summary.scalar(summary_name(key), float(value))
            self._write_state_summaries()
        self.writer.flush()

    def _write_state_summaries(self):
        state = self.model.state
        is_labelled = state.is_labelled.numpy()
        if self.true_labels is not None:
            summary = aggregation.aggregation_summary(
                tf.convert_to_tensor(state.bank), self.true_labels, is_labelled, self.num_classes)
            for name in ("aggregation/norm_mean", "aggregation/norm_mean_labelled"):
                tf.summary.scalar(name, summary[name])
            norms = summary["class_norms"]
            tf.summary.histogram("aggregation/class_norms", norms[np.isfinite(norms)])
        # From the switch's propagation on (it runs before this callback at the warm-up's last epoch end).
        if (~is_labelled).any() and not state.needs_propagation():
            tf.summary.histogram("propagation/confidence", state.confidences.numpy()[~is_labelled])


def current_learning_rate(optimizer):
    learning_rate = optimizer.learning_rate
    if callable(learning_rate):
        learning_rate = learning_rate(optimizer.iterations)
    return float(keras.ops.convert_to_numpy(learning_rate))


def summary_name(log_key):
    if log_key.startswith("val_"):
        return "val/" + log_key[4:]
    return log_key if "/" in log_key else "train/" + log_key
