"""Opening a finished (or stopped) run's workdir: its config, its newest whole checkpoint, the model
restored from it, and that model's evaluation (what llp-eval writes).

    config = load_config("runs/my_run")            # for one device, in float32
    model, experiment = restore_model("runs/my_run")  # latest whole checkpoint, or checkpoint=PREFIX
    results = evaluate_workdir("runs/my_run", split="test")

The run is rebuilt from workdir/config.json, so its training dataset must still be readable (it gives
the image size, channels, class names and the bank's size). Export, transfer, analysis and the tools
open runs through here. No flags here.
"""
from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf

from llp_tf import data
from llp_tf.checkpoints import check_checkpoint_shapes, newest_whole_checkpoint
from llp_tf.evaluation import evaluate_model
from llp_tf.experiment import Experiment
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


def restore_model(workdir: str, checkpoint: str | None = None):
    """(model, experiment): the LLPModel of the run in `workdir` with the weights and state of its
    latest checkpoint (or of `checkpoint`), restored whole (optimizer and progress too). Rebuilds the Experiment
    from workdir/config.json on the default strategy and in float32, so the training dataset must
    still be readable (it gives the image size, channels, class names and the bank's size)."""
    config = load_config(workdir)
    path = checkpoint_path(workdir, checkpoint)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # serve in float32 whatever the process set
    try:
        experiment = Experiment(config)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    model = experiment.model
    check_checkpoint_shapes(path, model.state)
    _ = experiment.checkpoint.save_counter  # created on first use; every checkpoint holds one
    try:  # the whole checkpoint (model, optimizer, state, progress): every value read, none missing
        experiment.checkpoint.restore(path).assert_consumed()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        message = getattr(error, "message", None) or str(error)
        raise ValueError(f"checkpoint {path} does not fit the model built from {Workdir(workdir).config} "
                         f"(was the backbone code or the config changed since training?): "
                         f"{message.strip()[:500]}") from None
    return model, experiment


def evaluate_workdir(workdir, checkpoint=None, split="test", knn_k=None) -> dict:
    """Restores the run in `workdir` (its latest checkpoint, or `checkpoint`: a prefix such as
    WORKDIR/checkpoints/ckpt-3, or a directory of checkpoints) and evaluates it on `split`.

    split "test" is the held-out split (the one training reports as val_top1); "train" is every example
    of the training split, where knn_top1 is optimistic: the labelled examples are in the bank.
    knn_k: neighbours of knn_top1 (default: the run's eval_knn_k; 1 gives the 1-NN accuracy by which
    the paper compares ablations). The run is rebuilt by restore_model, on one device in float32.
    Returns the dict llp-eval writes as JSON.
    """
    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(EVAL_SPLITS)}")
    config = load_config(workdir)  # a missing workdir or config.json fails before the rest
    path = checkpoint_path(workdir, checkpoint)  # resolved once: training may save meanwhile
    model, experiment = restore_model(workdir, path)
    dataset = data.eval_dataset(experiment.source, split, config.batch_size, experiment.image_size)
    if knn_k is not None and knn_k < 1:
        raise ValueError(f"knn_k must be >= 1, got {knn_k}")
    results = evaluate_model(model, dataset, experiment.source.class_names,
                             knn_k=knn_k or config.eval_knn_k, tau=config.tau)
    return {"workdir": workdir, "checkpoint": path, "epoch": int(model.state.completed_epochs.numpy()),
            "split": split, "dataset": config.dataset, "method": config.method, **results}
