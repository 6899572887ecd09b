"""The paper's labelled / kept subsets of the training rows: `select_examples` picks p % labelled
(class-balanced) among q % kept; the positions in `Selection.rows` are the rows of the memory bank."""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Selection:
    rows: np.ndarray  # int64 [N] source rows of the training examples kept, sorted ascending
    is_labelled: np.ndarray  # bool [N]
    true_labels: np.ndarray  # int64 [N] ground truth; of unlabelled rows read only by diagnostics

    @property
    def num_labelled(self) -> int:
        return int(self.is_labelled.sum())


def select_examples(labels: np.ndarray, labelled_fraction: float, kept_fraction: float = 1.0,
                    seed: int = 0, class_names=None) -> Selection:
    """The paper's regime of p % labels (class-balanced) among q % of the training images.

    For each class, in class order, a seeded permutation of its rows; the first round(p * n_c) are
    labelled (rounding halves up). Then, with the same generator, unlabelled rows are subsampled so
    that round(q * n) rows are kept in all. The labelled set does not depend on q. When class_names
    is given every one of its classes must have a labelled example; otherwise the labels' classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be non-negative, got {labels.min()}")
    if labels.size and class_names is not None and labels.max() >= len(class_names):
        raise ValueError(f"label {labels.max()} but only {len(class_names)} class names")
    _check_fraction("labelled_fraction", labelled_fraction)
    _check_fraction("kept_fraction", kept_fraction)
    classes = range(len(class_names)) if class_names is not None else np.unique(labels)
    rng = np.random.default_rng(seed)

    labelled_rows = [_labelled_rows_of_class(labels, c, labelled_fraction, rng, class_names)
                     for c in classes]
    labelled_rows = np.sort(np.concatenate([np.zeros([0], np.int64)] + labelled_rows))
    num_kept = _round_half_up(kept_fraction * len(labels))
    if num_kept < len(labelled_rows):
        raise ValueError(
            f"kept_fraction={kept_fraction} keeps {num_kept} of {len(labels)} images, fewer than the "
            f"{len(labelled_rows)} labelled ones; "
            f"use kept_fraction >= {len(labelled_rows) / len(labels):.4g}")
    unlabelled_rows = np.setdiff1d(np.arange(len(labels)), labelled_rows)
    kept_unlabelled = rng.choice(unlabelled_rows, size=num_kept - len(labelled_rows), replace=False)

    rows = np.sort(np.concatenate([labelled_rows, kept_unlabelled])).astype(np.int64)
    return Selection(rows=_read_only(rows), is_labelled=_read_only(np.isin(rows, labelled_rows)),
                     true_labels=_read_only(labels[rows]))


def _labelled_rows_of_class(labels, c, fraction, rng, class_names):
    rows_of_class = np.flatnonzero(labels == c)
    num_labelled = _round_half_up(fraction * len(rows_of_class))
    if num_labelled == 0:
        name = f"class {class_names[c]!r} (label {c})" if class_names is not None else f"class {c}"
        if len(rows_of_class) == 0:
            raise ValueError(f"{name} has no training examples, so it cannot have a labelled one")
        raise ValueError(
            f"labelled_fraction={fraction} leaves {name} with no labelled example (it has "
            f"{len(rows_of_class)} training examples); it needs labelled_fraction >= "
            f"{0.5 / len(rows_of_class):.4g}")
    return rng.permutation(rows_of_class)[:num_labelled]


def _check_fraction(name: str, value: float):
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # a frozen Selection should not change through its arrays either
    return array


def _round_half_up(x: float) -> int:
    # Not Python's round(): ties to even would turn 0.5 labelled examples into 0.
    return int(math.floor(x + 0.5))
