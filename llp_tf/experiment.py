"""The experiment one training job builds from a TrainConfig: strategy, data, labelled split, model
and its state, and the datasets the phase loop and the propagation read (Model Garden's Task).

An Experiment knows nothing of resuming or of the phase loop: llp_tf/resume.py saves and restores its
checkpoint, llp_tf/train.py runs the phases; what its workdir records about it is llp_tf/facts.py
(a folder dataset's decode check reads that record, so only changed files are decoded again).
`build_model` builds the network alone, for a finished run rebuilt from those facts. No flags here.
"""
import keras
import numpy as np
import tensorflow as tf

from llp_tf import backbones, data, distribute, propagation
from llp_tf.config import TrainConfig
from llp_tf.facts import read_file_table
from llp_tf.model import LLPModel, LLPState
from llp_tf.resume import Progress
from llp_tf.workdir import Workdir


class Experiment:
    """Everything one job builds: strategy, data and labelled split, model with its state, and the
    checkpoint of model, optimizer, state and progress."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.workdir = Workdir(config.workdir)
        self.strategy = distribute.make_strategy(config.strategy, config.cpu_replicas)
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ValueError(f"--batch_size={config.batch_size} is not divisible by the {replicas} replicas")
        self.source = data.load_source(config.dataset, config.data_dir, config.on_bad_image,
                                       config.class_names, known_files=read_file_table(config.workdir))
        self.selection = data.select_examples(
            self.source.labels("train"), config.labelled_fraction, config.kept_fraction,
            seed=config.split_seed, class_names=self.source.class_names)
        self.image_size = config.image_size or _native_size(self.source)
        self.num_classes = self.source.num_classes
        self.steps_per_epoch = steps_per_epoch(config, len(self.selection.rows))
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.selection.rows)} examples make no batch of {config.batch_size}")
        if config.method != "supervised":
            propagation.check_propagation_sizes(
                len(self.selection.rows), int(self.selection.is_labelled.sum()),
                config.k, config.t, config.tau)
        self.progress = Progress()
        self.restored_history = []  # the progress's pseudo-label accuracies at restore
        self._embed_for_bank = None  # fill_bank's traced function
        with self.strategy.scope():
            self.model = self._build_model()
            self.checkpoint = training_checkpoint(self.model, self.progress)
        self.manager = distribute.checkpoint_manager(
            self.checkpoint, self.workdir.checkpoints, self.strategy, max_to_keep=config.keep_checkpoints)

    def _build_model(self):
        input_shape = (self.image_size, self.image_size, self.source.channels)
        return build_model(self.config, input_shape, self.num_classes, self.selection.is_labelled,
                           self.selection.true_labels, self.steps_per_epoch)

    def train_dataset(self, epoch, skip_steps=0, labelled_only=None):
        """The batches of one epoch from step skip_steps on. Their shuffle and augmentations depend
        on (seed, epoch) alone, so a resumed run trains on the batches an uninterrupted one would.
        labelled_only (default: --method=supervised): the labelled examples alone, cycled (supervised
        training and the supervised warm-up)."""
        config = self.config
        seed = int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0])
        if labelled_only is None:
            labelled_only = config.method == "supervised"
        return distribute.shard_by_data(data.train_dataset(
            self.source, self.selection, config.batch_size, self.image_size, augment=config.augment,
            seed=seed, labelled_only=labelled_only,
            weak_views=bool(config.consistency_weight) and not labelled_only,
            labelled_per_batch=config.labelled_per_batch, crop_area_min=config.crop_area_min,
            random_flip=config.random_flip, color_jitter=config.color_jitter,
            random_grayscale=config.random_grayscale).skip(skip_steps))

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

    def fill_bank(self):
        """Bank rows <- the network's own embeddings of the unaugmented images (bank_init=network, and
        before each propagation with refresh_bank)."""
        if self._embed_for_bank is None:  # traced once per experiment, not once per fill
            self._embed_for_bank = tf.function(
                lambda images: self.model(images, training=False)["embeddings"])
        for images, _, indices in self.ordered_train_dataset():
            self.model.state.bank.scatter_update(tf.IndexedSlices(self._embed_for_bank(images), indices))


def _native_size(source):
    if source.image_shape is None:
        raise ValueError("the images of this dataset differ in size: give --image_size")
    height, width, _ = source.image_shape
    if height != width:
        raise ValueError(f"images are {height}x{width}: give --image_size for square crops")
    return height


def steps_per_epoch(config: TrainConfig, num_examples: int) -> int:
    return config.steps_per_epoch or num_examples // config.batch_size


def build_model(config: TrainConfig, input_shape, num_classes, is_labelled, true_labels, steps):
    """The compiled LLPModel of `config` on images of input_shape (H, W, C), with an LLPState of
    len(is_labelled) rows (true_labels: those of the labelled rows count), the learning-rate schedule
    of `steps` per epoch and its optimizer's slots built, so that a checkpoint restores into it."""
    backbone = backbones.build_backbone(config.backbone, input_shape, config.weight_decay, config.width)
    state = LLPState(is_labelled, true_labels, config.embedding_dim, seed=config.seed)
    model = LLPModel(backbone, num_classes, state, tau=config.tau,
                     bank_momentum=config.bank_momentum, use_confidence=config.use_confidence,
                     use_category_loss=config.use_category_loss, weight_decay=config.weight_decay,
                     warmup_category_loss=config.warmup_category_loss,
                     confidence_threshold=config.confidence_threshold,
                     consistency_weight=config.consistency_weight,
                     consistency_threshold=config.consistency_threshold,
                     consistency_warmup=config.consistency_warmup,
                     labelled_weight=(config.batch_size / config.labelled_per_batch
                                      if config.consistency_warmup else 1.0))
    optimizer = keras.optimizers.SGD(_learning_rate(config, steps), momentum=config.momentum)
    if config.mixed_precision == "mixed_float16":
        # What compile() would wrap it in under that policy, here from the config alone, so that a
        # float32 rebuild of the run (llp_tf/finished.py) has the checkpoint's optimizer too.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
    model(tf.zeros((1,) + tuple(input_shape)))
    model.optimizer.build(model.trainable_variables)  # slots exist before a restore
    return model


def _learning_rate(config: TrainConfig, steps):
    drop_epochs, values = config.learning_rates()
    if not drop_epochs:
        return values[0]
    boundaries = [epoch * steps for epoch in drop_epochs]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def training_checkpoint(model, progress: Progress) -> tf.train.Checkpoint:
    """What a training checkpoint holds: model, optimizer, state and progress."""
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer, state=model.state,
                               progress=progress)
