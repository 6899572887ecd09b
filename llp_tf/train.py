"""Runs one training job from a TrainConfig: data, model, phases, checkpoints, final metrics.

The phases (METHOD.md): instance recognition for `instance_epochs`, one propagation at the switch, then
LLP with a propagation at every epoch end. A rerun with the same workdir resumes from its latest
checkpoint. No flags here: `tools/train.py` turns the command line into a TrainConfig.
"""
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from llp_tf import backbones, data, distribute, evaluation, propagation
from llp_tf.callbacks import (KnnCallback, PropagationCallback, SummaryCallback,
                              pseudo_label_accuracy)
from llp_tf.config import TrainConfig
from llp_tf.model import LLPModel, LLPState

SPLIT_FILE = "split.npz"
FACTS_FILE = "dataset.json"
METRICS_FILE = "metrics.json"


class Run:
    """Everything one job builds: data, strategy, model and its checkpoint."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.strategy = distribute.make_strategy(config.strategy, config.cpu_replicas)
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ValueError(f"--batch_size={config.batch_size} is not divisible by the {replicas} replicas")
        self.source = data.load_source(config.dataset, config.data_dir)
        self.selection = data.select_examples(
            self.source.labels("train"), config.labelled_fraction, config.kept_fraction,
            seed=config.split_seed, class_names=self.source.class_names)
        self.image_size = config.image_size or _native_size(self.source)
        self.num_classes = self.source.num_classes
        self.steps_per_epoch = config.steps_per_epoch or len(self.selection.rows) // config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.selection.rows)} examples make no batch of {config.batch_size}")
        if config.method == "llp":
            propagation.check_propagation_sizes(
                len(self.selection.rows), int(self.selection.is_labelled.sum()),
                config.k, config.t, config.tau)
        with self.strategy.scope():
            self.model = self._build_model()
            self.checkpoint = tf.train.Checkpoint(
                model=self.model, optimizer=self.model.optimizer, state=self.model.state)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(config.workdir, "checkpoints"),
            max_to_keep=config.keep_checkpoints)

    def _build_model(self):
        config = self.config
        input_shape = (self.image_size, self.image_size, self.source.channels)
        backbone = backbones.build_backbone(config.backbone, input_shape, config.weight_decay, config.width)
        state = LLPState(self.selection.is_labelled, self.selection.labels, config.embedding_dim,
                         seed=config.seed)
        model = LLPModel(backbone, self.num_classes, state, tau=config.tau,
                         bank_momentum=config.bank_momentum, use_confidence=config.use_confidence,
                         use_category_loss=config.use_category_loss, weight_decay=config.weight_decay)
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

    def train_dataset(self, first_epoch):
        """Batches from first_epoch on; the seed moves with the epoch so that a resumed run or a new
        phase does not replay the shuffles and augmentations of epoch 0."""
        config = self.config
        seed = int(np.random.SeedSequence([config.seed, first_epoch]).generate_state(1)[0])
        return data.train_dataset(
            self.source, self.selection, config.batch_size, self.image_size, augment=config.augment,
            seed=seed, labelled_only=config.method == "supervised").repeat()

    def eval_dataset(self, split="test"):
        return data.eval_dataset(self.source, split, self.config.batch_size, self.image_size)

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
    """Bank rows <- the network's own embeddings of the unaugmented images (bank_init=network)."""
    embed = tf.function(lambda images: run.model(images, training=False)["embeddings"])
    for images, _, indices in run.ordered_train_dataset():
        run.model.state.bank.scatter_update(tf.IndexedSlices(embed(images), indices))


