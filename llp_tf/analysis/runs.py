"""A finished (or running) llp-train workdir as llp-analyze reads it: its final memory bank and split
(RunState, load_run_state), its aggregation scalars from TensorBoard (aggregation_curve), and the checks
that two runs can be compared class by class.

The bank is read from the workdir's latest checkpoint through finished.restore_model (the training data
must still be readable: it gives the true labels and class names).
"""
from __future__ import annotations

import dataclasses
import glob
import math
import os

import numpy as np
import tensorflow as tf

from llp_tf import finished
from llp_tf.workdir import Workdir

AGGREGATION_TAGS = ("aggregation/norm_mean", "aggregation/norm_mean_labelled")
EPOCH_TAG = "epoch"


# ----------------------------------------------------------------------------------------------
# The aggregation trajectory from TensorBoard


def _event_file_order(path):
    parts = os.path.basename(path).split(".")  # events.out.tfevents.<unix time>.<host>.<pid>.<n>.v2
    stamp = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
    return stamp, path


def read_scalars(logdir: str, tags) -> dict:
    """{tag: {step: value}} of the scalar summaries `tags` in logdir's event files (not its
    subdirectories), oldest file first, so a step written again after a resume keeps its last value."""
    wanted = set(tags)
    found = {tag: {} for tag in tags}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")), key=_event_file_order):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag not in wanted:
                        continue
                    if value.HasField("tensor"):
                        number = float(tf.make_ndarray(value.tensor))
                    else:
                        number = float(value.simple_value)
                    found[value.tag][int(event.step)] = number
        except tf.errors.DataLossError:  # the last record of a killed writer may be cut short
            continue
    return found


def aggregation_curve(workdir: str):
    """(epochs int [E], norm_mean [E], norm_mean_labelled [E]) from workdir/tensorboard: the
    aggregation scalars of each completed epoch (steps mapped to epochs with the `epoch` scalar written
    at the same step), in epoch order; NaN where the labelled-only value is missing."""
    logdir = Workdir(workdir).tensorboard
    if not os.path.isdir(logdir):
        raise FileNotFoundError(f"{logdir} not found: is {workdir} the --workdir of an llp-train run?")
    scalars = read_scalars(logdir, (EPOCH_TAG,) + AGGREGATION_TAGS)
    epoch_of_step = {step: int(round(value)) for step, value in scalars[EPOCH_TAG].items()}
    by_epoch = {}
    for step in sorted(scalars[AGGREGATION_TAGS[0]]):
        if step not in epoch_of_step:
            continue
        by_epoch[epoch_of_step[step]] = (scalars[AGGREGATION_TAGS[0]][step],
                                         scalars[AGGREGATION_TAGS[1]].get(step, math.nan))
    if not by_epoch:
        raise ValueError(f"no {AGGREGATION_TAGS[0]} scalars with an epoch in {logdir}: has the run "
                         "finished an epoch?")
    epochs = np.array(sorted(by_epoch), np.int64)
    values = np.array([by_epoch[e] for e in epochs], np.float64)
    return epochs, values[:, 0], values[:, 1]


# ----------------------------------------------------------------------------------------------
# A run's final state


@dataclasses.dataclass
class RunState:
    """What the analysis reads from a workdir: its config, split and final memory bank."""
    workdir: str
    method: str
    dataset: str
    backbone: str
    warmup_epochs: int  # the switch to LLP: the first propagation is at its end
    class_names: list
    rows: np.ndarray  # int64 [N] source rows of the bank
    true_labels: np.ndarray  # int64 [N]
    is_labelled: np.ndarray  # bool [N]
    current_labels: np.ndarray  # int64 [N] the state's labels (pseudo-labels for unlabelled rows)
    bank: np.ndarray  # float32 [N, D]
    epochs: int  # completed epochs of the restored checkpoint
    checkpoint: str

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def name(self):
        return f"{os.path.basename(os.path.normpath(self.workdir))} ({self.method}, {self.backbone})"


def switch_epoch(config) -> int:
    """The epoch at whose end an LLP run switched to LLP (0 for other methods). config.json holds the
    config as training resolved it, which is read as it is: resolving it again would refuse a supervised
    warm-up's (warmup_epochs=N with instance_epochs=0)."""
    return config.resolved_warmup_epochs() if config.method == "llp" else 0


def load_run_state(workdir: str, checkpoint: str | None = None) -> RunState:
    """The final bank and split of the run in `workdir` (its latest checkpoint, or `checkpoint`)."""
    workdir = str(workdir)
    checkpoint = finished.checkpoint_path(workdir, checkpoint)  # resolved (and read through) once
    model, run = finished.restore_model(workdir, checkpoint)
    state = model.state
    config = run.config
    return RunState(
        workdir=workdir, method=config.method, dataset=config.dataset, backbone=config.backbone,
        warmup_epochs=switch_epoch(config),
        class_names=[str(name) for name in run.source.class_names],
        rows=np.asarray(run.selection.rows), true_labels=np.asarray(run.selection.true_labels, np.int64),
        is_labelled=np.asarray(run.selection.is_labelled, bool),
        current_labels=state.labels.numpy().astype(np.int64), bank=state.bank.numpy(),
        epochs=int(state.completed_epochs.numpy()),
        checkpoint=checkpoint)


def check_comparable(first: RunState, second: RunState):
    """Refuses a comparison of runs on different training examples or classes (ValueError)."""
    hint = "the per-class comparison needs the same dataset and training split"
    if len(first.rows) != len(second.rows):
        raise ValueError(f"{second.workdir} has {len(second.rows)} training examples and "
                         f"{first.workdir} has {len(first.rows)}: {hint}")
    if first.num_classes != second.num_classes:
        raise ValueError(f"{second.workdir} has {second.num_classes} classes and {first.workdir} "
                         f"has {first.num_classes}: {hint}")
    if not (np.array_equal(first.rows, second.rows)
            and np.array_equal(first.true_labels, second.true_labels)):
        raise ValueError(f"{second.workdir} and {first.workdir} hold other training examples or "
                         f"labels (another dataset, --kept_fraction or --split_seed): {hint}")


def check_split_files(workdir, compare_workdir):
    """The same check as check_comparable from the workdirs' split.npz alone, before any restore."""
    splits = []
    for directory in (workdir, compare_workdir):
        path = Workdir(directory).split
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: is {directory} the --workdir of an llp-train run?")
        with np.load(path) as split:
            splits.append(np.asarray(split["rows"]))
    if len(splits[0]) != len(splits[1]):
        raise ValueError(f"{compare_workdir} has {len(splits[1])} training examples and {workdir} has "
                         f"{len(splits[0])}: the per-class comparison needs the same dataset and "
                         "training split")


def check_classes(classes, num_classes):
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("no class given")
    for c in classes:
        if not 0 <= c < num_classes:
            raise ValueError(f"class index {c} is out of range: the run has {num_classes} classes "
                             f"(0..{num_classes - 1})")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} repeat an index")
    return classes
