"""Resuming and faults of a training job: its checkpoint saved and restored, signals, guards.

A checkpoint is written after every epoch, only when everything in it is finite. SIGTERM or SIGINT
stops training at the end of the current step with a checkpoint of that step
(checkpoints/interrupted/); the rerun continues with the next step. Restore takes the newest
checkpoint that reads back whole, skipping damaged ones with a warning. A failed write (a full disk)
or a non-finite loss stops training with a message naming the checkpoint that remains.

The functions here take the job's llp_tf.experiment.Experiment (its model, checkpoint, manager and
progress); the files on disk are llp_tf/checkpoints.py. No flags here.
"""
import contextlib
import math
import os
import signal
import threading

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from llp_tf import distribute
from llp_tf.checkpoints import (UNREADABLE, check_checkpoint_shapes, checkpoint_paths, describe_position,
                                error_text, newest_whole_checkpoint, remove_checkpoint_directory,
                                remove_leftovers, remove_unrecorded_checkpoint, saved_checkpoints)
from llp_tf.workdir import Workdir


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped training after a checkpoint; exit with exit_status (128 + signal)."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.exit_status = 128 + signal_number


class TrainingFailed(RuntimeError):
    """Training cannot go on (a non-finite loss, a failed checkpoint write); the message says which
    checkpoint remains."""


class Progress(tf.Module):
    """Checkpointed beside the model and LLPState: the steps done in a stopped epoch (0 at epoch
    ends), every propagation's pseudo-label accuracy so far (a resumed run reports them all) and the
    classifier's test top-1 at the end of the warm-up (NaN until then)."""

    def __init__(self):
        super().__init__(name="progress")
        self.steps_in_epoch = tf.Variable(np.int64(0), trainable=False, name="steps_in_epoch")
        self.pseudo_label_accuracy_history = tf.Variable(
            np.zeros([0], np.float64), shape=tf.TensorShape([None]), trainable=False,
            name="pseudo_label_accuracy_history")
        self.warmup_val_top1 = tf.Variable(np.float64("nan"), trainable=False, name="warmup_val_top1")


# ----------------------------------------------------------------------------------------------
# Signals and guards


class StopRequest:
    """signal_number: the SIGTERM or SIGINT received while training, else None."""
    signal_number = None


@contextlib.contextmanager
def stop_on_signals(enabled=True):
    """Within: SIGTERM and SIGINT only set the yielded request (GuardCallback acts on it), and give
    back the previous handlers so that a second signal acts at once. Signals can only be caught in
    the main thread; elsewhere, or when not enabled, they keep their handlers."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

    def handle(signal_number, frame):
        del frame
        request.signal_number = signal_number
        for number, handler in previous.items():
            signal.signal(number, handler)

    for number in previous:
        signal.signal(number, handle)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class CheckpointCallback(keras.callbacks.Callback):
    """Saves weights, optimizer, state and progress after every epoch (after its propagation)."""

    def __init__(self, experiment, propagator=None):
        super().__init__()
        self.experiment, self.propagator = experiment, propagator

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.experiment, self.propagator, epoch + 1)


class GuardCallback(keras.callbacks.Callback):
    """Last of the callbacks. After every step: a non-finite loss stops training before anything
    can save the diverged state; a stop request (SIGTERM, SIGINT) saves a checkpoint of this step
    and stops. At an epoch end, after its checkpoint: a stop request stops; otherwise the fit ends,
    as train() runs one fit per epoch (each epoch's data has its own seed)."""

    def __init__(self, experiment, propagator, stop_request, resume_at=(0, 0)):
        super().__init__()
        self.experiment, self.propagator, self.stop_request = experiment, propagator, stop_request
        self.resume_epoch, self.resume_steps = resume_at
        self.epoch = self.steps_done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.steps_done = self.resume_steps if epoch == self.resume_epoch else 0

    def on_train_batch_end(self, batch, logs=None):
        experiment = self.experiment
        self.steps_done += 1
        loss = float(logs["loss"])  # the epoch's running mean: non-finite from the first bad step on
        if not math.isfinite(loss):
            raise TrainingFailed(
                f"the loss is {loss} at step {self.steps_done} of {experiment.steps_per_epoch} in epoch "
                f"{self.epoch + 1}: training stopped, nothing of this epoch was saved. "
                f"{last_good_checkpoint(experiment)} A rerun would diverge again: change what made it "
                f"diverge (e.g. a lower --learning_rate than {experiment.config.learning_rate}).")
        signal_number = self.stop_request.signal_number
        if signal_number and self.steps_done < experiment.steps_per_epoch:  # else: the epoch end saves
            path = save_checkpoint(experiment, self.propagator, self.epoch, self.steps_done)
            raise TrainingInterrupted(
                f"{signal.Signals(signal_number).name}: stopped after step {self.steps_done} of "
                f"{experiment.steps_per_epoch} in epoch {self.epoch + 1} and saved {path}; rerunning the "
                "same command continues with the next step", signal_number)

    def on_epoch_end(self, epoch, logs=None):
        signal_number = self.stop_request.signal_number
        if signal_number:
            raise TrainingInterrupted(
                f"{signal.Signals(signal_number).name}: stopped after epoch {epoch + 1} and its "
                f"checkpoint {self.experiment.manager.latest_checkpoint}; rerunning the same command "
                "continues with the next epoch", signal_number)
        self.model.stop_training = True


# ----------------------------------------------------------------------------------------------
# Save and restore


def save_checkpoint(experiment, propagator, epochs_done, steps_in_epoch=0):
    """Checkpoints the state after `epochs_done` epochs and `steps_in_epoch` steps of the next one:
    at an epoch end through the manager (ckpt-<epochs>), else as interrupted/ckpt-<global step>.
    Non-finite state is never written; a failed write (a full disk) raises TrainingFailed naming the
    checkpoint that remains. Returns the checkpoint's path."""
    where = (f"step {steps_in_epoch} of epoch {epochs_done + 1}" if steps_in_epoch
             else f"the end of epoch {epochs_done}")
    bad = non_finite_variables(experiment)
    if bad:
        raise TrainingFailed(f"non-finite values in {', '.join(bad[:3])} at {where}: not saved. "
                             f"{last_good_checkpoint(experiment)}")
    experiment.model.state.completed_epochs.assign(epochs_done)
    experiment.progress.steps_in_epoch.assign(steps_in_epoch)
    experiment.progress.pseudo_label_accuracy_history.assign(
        np.asarray(propagation_history(experiment, propagator), np.float64))  # exact Python floats
    interrupted = experiment.workdir.interrupted_checkpoints
    if steps_in_epoch:
        step = int(experiment.model.optimizer.iterations.numpy())
        prefix = os.path.join(interrupted, f"ckpt-{step}")
    else:
        prefix = os.path.join(experiment.manager.directory, f"ckpt-{epochs_done}")
    try:
        if steps_in_epoch:
            _ = experiment.checkpoint.save_counter  # created on first use; restore expects it in every one
            return experiment.checkpoint.write(prefix)
        path = experiment.manager.save(checkpoint_number=epochs_done)
    except (tf.errors.OpError, OSError) as error:
        remove_unrecorded_checkpoint(prefix)
        raise TrainingFailed(f"writing checkpoint {prefix} at {where} failed: {error_text(error)}. "
                             f"{last_good_checkpoint(experiment)}") from error
    if distribute.is_chief(experiment.strategy):
        remove_checkpoint_directory(interrupted)  # behind this one now
    return path


def non_finite_variables(experiment):
    """Paths of the floating-point variables to be checkpointed that hold a NaN or an Inf."""
    model = experiment.model
    state = model.state
    variables = (list(model.weights) + list(model.optimizer.variables)
                 + [state.bank, state.confidences, state.log_density])
    return [getattr(v, "path", None) or v.name.split(":")[0] for v in variables
            if tf.as_dtype(v.dtype).is_floating
            and not bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))))]