def check_workdir(workdir, run: "Run"):
    """Records the run's shape and labelled split on the first run; on a rerun, refuses a workdir
    made for another dataset size, class count, embedding size or split, saying which."""
    facts = {"dataset": run.config.dataset, "num_examples": int(len(run.selection.rows)),
             "num_classes": int(run.num_classes), "embedding_dim": int(run.config.embedding_dim)}
    facts_path, split_path = os.path.join(workdir, FACTS_FILE), os.path.join(workdir, SPLIT_FILE)
    if not os.path.exists(facts_path):
        np.savez(split_path, rows=run.selection.rows, is_labelled=run.selection.is_labelled)
        with open(facts_path, "w") as f:
            json.dump(facts, f, indent=2)
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
    """Saves weights, optimizer, state and the epoch count after every epoch."""

    def __init__(self, run: Run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        self.run.model.state.completed_epochs.assign(epoch + 1)
        self.run.manager.save(checkpoint_number=epoch + 1)


def train(config: TrainConfig) -> dict:
    """Trains (or resumes) the job in config.workdir and returns the final metrics."""
    config.validate()
    started = time.time()
    os.makedirs(config.workdir, exist_ok=True)
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    keras.utils.set_random_seed(config.seed)
    run = Run(config)
    check_workdir(config.workdir, run)
    with open(os.path.join(config.workdir, "config.json"), "w") as f:
        f.write(config.to_json())
    start_epoch = restore(run)
    callbacks, propagator = make_callbacks(run)
    for phase, first, last in phase_plan(config, start_epoch):
        run.model.phase = phase
        run.model.fit(run.train_dataset(first), initial_epoch=first, epochs=last,
                      steps_per_epoch=run.steps_per_epoch, validation_data=run.eval_dataset(),
                      callbacks=callbacks, verbose=config.verbose)
    metrics = final_metrics(run, propagator)
    metrics["wall_seconds"] = time.time() - started
    with open(os.path.join(config.workdir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def make_callbacks(run: Run):
    """(callbacks in epoch-end order: propagate, kNN evaluation, checkpoint, summaries; the
    propagation callback or None)."""
    config = run.config
    callbacks = [KnnCallback(run.eval_dataset(), k=config.eval_knn_k, tau=config.tau),
                 CheckpointCallback(run),
                 SummaryCallback(os.path.join(config.workdir, "tensorboard"), run.num_classes,
                                 run.selection.labels)]
    if config.method != "llp":
        return callbacks, None
    propagator = PropagationCallback(
        run.num_classes, k=config.k, t=config.t, tau=config.tau, use_density=config.use_density,
        include_self=config.density_include_self,
        chunks=propagation.Chunks(config.propagation_query_rows, config.propagation_key_rows),
        hidden_labels=run.selection.labels, first_epoch=config.instance_epochs)
    return [propagator] + callbacks, propagator


def phase_plan(config, start_epoch):
    """[(phase, first epoch, end epoch)] still to run from start_epoch."""
    if config.method == "supervised":
        spans = [("supervised", 0, config.epochs)]
    else:
        spans = [("instance", 0, config.instance_epochs), ("llp", config.instance_epochs, config.epochs)]
    return [(phase, max(first, start_epoch), last) for phase, first, last in spans
            if last > max(first, start_epoch)]


def restore(run: Run) -> int:
    """Restores the latest checkpoint (or initialises the bank) and returns the epochs completed."""
    latest = run.manager.latest_checkpoint
    if latest is None:
        if run.config.bank_init == "network":
            fill_bank(run)
        return 0
    check_checkpoint_shapes(latest, run.model.state)
    run.checkpoint.restore(latest).assert_existing_objects_matched()
    return int(run.model.state.completed_epochs.numpy())


def check_checkpoint_shapes(path, state):
    """A checkpoint of another dataset size or embedding size is refused with a message saying which."""
    saved = dict(tf.train.list_variables(path))
    for name, variable in (("bank", state.bank), ("log_density", state.log_density)):
        key = f"state/{name}/.ATTRIBUTES/VARIABLE_VALUE"
        if key in saved and tuple(saved[key]) != tuple(variable.shape):
            raise ValueError(f"checkpoint {path} has {name} of shape {tuple(saved[key])} but this run "
                             f"needs {tuple(variable.shape)} (another dataset size, labelled count or "
                             "embedding size): use another --workdir")


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
        "instance_epochs": config.instance_epochs if config.method == "llp" else 0,
        "seed": config.seed,
        "split_seed": config.split_seed,
        "val_top1": results["top1"],
        "val_top5": results["top5"],
        "knn_top1": results["knn_top1"],
        "pseudo_label_accuracy": None,
        "pseudo_label_accuracy_history": [],
    }
    if config.method == "llp":
        metrics["pseudo_label_accuracy"] = pseudo_label_accuracy(
            state.labels.numpy(), run.selection.labels, is_labelled)
        metrics["pseudo_label_accuracy_history"] = [
            s.get("propagation/pseudo_label_accuracy") for s in propagator.history]
    return metrics
