"""The one place that builds the distribution strategy, and what differs between the chief and the
other workers of a multi-worker run (who writes files, where checkpoints go)."""
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multiworker", "default")


def split_cpu(num_devices: int):
    """Split the CPU into logical devices (to exercise multi-replica code without GPUs).

    Must run before anything touches TensorFlow's devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def make_strategy(name: str = "auto", cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """"auto": MultiWorkerMirroredStrategy when TF_CONFIG names several workers, else MirroredStrategy
    over all GPUs when there are several, else the default strategy.
    "mirrored": MirroredStrategy over all GPUs, or over `cpu_replicas` logical CPUs when given.
    "multiworker": MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (every GPU of each worker,
    or its CPU). It must be created before any other TensorFlow work in the process.
    "default": no distribution (one device).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "multiworker" or (name == "auto" and tf_config_worker_count() > 1):
        return _multi_worker_strategy(cpu_replicas)
    if name == "default":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" and cpu_replicas:
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < cpu_replicas:
            raise ValueError(f"{cpu_replicas} CPU replicas asked for but only {len(cpus)} logical CPUs "
                             "exist: call split_cpu before TensorFlow starts")
        return tf.distribute.MirroredStrategy([d.name for d in cpus[:cpu_replicas]])
    if name == "mirrored" or len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def tf_config_worker_count() -> int:
    """Chief and worker tasks in the TF_CONFIG environment variable (0 when it is unset)."""
    if not os.environ.get("TF_CONFIG"):
        return 0
    try:
        cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster': {error}") from error
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _multi_worker_strategy(cpu_replicas):
    if cpu_replicas:
        raise ValueError("--cpu_replicas splits one process's CPU for --strategy=mirrored; a multi-worker "
                         "run has one CPU replica per worker")
    if not tf_config_worker_count():
        raise ValueError("--strategy=multiworker needs TF_CONFIG naming the cluster's workers and this "
                         "task, e.g. {\"cluster\": {\"worker\": [\"host1:port\", \"host2:port\"]}, "
                         "\"task\": {\"type\": \"worker\", \"index\": 0}}")
    # NCCL for all-reduces between GPUs; ring collectives over gRPC between CPU workers.
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL
                      if tf.config.list_physical_devices("GPU")  # physical: does not start TensorFlow
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation))
    except RuntimeError as error:
        raise RuntimeError("MultiWorkerMirroredStrategy must be created before any other TensorFlow "
                           f"work in the process: {error}") from error
    _patch_keras_for_multi_worker()
    return strategy


def _patch_keras_for_multi_worker():
    """Keras 3's fit() and evaluate() fail under a multi-worker strategy in two places
    (keras-team/keras#20585, tensorflow/tensorflow#72388). These replacements fix those two and
    leave every other strategy on Keras' own code. Remove them once Keras handles multi-worker runs.
    """
    import keras  # pylint: disable=import-outside-toplevel
    from keras.src.backend.tensorflow import trainer  # pylint: disable=import-outside-toplevel

    if getattr(trainer, "llp_multi_worker_patched", False):
        return
    needed = (hasattr(trainer, "reduce_per_replica"), hasattr(trainer, "_collective_all_reduce_multi_worker"),
              hasattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build"))
    if not all(needed):
        raise RuntimeError(f"Keras {keras.__version__} lacks the internals the multi-worker patches "
                           "replace: check whether it runs fit() under MultiWorkerMirroredStrategy itself")
    multi_worker = trainer._collective_all_reduce_multi_worker  # pylint: disable=protected-access
    keras_build = trainer.TensorFlowTrainer._maybe_symbolic_build  # pylint: disable=protected-access
    keras_reduce = trainer.reduce_per_replica

    def maybe_symbolic_build(model, iterator=None, data_batch=None):
        # Keras averages the first distributed batch with one cross-worker strategy.reduce of the
        # whole (images, labels, indices) structure, which the collective cannot take. One local
        # replica's part has the shapes the build needs (fit resets the iterator afterwards).
        strategy = model.distribute_strategy
        if iterator is not None and multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(batches))
                break
            iterator = None
        return keras_build(model, iterator=iterator, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        # Keras reduces each log across workers with axis=0, which fails for scalars: average the
        # replicas' values instead, as it does on one worker.
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build  # pylint: disable=protected-access
    trainer.reduce_per_replica = reduce_per_replica
    trainer.llp_multi_worker_patched = True


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the one process that writes checkpoints, summaries and result files (every process
    outside a multi-worker run)."""
    return strategy.extended.should_checkpoint


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker builds the same (seeded) global batches and keeps its share of each, so a step of
    N workers equals one worker's step on the global batch. The default (AUTO) would shard a file-based
    source (TFDS) by files instead: other global batches, and no stored-order bank indices. (Keras
    `fit` under a multi-replica strategy iterates the dataset once before the iterator it trains on,
    so the dataset must yield the same batches on every iteration, as data.train_dataset's do.)"""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def checkpoint_manager(checkpoint, directory, strategy, max_to_keep):
    """The chief's manager saves in `directory`; another worker's saves go to a temporary directory
    that it removes again. Every worker restores from the chief's `directory`."""
    if is_chief(strategy):
        return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)
    return _WorkerCheckpointManager(checkpoint, max_to_keep)


class _WorkerCheckpointManager(tf.train.CheckpointManager):
    """A non-chief worker's manager (TensorFlow's multi-worker pattern): every worker must save, as
    variables may be read collectively, so this one saves into a private temporary directory and
    deletes it again."""

    def __init__(self, checkpoint, max_to_keep):
        scratch = os.path.join(tempfile.gettempdir(), f"llp-worker-checkpoints-{os.getpid()}")
        super().__init__(checkpoint, scratch, max_to_keep=max_to_keep)

    def save(self, *args, **kwargs):
        try:
            return super().save(*args, **kwargs)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def local_copies(strategy: tf.distribute.Strategy, variable) -> np.ndarray:
    """[replicas on this process, ...]: every local copy of a variable."""
    return np.stack([copy.numpy() for copy in strategy.experimental_local_results(variable)])
