"""Runs one training job from a TrainConfig: data, model, phases, checkpoints, final metrics.

The phases (METHOD.md): instance recognition for `instance_epochs`, one propagation at the switch, then
LLP with a propagation at every epoch end (method two_stage: no propagation after the switch, the
pseudo-labels stay fixed). A rerun with the same workdir resumes from its latest
checkpoint. No flags here: `tools/train.py` turns the command line into a TrainConfig.

Faults: a checkpoint is written after every epoch, only when everything in it is finite. SIGTERM or
SIGINT stops training at the end of the current step with a checkpoint of that step
(checkpoints/interrupted/); the rerun continues with the next step. Every epoch's batches come from
(seed, epoch) alone, so a resumed run trains on the batches an uninterrupted one would. Restore takes
the newest checkpoint that reads back whole, skipping damaged ones with a warning. A failed write (a
full disk) or a non-finite loss stops training with a message naming the checkpoint that remains.
"""
import contextlib
import json
import math
import os
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from llp_tf import backbones, data, distribute, evaluation, propagation
from llp_tf.checkpoints import (INTERRUPTED_DIR, UNREADABLE, check_checkpoint_shapes, checkpoint_paths,
                                describe_position, error_text, newest_whole_checkpoint,
                                remove_checkpoint_directory, remove_leftovers,
                                remove_unrecorded_checkpoint, replace_atomically, saved_checkpoints)
from llp_tf.callbacks import (KnnCallback, PropagationCallback, SummaryCallback,
                              pseudo_label_accuracy)
from llp_tf.config import TrainConfig
from llp_tf.model import LLPModel, LLPState

SPLIT_FILE = "split.npz"
FACTS_FILE = "dataset.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"


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
    ends) and every propagation's pseudo-label accuracy so far (a resumed run reports them all)."""

    def __init__(self):
        super().__init__(name="progress")
        self.steps_in_epoch = tf.Variable(np.int64(0), trainable=False, name="steps_in_epoch")
        self.pseudo_label_accuracy_history = tf.Variable(
            np.zeros([0], np.float64), shape=tf.TensorShape([None]), trainable=False,
            name="pseudo_label_accuracy_history")