def propagation_history(experiment, propagator):
    """Pseudo-label accuracy of every propagation of the run, the restored ones included."""
    if propagator is None:
        return []
    return experiment.restored_history + [s["propagation/pseudo_label_accuracy"]
                                          for s in propagator.history]


def last_good_checkpoint(experiment):
    """A sentence naming the checkpoint a rerun would resume from."""
    saved = saved_checkpoints(experiment.workdir.checkpoints, warn=False)
    if not saved:
        return "There is no earlier checkpoint: a rerun starts from scratch."
    path, position = saved[0]
    return f"The last good checkpoint, {path} ({describe_position(position)}), is kept."


def restore(experiment):
    """Restores the newest checkpoint that reads back whole, or initialises the bank when there is
    none; returns (epochs completed, steps done of the next epoch). A damaged checkpoint is skipped
    with a warning naming it; one made for another run shape is refused."""
    config = experiment.config
    directory = experiment.workdir.checkpoints
    saved, candidates = saved_checkpoints(directory), checkpoint_paths(directory)
    if not candidates:
        logging.info("no checkpoint in %s: training from scratch", directory)
        if distribute.is_chief(experiment.strategy):
            remove_leftovers(directory, completed_epochs=0)
        if config.init_from:
            init_network(experiment, config.init_from)
        if config.fills_bank_at_start():
            experiment.fill_bank()
        return 0, 0
    for path, position in saved:
        check_checkpoint_shapes(path, experiment.model.state)
        try:
            experiment.checkpoint.restore(path).assert_existing_objects_matched()
        except UNREADABLE as error:
            logging.warning("checkpoint %s does not read back whole, trying an older one: %s",
                            path, error_text(error))
            continue
        except AssertionError as error:  # whole, but not what this version writes
            raise ValueError(f"checkpoint {path} was written by another version of llp_tf "
                             f"({str(error).splitlines()[0]}): use another --workdir") from error
        experiment.restored_history = [
            float(a) for a in experiment.progress.pseudo_label_accuracy_history.numpy()]
        logging.info("resuming from %s (%s)", path, describe_position(position))
        if distribute.is_chief(experiment.strategy):
            remove_leftovers(directory, completed_epochs=position[0])
        return position
    raise TrainingFailed(f"no checkpoint in {directory} reads back whole (tried "
                         f"{', '.join(candidates)}): move them away to start over")


def init_network(experiment, workdir):
    """Network weights (backbone, heads, BatchNorm statistics) <- the newest checkpoint of another
    run's workdir (a damaged newer one is skipped with a warning); this run's bank, labels and
    optimizer are left as they are. Returns the checkpoint's path."""
    directory = Workdir(workdir).checkpoints
    try:
        path = newest_whole_checkpoint(directory)
    except ValueError as error:
        raise ValueError(f"--init_from={workdir}: {error}") from None
    if path is None:
        raise ValueError(f"--init_from={workdir}: no checkpoint in {directory}")
    try:
        # The layers by the names the model saves them under, without the model's state.
        model = experiment.model
        network = tf.train.Checkpoint(backbone=model.backbone, embedding_head=model.embedding_head,
                                      classifier=model.classifier)
        tf.train.Checkpoint(model=network).restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ValueError(f"--init_from={workdir}: {path} does not hold this network "
                         f"(--backbone={experiment.config.backbone}, {experiment.num_classes} classes): "
                         f"{str(error).splitlines()[0]}") from error
    logging.info("network weights from %s", path)
    return path
