"""Opening a finished (or stopped) run's workdir: its config, its newest whole checkpoint, the model
restored from it, and that model's evaluation (what llp-eval writes).

    config = load_config("runs/my_run")            # for one device, in float32
    model, facts = restore_network("runs/my_run")  # latest whole checkpoint, or checkpoint=PREFIX
    model, experiment = restore_model("runs/my_run")  # the same, with the training data opened
    results = evaluate_workdir("runs/my_run", split="test")

restore_network rebuilds the network from what the workdir records (config.json, and dataset.json's
image size, channels and class names: llp_tf/facts.py), so export and evaluation work with the
training data moved away; evaluation opens only the split it evaluates. restore_model rebuilds the
whole Experiment, for the tools that read the training examples (analysis, first propagation).
Export, transfer, analysis and the tools open runs through here. No flags here.
"""
from __future__ import annotations

import dataclasses
import os

import contextlib

import keras
import numpy as np
import tensorflow as tf

from llp_tf import data
from llp_tf.checkpoints import check_checkpoint_shapes, newest_whole_checkpoint
from llp_tf.evaluation import evaluate_model
from llp_tf.experiment import Experiment, build_model, steps_per_epoch, training_checkpoint
from llp_tf.facts import Facts, facts_of, read_facts, read_file_table
from llp_tf.resume import Progress
from llp_tf.workdir import Workdir

EVAL_SPLITS = ("test", "train")


def load_config(workdir: str):
    """The TrainConfig of the run in `workdir` (its config.json), for one device and this workdir."""
    config = Workdir(workdir).read_config()
    # Serving needs no replicas: rebuild on one device (the workdir may have moved since training).
    # mixed_precision stays as trained: it decides the optimizer the checkpoint holds (restore_model
    # builds in float32 whatever it says; the checkpoint's variables are float32 either way).
    return dataclasses.replace(config, strategy="default", cpu_replicas=0, workdir=workdir)


def checkpoint_path(workdir: str, checkpoint: str | None = None) -> str:
    """The checkpoint prefix to restore: `checkpoint` (a prefix such as DIR/checkpoints/ckpt-7, or a
    directory, meaning its newest whole checkpoint), else the newest whole one under
    workdir/checkpoints (a damaged newer one is skipped with a warning)."""
    if checkpoint is None:
        directory = Workdir(workdir).checkpoints
        newest = newest_whole_checkpoint(directory)
        if newest is None:
            raise FileNotFoundError(f"no checkpoint in {directory}: has the run finished an epoch?")
        return newest
    if os.path.isdir(checkpoint):
        newest = newest_whole_checkpoint(checkpoint)
        if newest is None:
            raise FileNotFoundError(f"no checkpoint in directory {checkpoint}")
        return newest
    if not tf.io.gfile.exists(checkpoint + ".index"):
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (no {checkpoint}.index): give a "
                                "prefix such as WORKDIR/checkpoints/ckpt-3")
    return checkpoint


def restore_network(workdir: str, checkpoint: str | None = None) -> tuple[keras.Model, Facts]:
    """(model, facts): the LLPModel of the run in `workdir` with the weights and state of its latest
    checkpoint (or of `checkpoint`), restored whole (optimizer and progress too), built from the
    workdir's records alone (no dataset is opened), on one device in float32. A workdir written before
    dataset.json held image size, channels and class names is rebuilt through restore_model instead."""
    config = load_config(workdir)
    path = checkpoint_path(workdir, checkpoint)
    facts = read_facts(workdir)
    if facts is None or not facts.standalone():
        model, experiment = restore_model(workdir, path)
        return model, facts_of(experiment)
    is_labelled = np.load(Workdir(workdir).split)["is_labelled"]
    with _float32():  # the true labels only seed the state's labels, which the checkpoint replaces
        model = build_model(config, (facts.image_size, facts.image_size, facts.channels),
                            facts.num_classes, is_labelled, np.zeros(len(is_labelled), np.int64),
                            steps_per_epoch(config, facts.num_examples))
    _restore_whole(training_checkpoint(model, Progress()), model, path, workdir)
    return model, facts


def restore_model(workdir: str, checkpoint: str | None = None):
    """(model, experiment): as restore_network, but through the whole Experiment rebuilt from
    workdir/config.json, so the training dataset must still be readable (for the tools that read the
    training examples in bank order)."""
    config = load_config(workdir)
    path = checkpoint_path(workdir, checkpoint)
    with _float32():
        experiment = Experiment(config)
    _restore_whole(experiment.checkpoint, experiment.model, path, workdir)
    return experiment.model, experiment


@contextlib.contextmanager
def _float32():
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # serve in float32 whatever the process set
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _restore_whole(checkpoint, model, path, workdir):
    """Every value of checkpoint `path` (model, optimizer, state, progress) into `checkpoint`."""
    check_checkpoint_shapes(path, model.state)
    _ = checkpoint.save_counter  # created on first use; every checkpoint holds one
    try:  # the whole checkpoint: every value read, none missing
        checkpoint.restore(path).assert_consumed()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        message = getattr(error, "message", None) or str(error)
        raise ValueError(f"checkpoint {path} does not fit the model built from {Workdir(workdir).config} "
                         f"(was the backbone code or the config changed since training?): "
                         f"{message.strip()[:500]}") from None


def evaluate_workdir(workdir, checkpoint=None, split="test", knn_k=None, dataset=None) -> dict:
    """Restores the run in `workdir` (its latest checkpoint, or `checkpoint`: a prefix such as
    WORKDIR/checkpoints/ckpt-3, or a directory of checkpoints) and evaluates it on `split` of its
    dataset, or of `dataset` (a URI with the run's classes, e.g. the run's folder moved elsewhere).
    Only that split is opened (a folder needs only its test/ or val/ folder for split "test").

    split "test" is the held-out split (the one training reports as val_top1); "train" is every example
    of the training split, where knn_top1 is optimistic: the labelled examples are in the bank.
    knn_k: neighbours of knn_top1 (default: the run's eval_knn_k; 1 gives the 1-NN accuracy by which
    the paper compares ablations). The run is rebuilt by restore_network, on one device in float32.
    Returns the dict llp-eval writes as JSON.
    """
    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(EVAL_SPLITS)}")
    if knn_k is not None and knn_k < 1:
        raise ValueError(f"knn_k must be >= 1, got {knn_k}")
    config = load_config(workdir)  # a missing workdir or config.json fails before the rest
    path = checkpoint_path(workdir, checkpoint)  # resolved once: training may save meanwhile
    model, facts = restore_network(workdir, path)
    dataset = dataset or config.dataset
    source = data.load_source(dataset, config.data_dir, config.on_bad_image, config.class_names,
                              known_files=read_file_table(workdir), splits=(split,))
    if [str(name) for name in source.class_names] != facts.class_names or source.channels != facts.channels:
        raise ValueError(f"{dataset} has classes {source.class_names[:10]} and {source.channels} "
                         f"channels, the run in {workdir} was trained on {facts.class_names[:10]} and "
                         f"{facts.channels}: give a dataset of the run's classes")
    results = evaluate_model(model, data.eval_dataset(source, split, config.batch_size, facts.image_size),
                             facts.class_names, knn_k=knn_k or config.eval_knn_k, tau=config.tau)
    return {"workdir": workdir, "checkpoint": path, "epoch": int(model.state.completed_epochs.numpy()),
            "split": split, "dataset": dataset, "method": config.method, **results}