class Run:
    """Everything one job builds: data, strategy, model and its checkpoint."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.strategy = distribute.make_strategy(config.strategy, config.cpu_replicas)
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ValueError(f"--batch_size={config.batch_size} is not divisible by the {replicas} replicas")
        self.source = data.load_source(config.dataset, config.data_dir, config.on_bad_image)
        self.selection = data.select_examples(
            self.source.labels("train"), config.labelled_fraction, config.kept_fraction,
            seed=config.split_seed, class_names=self.source.class_names)
        self.image_size = config.image_size or _native_size(self.source)
        self.num_classes = self.source.num_classes
        self.steps_per_epoch = config.steps_per_epoch or len(self.selection.rows) // config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.selection.rows)} examples make no batch of {config.batch_size}")
        if config.method != "supervised":
            propagation.check_propagation_sizes(
                len(self.selection.rows), int(self.selection.is_labelled.sum()),
                config.k, config.t, config.tau)
        self.progress = Progress()
        self.restored_history = []  # the progress's pseudo-label accuracies at restore
        self.embed_for_bank = None  # fill_bank's traced function
        with self.strategy.scope():
            self.model = self._build_model()
            self.checkpoint = tf.train.Checkpoint(
                model=self.model, optimizer=self.model.optimizer, state=self.model.state,
                progress=self.progress)
        self.manager = distribute.checkpoint_manager(
            self.checkpoint, os.path.join(config.workdir, CHECKPOINT_DIR), self.strategy,
            max_to_keep=config.keep_checkpoints)

    def _build_model(self):
        config = self.config
        input_shape = (self.image_size, self.image_size, self.source.channels)
        backbone = backbones.build_backbone(config.backbone, input_shape, config.weight_decay, config.width)
        state = LLPState(self.selection.is_labelled, self.selection.labels, config.embedding_dim,
                         seed=config.seed)
        model = LLPModel(backbone, self.num_classes, state, tau=config.tau,
                         bank_momentum=config.bank_momentum, use_confidence=config.use_confidence,
                         use_category_loss=config.use_category_loss, weight_decay=config.weight_decay,
                         warmup_category_loss=config.warmup_category_loss,
                         confidence_threshold=config.confidence_threshold)
        model.compile(optimizer=keras.optimizers.SGD(self._learning_rate(), momentum=config.momentum),
                      jit_compile=config.jit_compile)
        model(tf.zeros((1,) + input_shape))
        model.optimizer.build(model.trainable_variables)  # slots exist before a restore
        return model

    def _learning_rate(self):
        config = self.config
        if not config.lr_drop_epochs:
            return config.learning_rate
        boundaries = [int(e) * self.steps_per_epoch for e in config.lr_drop_epochs]
        values = [config.learning_rate * config.lr_drop_factor ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)

    def train_dataset(self, epoch, skip_steps=0):
        """The batches of one epoch from step skip_steps on. Their shuffle and augmentations depend
        on (seed, epoch) alone, so a resumed run trains on the batches an uninterrupted one would."""
        config = self.config
        seed = int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0])
        return distribute.shard_by_data(data.train_dataset(
            self.source, self.selection, config.batch_size, self.image_size, augment=config.augment,
            seed=seed, labelled_only=config.method == "supervised",
            labelled_per_batch=config.labelled_per_batch,
            crop_area_min=config.crop_area_min).skip(skip_steps))

    def eval_dataset(self, split="test"):
        return distribute.shard_by_data(
            data.eval_dataset(self.source, split, self.config.batch_size, self.image_size))

    def ordered_train_dataset(self):
        """The kept training examples in bank order, unaugmented (to fill the bank)."""
        size = self.image_size
        examples = self.source.examples("train", self.selection.rows)
        return examples.map(
            lambda image, label, index: (data.preprocess_for_eval(image[None], size)[0], label, index),
            num_parallel_calls=tf.data.AUTOTUNE).batch(self.config.batch_size).prefetch(2)


def _native_size(source):
    if source.image_shape is None:
        raise ValueError("the images of this dataset differ in size: give --image_size")
    height, width, _ = source.image_shape
    if height != width:
        raise ValueError(f"images are {height}x{width}: give --image_size for square crops")
    return height


def fill_bank(run: Run):
    """Bank rows <- the network's own embeddings of the unaugmented images (bank_init=network, and
    before each propagation with refresh_bank)."""
    if run.embed_for_bank is None:  # traced once per run, not once per fill
        run.embed_for_bank = tf.function(lambda images: run.model(images, training=False)["embeddings"])
    for images, _, indices in run.ordered_train_dataset():
        run.model.state.bank.scatter_update(tf.IndexedSlices(run.embed_for_bank(images), indices))


def check_workdir(workdir, run: "Run"):
    """Records the run's shape and labelled split on the first run; on a rerun, refuses a workdir
    made for another dataset size, class count, embedding size or split, saying which."""
    facts = {"dataset": run.config.dataset, "num_examples": int(len(run.selection.rows)),
             "num_classes": int(run.num_classes), "embedding_dim": int(run.config.embedding_dim)}
    facts_path, split_path = os.path.join(workdir, FACTS_FILE), os.path.join(workdir, SPLIT_FILE)
    if run.source.skipped_files:
        data.write_skipped_files(run.source.skipped_files, workdir)
    if not os.path.exists(facts_path):  # written last: its presence means both are whole
        replace_atomically(split_path, lambda f: np.savez(
            f, rows=run.selection.rows, is_labelled=run.selection.is_labelled))
        replace_atomically(facts_path, lambda f: f.write(json.dumps(facts, indent=2).encode()))
        return
    with open(facts_path) as f:
        saved = json.load(f)
    for key in ("num_examples", "num_classes", "embedding_dim"):
        if saved[key] != facts[key]:
            raise ValueError(f"{workdir} was made for {key} = {saved[key]} ({saved['dataset']}), this run "
                             f"has {key} = {facts[key]}: use another --workdir")
    split = np.load(split_path)
    if not (np.array_equal(split["rows"], run.selection.rows)
            and np.array_equal(split["is_labelled"], run.selection.is_labelled)):
        raise ValueError(f"{workdir} holds another labelled split (other --split_seed, fractions or "
                         "data): use another --workdir")


class CheckpointCallback(keras.callbacks.Callback):
    """Saves weights, optimizer, state and progress after every epoch (after its propagation)."""

    def __init__(self, run: Run, propagator=None):
        super().__init__()
        self.run, self.propagator = run, propagator

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.run, self.propagator, epoch + 1)


class GuardCallback(keras.callbacks.Callback):
    """Last of the callbacks. After every step: a non-finite loss stops training before anything
    can save the diverged state; a stop request (SIGTERM, SIGINT) saves a checkpoint of this step
    and stops. At an epoch end, after its checkpoint: a stop request stops; otherwise the fit ends,
    as train() runs one fit per epoch (each epoch's data has its own seed)."""

    def __init__(self, run: Run, propagator, stop_request, resume_at=(0, 0)):
        super().__init__()
        self.run, self.propagator, self.stop_request = run, propagator, stop_request
        self.resume_epoch, self.resume_steps = resume_at
        self.epoch = self.steps_done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.steps_done = self.resume_steps if epoch == self.resume_epoch else 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done += 1
        loss = float(logs["loss"])  # the epoch's running mean: non-finite from the first bad step on
        if not math.isfinite(loss):
            raise TrainingFailed(
                f"the loss is {loss} at step {self.steps_done} of {self.run.steps_per_epoch} in epoch "
                f"{self.epoch + 1}: training stopped, nothing of this epoch was saved. "
                f"{last_good_checkpoint(self.run)} A rerun would diverge again: change what made it "
                f"diverge (e.g. a lower --learning_rate than {self.run.config.learning_rate}).")
        signal_number = self.stop_request.signal_number
        if signal_number and self.steps_done < self.run.steps_per_epoch:  # else: the epoch end saves
            path = save_checkpoint(self.run, self.propagator, self.epoch, self.steps_done)
            raise TrainingInterrupted(
                f"{signal.Signals(signal_number).name}: stopped after step {self.steps_done} of "
                f"{self.run.steps_per_epoch} in epoch {self.epoch + 1} and saved {path}; rerunning the "
                "same command continues with the next step", signal_number)

    def on_epoch_end(self, epoch, logs=None):
        signal_number = self.stop_request.signal_number
        if signal_number:
            raise TrainingInterrupted(
                f"{signal.Signals(signal_number).name}: stopped after epoch {epoch + 1} and its "
                f"checkpoint {self.run.manager.latest_checkpoint}; rerunning the same command "
                "continues with the next epoch", signal_number)
        self.model.stop_training = True


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


def save_checkpoint(run: Run, propagator, epochs_done, steps_in_epoch=0):
    """Checkpoints the state after `epochs_done` epochs and `steps_in_epoch` steps of the next one:
    at an epoch end through the manager (ckpt-<epochs>), else as interrupted/ckpt-<global step>.
    Non-finite state is never written; a failed write (a full disk) raises TrainingFailed naming the
    checkpoint that remains. Returns the checkpoint's path."""
    where = (f"step {steps_in_epoch} of epoch {epochs_done + 1}" if steps_in_epoch
             else f"the end of epoch {epochs_done}")
    bad = non_finite_variables(run)
    if bad:
        raise TrainingFailed(f"non-finite values in {', '.join(bad[:3])} at {where}: not saved. "
                             f"{last_good_checkpoint(run)}")
    run.model.state.completed_epochs.assign(epochs_done)
    run.progress.steps_in_epoch.assign(steps_in_epoch)
    run.progress.pseudo_label_accuracy_history.assign(
        np.asarray(propagation_history(run, propagator), np.float64))  # exact Python floats
    directory = os.path.join(run.config.workdir, CHECKPOINT_DIR)
    if steps_in_epoch:
        step = int(run.model.optimizer.iterations.numpy())
        prefix = os.path.join(directory, INTERRUPTED_DIR, f"ckpt-{step}")
    else:
        prefix = os.path.join(run.manager.directory, f"ckpt-{epochs_done}")
    try:
        if steps_in_epoch:
            _ = run.checkpoint.save_counter  # created on first use; restore expects it in every one
            return run.checkpoint.write(prefix)
        path = run.manager.save(checkpoint_number=epochs_done)
    except (tf.errors.OpError, OSError) as error:
        remove_unrecorded_checkpoint(prefix)
        raise TrainingFailed(f"writing checkpoint {prefix} at {where} failed: {error_text(error)}. "
                             f"{last_good_checkpoint(run)}") from error
    if distribute.is_chief(run.strategy):
        remove_checkpoint_directory(os.path.join(directory, INTERRUPTED_DIR))  # behind this one now
    return path


def non_finite_variables(run: Run):
    """Paths of the floating-point variables to be checkpointed that hold a NaN or an Inf."""
    state = run.model.state
    variables = (list(run.model.weights) + list(run.model.optimizer.variables)
                 + [state.bank, state.confidences, state.log_density])
    return [getattr(v, "path", None) or v.name.split(":")[0] for v in variables
            if tf.as_dtype(v.dtype).is_floating
            and not bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))))]


