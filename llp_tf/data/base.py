"""What every image source is: the `Source` interface the pipelines read, and `ListedSource`, a
source held as per-row arrays. The kinds of source live beside this module (arrays.py, folders.py,
tfds_source.py); sources.py opens one from its URI.

Every source yields (image uint8 [H, W, C], label int64, index int64) in a fixed source order, so a
training example is identified by its row in the source. A source hands its examples out in two steps,
`encoded_examples` (the cheapest stored form: a path, encoded bytes) then `decode`, so that a pipeline
can shuffle before paying for decoding.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "test")


class Source:
    """A dataset with splits 'train' and 'test' (test means test, or val/validation where that is
    what exists). Subclasses set the attributes and implement `labels` and `encoded_examples`, and
    `decode` when their stored form is not already a uint8 image."""

    num_classes: int
    class_names: list[str]
    image_shape: tuple[int, int, int] | None  # (H, W, C) when every image has this shape, else None
    channels: int  # 1 or 3
    # Largest shuffle buffer train_dataset uses when the caller gives none; None means the whole set.
    default_shuffle_buffer_limit: int | None = None
    # (path, why) of each file left out under on_bad_image="skip" (folder sources only).
    skipped_files: tuple[tuple[str, str], ...] = ()
    # Folder sources: every listed file with its size, time, hash and decode result
    # (fingerprint.FileTable), the record a later opening reads instead of decoding again.
    file_table = None

    def fingerprint(self) -> dict:
        """What identifies this source's examples, as JSON (llp_tf/data/fingerprint.py); a folder's
        files are in its file_table."""
        raise NotImplementedError

    def labels(self, split: str) -> np.ndarray:
        """Every label of `split`, int64 [n], in source order."""
        raise NotImplementedError

    def examples(self, split: str, rows: np.ndarray | None = None) -> tf.data.Dataset:
        """(image uint8 [H, W, C], label int64, index int64) for the source `rows` of `split`, in the
        order given (None: all rows), where index is the position in `rows`. Unshuffled."""
        return self.encoded_examples(split, rows).map(
            self.decode, num_parallel_calls=AUTOTUNE, deterministic=True)

    def encoded_examples(self, split: str, rows: np.ndarray | None) -> tf.data.Dataset:
        """Like `examples`, but with the image in its cheapest stored form (a path, encoded bytes),
        so that train_dataset can shuffle before paying for decoding."""
        raise NotImplementedError

    def decode(self, stored_image, label, index):
        """One example of `encoded_examples` with its image decoded to uint8 [H, W, C]; traceable
        (pipelines map it). By default the stored image already is one."""
        return stored_image, label, index


class ListedSource(Source):
    """A source whose splits are held as arrays: `_stored[split]` (images, or file paths) beside
    `_labels[split]`, row by row."""

    _stored: dict
    _labels: dict

    def labels(self, split):
        return self._labels[self._opened(split)].copy()

    def encoded_examples(self, split, rows):
        split = self._opened(split)
        rows = resolve_rows(rows, len(self._labels[split]))
        return tf.data.Dataset.from_tensor_slices(
            (self._stored[split][rows], self._labels[split][rows], np.arange(len(rows), dtype=np.int64)))

    def _opened(self, split):
        if check_split(split) not in self._labels:
            raise ValueError(f"the {split} split of this source was not opened")
        return split


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected 'train' or 'test'")
    return split


def resolve_rows(rows, num_rows: int) -> np.ndarray:
    if rows is None:
        return np.arange(num_rows, dtype=np.int64)
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-D integer array, got {rows.dtype} {rows.shape}")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= num_rows):
        raise ValueError(f"rows must lie in [0, {num_rows}), got [{rows.min()}, {rows.max()}]")
    return rows
