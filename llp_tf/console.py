"""What llp-train tells its user on standard output while a run goes: a line when each phase starts
(what trains in it and what to expect of the numbers) and a line after each propagation (how long it
took, how many pseudo-labels changed, their mean confidence and, where the true labels are known,
their accuracy). Keras's own progress bar or per-epoch line (config.verbose) comes between them.

Everything goes through `say` (print, flushed) so that these lines and Keras's share standard output in
order. No flags here.
"""
import sys

import keras
import numpy as np

PHASE_NAMES = {"instance": "instance recognition", "supervised": "supervised warm-up", "llp": "LLP"}


def say(line: str):
    print(line, flush=True)


def phase_line(phase: str, first: int, last: int, config, num_classes: int, num_labelled: int) -> str:
    """The line printed as a phase starts: epochs first+1..last of config.epochs (counted from 1)."""
    epochs = (f"epoch {first + 1}" if last == first + 1 else f"epochs {first + 1}-{last}")
    where = f"{epochs} of {config.epochs}"
    if config.method == "supervised":
        return (f"Supervised baseline, {where}: the network trains on the {num_labelled:,} labelled images "
                f"alone; no propagation.")
    if phase == "instance":
        classifier = ("the classifier learns from the batch's labelled images only (--warmup_category_loss)"
                      if config.warmup_category_loss else
                      f"the classifier is not trained in this phase, so val_top1 stays at chance "
                      f"(about {100 / num_classes:.0f}%)")
        return (f"Instance recognition (warm-up), {where}: the embedding learns to tell every image from "
                f"every other; {classifier}. The first propagation comes at the end of epoch {last}.")
    if phase == "supervised":
        images = (f"the {num_labelled:,} labelled images and, through the consistency loss "
                  f"(--consistency_warmup), the unlabelled ones" if config.consistency_warmup else
                  f"the {num_labelled:,} labelled images alone")
        return (f"Supervised warm-up, {where}: the network trains on {images}; at the end of epoch "
                f"{last} the bank is refilled from it and the first propagation labels the rest.")
    if config.method == "two_stage":
        return (f"Two-stage baseline, {where}: embedding and classifier train on the pseudo-labels of the "
                f"one propagation at the switch, which stay fixed.")
    return (f"LLP, {where}: embedding and classifier train on labels and pseudo-labels; after every epoch a "
            f"propagation gives each unlabelled image a new pseudo-label and confidence.")


def propagation_line(epoch: int, stats: dict, num_unlabelled: int) -> str:
    """The line printed after a propagation; epoch: completed epochs (0: before training resumed)."""
    when = f"after epoch {epoch}" if epoch else "before training"
    changed = stats["propagation/changed_fraction"]
    seconds = stats["propagation/seconds"]
    parts = [f"Propagation {when}: {seconds:.{1 if seconds >= 1 else 2}f} s",
             f"{int(round(changed * num_unlabelled)):,} of {num_unlabelled:,} pseudo-labels changed "
             f"({100 * changed:.1f}%)",
             f"mean confidence {stats['propagation/mean_confidence']:.3f}"]
    accuracy = stats.get("propagation/pseudo_label_accuracy")
    if accuracy is not None and np.isfinite(accuracy):
        parts.append(f"pseudo-label accuracy {100 * accuracy:.2f}% (true labels, diagnostic only)")
    if "propagation/refresh_seconds" in stats:
        parts.append(f"bank refreshed in {stats['propagation/refresh_seconds']:.1f} s")
    return ", ".join(parts)


class NarrationCallback(keras.callbacks.Callback):
    """Prints a propagation_line for each pass the propagation callback made since the last print: at
    an epoch end (after Keras's own epoch line: give this callback after a keras.callbacks.ProgbarLogger)
    and at the start of training (a resumed run may propagate before its first step)."""

    def __init__(self, propagator):
        super().__init__()
        self.propagator = propagator
        self.printed = len(propagator.history) if propagator is not None else 0
        self.epoch = 0

    def _print_new(self):
        if self.propagator is None:
            return
        unlabelled = int(np.sum(~self.model.state.is_labelled.numpy()))
        for stats in self.propagator.history[self.printed:]:
            say(propagation_line(self.epoch, stats, unlabelled))
        self.printed = len(self.propagator.history)

    def on_train_begin(self, logs=None):
        self.epoch = int(self.model.state.completed_epochs.numpy())
        self._print_new()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch = epoch + 1
        self._print_new()


def keras_verbose(config) -> int:
    """Keras fit's verbose for this process: --verbose=auto is a progress bar on a terminal, a line
    per epoch otherwise."""
    return config.keras_verbose(sys.stdout.isatty())