def propagation_history(run: Run, propagator):
    """Pseudo-label accuracy of every propagation of the run, the restored ones included."""
    if propagator is None:
        return []
    return run.restored_history + [s["propagation/pseudo_label_accuracy"] for s in propagator.history]


def last_good_checkpoint(run: Run):
    """A sentence naming the checkpoint a rerun would resume from."""
    saved = saved_checkpoints(os.path.join(run.config.workdir, CHECKPOINT_DIR), warn=False)
    if not saved:
        return "There is no earlier checkpoint: a rerun starts from scratch."
    path, position = saved[0]
    return f"The last good checkpoint, {path} ({describe_position(position)}), is kept."


def train(config: TrainConfig) -> dict:
    """Trains (or resumes) the job in config.workdir and returns the final metrics."""
    config.validate()
    started = time.time()
    os.makedirs(config.workdir, exist_ok=True)
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    run = Run(config)
    chief = distribute.is_chief(run.strategy)  # the other workers of a cluster write no files
    if chief:
        check_workdir(config.workdir, run)
        replace_atomically(os.path.join(config.workdir, "config.json"),
                           lambda f: f.write(config.to_json().encode()))
    resume_at = restore(run)
    validation = run.eval_dataset()
    # A worker of a cluster stopping alone would leave the others waiting in a collective.
    multi_worker = isinstance(run.strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with stop_on_signals(enabled=not multi_worker) as stop_request:
        callbacks, propagator = make_callbacks(run, stop_request, resume_at)
        for phase, first, last in phase_plan(config, resume_at[0]):
            run.model.phase = phase
            for epoch in range(first, last):
                skip = resume_at[1] if epoch == resume_at[0] else 0
                run.model.fit(run.train_dataset(epoch, skip), initial_epoch=epoch, epochs=config.epochs,
                              steps_per_epoch=run.steps_per_epoch - skip, validation_data=validation,
                              callbacks=callbacks, verbose=config.verbose, shuffle=False)
    metrics = final_metrics(run, propagator)
    metrics["wall_seconds"] = time.time() - started
    if config.state_dump:
        state = run.model.state
        np.savez(config.state_dump, **{name: distribute.local_copies(run.strategy, getattr(state, name))
                                       for name in ("bank", "labels", "confidences")})
    if chief:
        replace_atomically(os.path.join(config.workdir, METRICS_FILE),
                           lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    return metrics


def make_callbacks(run: Run, stop_request=None, resume_at=(0, 0)):
    """(callbacks in epoch-end order: propagate, kNN evaluation, checkpoint, summaries, guard; the
    propagation callback or None)."""
    config = run.config
    stop_request = stop_request or StopRequest()
    propagator = None
    if config.method != "supervised":
        propagator = PropagationCallback(
            run.num_classes, k=config.k, t=config.t, tau=config.tau, use_density=config.use_density,
            include_self=config.density_include_self,
            chunks=propagation.Chunks(config.propagation_query_rows, config.propagation_key_rows),
            hidden_labels=run.selection.labels, first_epoch=config.instance_epochs,
            repeat=config.method == "llp",
            refresh_bank=(lambda: fill_bank(run)) if config.refresh_bank else None)
    callbacks = [KnnCallback(run.eval_dataset(), k=config.eval_knn_k, tau=config.tau),
                 CheckpointCallback(run, propagator)]
    if distribute.is_chief(run.strategy):
        callbacks.append(SummaryCallback(os.path.join(config.workdir, "tensorboard"), run.num_classes,
                                         run.selection.labels))
    callbacks.append(GuardCallback(run, propagator, stop_request, resume_at))
    return ([propagator] if propagator else []) + callbacks, propagator


def phase_plan(config, start_epoch):
    """[(phase, first epoch, end epoch)] still to run from start_epoch."""
    if config.method == "supervised":
        spans = [("supervised", 0, config.epochs)]
    else:
        spans = [("instance", 0, config.instance_epochs), ("llp", config.instance_epochs, config.epochs)]
    return [(phase, max(first, start_epoch), last) for phase, first, last in spans
            if last > max(first, start_epoch)]


def restore(run: Run):
    """Restores the newest checkpoint that reads back whole, or initialises the bank when there is
    none; returns (epochs completed, steps done of the next epoch). A damaged checkpoint is skipped
    with a warning naming it; one made for another run shape is refused."""
    directory = os.path.join(run.config.workdir, CHECKPOINT_DIR)
    saved, candidates = saved_checkpoints(directory), checkpoint_paths(directory)
    if not candidates:
        logging.info("no checkpoint in %s: training from scratch", directory)
        if distribute.is_chief(run.strategy):
            remove_leftovers(directory, completed_epochs=0)
        if run.config.init_from:
            init_network(run, run.config.init_from)
        if run.config.bank_init == "network":
            fill_bank(run)
        return 0, 0
    for path, position in saved:
        check_checkpoint_shapes(path, run.model.state)
        try:
            run.checkpoint.restore(path).assert_existing_objects_matched()
        except UNREADABLE as error:
            logging.warning("checkpoint %s does not read back whole, trying an older one: %s",
                            path, error_text(error))
            continue
        except AssertionError as error:  # whole, but not what this version writes
            raise ValueError(f"checkpoint {path} was written by another version of llp_tf "
                             f"({str(error).splitlines()[0]}): use another --workdir") from error
        run.restored_history = [float(a) for a in run.progress.pseudo_label_accuracy_history.numpy()]
        logging.info("resuming from %s (%s)", path, describe_position(position))
        if distribute.is_chief(run.strategy):
            remove_leftovers(directory, completed_epochs=position[0])
        return position
    raise TrainingFailed(f"no checkpoint in {directory} reads back whole (tried "
                         f"{', '.join(candidates)}): move them away to start over")


def init_network(run: Run, workdir):
    """Network weights (backbone, heads, BatchNorm statistics) <- the newest checkpoint of another
    run's workdir (a damaged newer one is skipped with a warning); this run's bank, labels and
    optimizer are left as they are. Returns the checkpoint's path."""
    try:
        path = newest_whole_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
    except ValueError as error:
        raise ValueError(f"--init_from={workdir}: {error}") from None
    if path is None:
        raise ValueError(f"--init_from={workdir}: no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}")
    try:
        # The layers by the names the model saves them under, without the model's state.
        model = run.model
        network = tf.train.Checkpoint(backbone=model.backbone, embedding_head=model.embedding_head,
                                      classifier=model.classifier)
        tf.train.Checkpoint(model=network).restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ValueError(f"--init_from={workdir}: {path} does not hold this network "
                         f"(--backbone={run.config.backbone}, {run.num_classes} classes): "
                         f"{str(error).splitlines()[0]}") from error
    logging.info("network weights from %s", path)
    return path


def final_metrics(run: Run, propagator) -> dict:
    config, model = run.config, run.model
    results = evaluation.evaluate_model(model, run.eval_dataset(), run.source.class_names,
                                        knn_k=config.eval_knn_k, tau=config.tau)
    state = model.state
    is_labelled = state.is_labelled.numpy()
    metrics = {
        "method": config.method,
        "dataset": config.dataset,
        "backbone": config.backbone,
        "num_examples": int(len(is_labelled)),
        "num_labelled": int(is_labelled.sum()),
        "epochs": int(state.completed_epochs.numpy()),
        "instance_epochs": config.instance_epochs if config.method != "supervised" else 0,
        "seed": config.seed,
        "split_seed": config.split_seed,
        "val_top1": results["top1"],
        "val_top5": results["top5"],
        "knn_top1": results["knn_top1"],
        "pseudo_label_accuracy": None,
        "pseudo_label_accuracy_history": [],
    }
    if config.method != "supervised":
        metrics["pseudo_label_accuracy"] = pseudo_label_accuracy(
            state.labels.numpy(), run.selection.labels, is_labelled)
        metrics["pseudo_label_accuracy_history"] = propagation_history(run, propagator)
    return metrics
