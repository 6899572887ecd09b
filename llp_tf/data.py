"""Image sources, the paper's labelled/kept subsets, and the tf.data pipelines LLP trains and evaluates on.

A *source* is a dataset with a train and a test split, named by a URI:

    tfds:NAME    a TensorFlow Datasets dataset ('train', and 'test' or else 'validation')
    idx:DIR      MNIST-format idx files (train-images-idx3-ubyte[.gz], ..., t10k-labels-idx1-ubyte[.gz])
    folder:DIR   DIR/train/<class>/**/*.{jpg,jpeg,png,gif,bmp,webp} and DIR/test/<class>/** (or
                 DIR/val/<class>/**); every file is decoded once on opening, bad ones are refused or
                 skipped (on_bad_image)
    npz:FILE     a .npz with x_train, y_train, x_test, y_test (uint8 images)

Every source yields (image uint8 [H, W, C], label int64, index int64) in a fixed source order, so a
training example is identified by its row in the source. `select_examples` picks the paper's
p %-labelled, q %-kept subset of the train rows; the positions in `Selection.rows` are the rows of the
memory bank, and `train_dataset` yields them as indices next to each augmented image.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from llp_tf.augment import CROP_AREA_RANGE, augment_image, resize_square
from llp_tf.config import BAD_IMAGE_POLICIES

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")  # what tf.io.decode_image reads
SKIPPED_FILES_NAME = "skipped_images.txt"
_BAD_FILES_SHOWN = 20  # in an error or warning; the skipped-files list has them all


# ----------------------------------------------------------------------------------------------
# Sources


class Source:
    """A dataset with splits 'train' and 'test' (test means test, or val/validation where that is
    what exists). Subclasses set the attributes and implement `labels` and `_encoded_examples`, and
    `_decode` when their stored form is not already a uint8 image."""

    num_classes: int
    class_names: list[str]
    image_shape: tuple[int, int, int] | None  # (H, W, C) when every image has this shape, else None
    channels: int  # 1 or 3
    # Largest shuffle buffer train_dataset uses when the caller gives none; None means the whole set.
    default_shuffle_buffer_limit: int | None = None
    # (path, why) of each file left out under on_bad_image="skip" (folder sources only).
    skipped_files: tuple[tuple[str, str], ...] = ()

    def labels(self, split: str) -> np.ndarray:
        """Every label of `split`, int64 [n], in source order."""
        raise NotImplementedError

    def examples(self, split: str, rows: np.ndarray | None = None) -> tf.data.Dataset:
        """(image uint8 [H, W, C], label int64, index int64) for the source `rows` of `split`, in the
        order given (None: all rows), where index is the position in `rows`. Unshuffled."""
        return self._encoded_examples(split, rows).map(
            self._decode, num_parallel_calls=AUTOTUNE, deterministic=True)

    def _encoded_examples(self, split: str, rows: np.ndarray | None) -> tf.data.Dataset:
        """Like `examples`, but with the image in its cheapest stored form (a path, encoded bytes),
        so that train_dataset can shuffle before paying for decoding."""
        raise NotImplementedError

    def _decode(self, stored_image, label, index):
        return stored_image, label, index


class ListedSource(Source):
    """A source whose splits are held as arrays: `_stored[split]` (images, or file paths) beside
    `_labels[split]`, row by row."""

    _stored: dict
    _labels: dict

    def labels(self, split):
        return self._labels[_check_split(split)].copy()

    def _encoded_examples(self, split, rows):
        split = _check_split(split)
        rows = _resolve_rows(rows, len(self._labels[split]))
        return tf.data.Dataset.from_tensor_slices(
            (self._stored[split][rows], self._labels[split][rows], np.arange(len(rows), dtype=np.int64)))


class ArraySource(ListedSource):
    """A source held in memory as uint8 arrays (the idx and npz forms)."""

    def __init__(self, x_train, y_train, x_test, y_test, class_names=None, origin="arrays"):
        self._stored = {"train": _as_image_array(x_train, f"{origin} x_train"),
                        "test": _as_image_array(x_test, f"{origin} x_test")}
        self._labels = {"train": _as_label_array(y_train, f"{origin} y_train"),
                        "test": _as_label_array(y_test, f"{origin} y_test")}
        for split in SPLITS:
            if len(self._stored[split]) != len(self._labels[split]):
                raise ValueError(f"{origin}: {len(self._stored[split])} {split} images but "
                                 f"{len(self._labels[split])} {split} labels")
        if self._stored["train"].shape[1:] != self._stored["test"].shape[1:]:
            raise ValueError(f"{origin}: train images are {self._stored['train'].shape[1:]} but test "
                             f"images are {self._stored['test'].shape[1:]}")
        largest_label = max(int(labels.max(initial=-1)) for labels in self._labels.values())
        if class_names is None:
            class_names = [str(c) for c in range(largest_label + 1)]
        self.class_names = [str(name) for name in class_names]
        self.num_classes = len(self.class_names)
        if largest_label >= self.num_classes:
            raise ValueError(f"{origin}: label {largest_label} but only {self.num_classes} class names")
        self.image_shape = tuple(int(d) for d in self._stored["train"].shape[1:])
        self.channels = self.image_shape[-1]



class FolderSource(ListedSource):
    """Image files in DIR/<split>/<class>/, subfolders of a class folder included and hidden entries
    ignored; classes are the sorted train subfolder names. Every image is decoded once here, as
    training decodes it, so that no file can fail mid-epoch. Files that are not decodable images
    (or lie outside any class folder) raise one error that lists them, or with on_bad_image="skip"
    are left out and listed in `skipped_files`. Images are decoded to 3 channels whatever they store
    (grayscale repeated, alpha dropped, CMYK converted), so mixed files are fine."""

    def __init__(self, root: str, on_bad_image: str = "error"):
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        split_dirs = {"train": os.path.join(root, "train"), "test": _find_eval_folder(root)}
        if not os.path.isdir(split_dirs["train"]):
            raise FileNotFoundError(f"folder source {root}: no train/ folder")
        bad_files = []  # (path, why) of every file that cannot be used, both splits
        self.class_names = _class_folders(split_dirs["train"], bad_files)
        if not self.class_names:
            raise ValueError(f"folder source {root}: train/ has no class folders")
        _check_same_classes(self.class_names, _class_folders(split_dirs["test"], bad_files),
                            split_dirs["test"])
        self.num_classes = len(self.class_names)
        self.channels = 3
        self._stored, self._labels, sizes, listed_labels = {}, {}, [], {}
        for split, split_dir in split_dirs.items():
            paths, listed_labels[split] = _list_class_images(split_dir, self.class_names, bad_files)
            split_sizes = _decoded_sizes(paths, bad_files)
            usable = split_sizes[:, 0] >= 0
            self._stored[split], self._labels[split] = paths[usable], listed_labels[split][usable]
            sizes.append(split_sizes[usable])
        self.skipped_files = _apply_bad_image_policy(root, bad_files, on_bad_image)
        for split, split_dir in split_dirs.items():
            _check_no_empty_class(split_dir, self.class_names, listed_labels[split], self._labels[split])
        distinct_sizes = np.unique(np.concatenate(sizes), axis=0)
        self.image_shape = (*map(int, distinct_sizes[0]), 3) if len(distinct_sizes) == 1 else None

    def _decode(self, path, label, index):
        image = _decode_image_file(path)
        return tf.ensure_shape(image, self.image_shape or (None, None, 3)), label, index


class TfdsSource(Source):
    """A TensorFlow Datasets dataset read in its stored (file) order, images decoded lazily."""

    # Shuffling happens on encoded images (ImageNet: ~110 kB each), so a full-set buffer is too big;
    # TFDS shuffles examples when it writes them, so a partial buffer still mixes well.
    default_shuffle_buffer_limit = 10_000

    def __init__(self, name: str, data_dir: str | None = None):
        import tensorflow_datasets as tfds  # only this source needs it, and it is slow to import

        self._tfds = tfds
        self._builder = _prepared_builder(tfds, name, data_dir)
        info = self._builder.info
        self._image_key, self._label_key = info.supervised_keys or ("image", "label")
        self._image_feature = info.features[self._image_key]
        label_feature = info.features[self._label_key]
        self.num_classes = int(label_feature.num_classes)
        self.class_names = list(label_feature.names)
        shape = tuple(self._image_feature.shape)
        self.channels = int(shape[-1])
        self.image_shape = shape if None not in shape else None
        self._split_names = {"train": "train", "test": _tfds_eval_split(name, info.splits)}
        # One file at a time, so that "source order" is the stored order whatever the read settings.
        self._read_config = tfds.ReadConfig(interleave_cycle_length=1)
        self._label_cache = {}

    def labels(self, split):
        return self._read_labels(_check_split(split)).copy()

    def _read_labels(self, split):
        """All labels of the split, read once in one pass that skips image decoding."""
        if split not in self._label_cache:
            labels = self._stored_examples(split).map(lambda image, label: label).batch(8192)
            self._label_cache[split] = np.concatenate(
                [np.zeros([0], np.int64)] + list(labels.as_numpy_iterator()))
        return self._label_cache[split]

    def _encoded_examples(self, split, rows):
        split = _check_split(split)
        stored = self._stored_examples(split).enumerate()
        if rows is None:
            return stored.map(lambda row, example: (*example, row))
        num_rows = len(self._read_labels(split))
        rows = _resolve_rows(rows, num_rows)
        if np.any(np.diff(rows) <= 0):
            raise ValueError("a TFDS source is read in stored order: rows must be strictly increasing")
        position_of_row = np.full(num_rows, -1, np.int64)
        position_of_row[rows] = np.arange(len(rows))
        position_of_row = tf.constant(position_of_row)
        return (stored
                .map(lambda row, example: (*example, tf.gather(position_of_row, row)))
                .filter(lambda image, label, position: position >= 0))

    def _decode(self, encoded_image, label, index):
        return self._image_feature.decode_example(encoded_image), label, index

    def _stored_examples(self, split):
        """(encoded image, label int64) in stored order; image decoding skipped."""
        examples = self._builder.as_dataset(
            split=self._split_names[split], shuffle_files=False, read_config=self._read_config,
            decoders={self._image_key: self._tfds.decode.SkipDecoding()})
        return examples.map(lambda example: (example[self._image_key],
                                             tf.cast(example[self._label_key], tf.int64)))


def load_source(uri: str, data_dir: str | None = None, on_bad_image: str = "error") -> Source:
    """Opens the source named by `uri` ('tfds:NAME', 'idx:DIR', 'folder:DIR' or 'npz:FILE');
    `data_dir` is the TFDS data directory (TFDS's default when None); on_bad_image ('error' or
    'skip') is what a folder source does with files that are not decodable images."""
    scheme, _, location = uri.partition(":")
    openers = {"tfds": lambda: TfdsSource(location, data_dir),
               "idx": lambda: load_idx_source(_existing_path(location, uri)),
               "folder": lambda: FolderSource(_existing_path(location, uri), on_bad_image),
               "npz": lambda: load_npz_source(_existing_path(location, uri))}
    if scheme not in openers:
        raise ValueError(f"unknown dataset {uri!r}: expected one of "
                         + ", ".join(f"'{name}:...'" for name in openers))
    if not location:
        raise ValueError(f"dataset {uri!r} names no {'dataset' if scheme == 'tfds' else 'path'}")
    return openers[scheme]()


def load_idx_source(directory: str) -> ArraySource:
    """MNIST / Fashion-MNIST idx files, gzipped or not; images get a channel axis [N, 28, 28, 1]."""
    arrays = {}
    for key, stem in (("x_train", "train-images-idx3-ubyte"), ("y_train", "train-labels-idx1-ubyte"),
                      ("x_test", "t10k-images-idx3-ubyte"), ("y_test", "t10k-labels-idx1-ubyte")):
        path = _find_idx_file(directory, stem)
        array = read_idx(path)
        expected_ndim = 3 if key.startswith("x") else 1
        if array.dtype != np.uint8 or array.ndim != expected_ndim:
            raise ValueError(f"{path}: expected uint8 with {expected_ndim} dimensions, "
                             f"got {array.dtype} {array.shape}")
        arrays[key] = array
    return ArraySource(**arrays, origin=directory)  # which adds the channel axis


def load_npz_source(path: str) -> ArraySource:
    """A .npz with x_train, y_train, x_test, y_test and, optionally, class_names."""
    with np.load(path, allow_pickle=False) as npz:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(npz.files)})")
        class_names = list(npz["class_names"]) if "class_names" in npz.files else None
        return ArraySource(npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"],
                           class_names=class_names, origin=path)


# idx format: 0, 0, a type code, the number of dimensions, then each dimension as big-endian uint32.
_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str) -> np.ndarray:
    """Parses one idx file (gzip detected from its content) into an array of its stored shape."""
    raw = _read_maybe_gzipped(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an idx file (magic number {raw[:4].hex() or 'missing'})")
    ndim, dtype = raw[3], _IDX_TYPES[raw[2]]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: idx header announces {ndim} dimensions but the file ends first")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data_size = math.prod(shape) * dtype.itemsize
    if len(raw) != header_size + data_size:
        raise ValueError(f"{path}: idx header says shape {shape} ({data_size} bytes of data) but the "
                         f"file has {len(raw) - header_size} bytes of data")
    return np.frombuffer(raw, dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------------------------
# The paper's labelled / kept subsets


@dataclasses.dataclass(frozen=True)
class Selection:
    rows: np.ndarray  # int64 [N] source rows of the training examples kept, sorted ascending
    is_labelled: np.ndarray  # bool [N]
    labels: np.ndarray  # int64 [N] true labels (hidden for unlabelled rows in training; diagnostics)

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
                     labels=_read_only(labels[rows]))


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


# ----------------------------------------------------------------------------------------------
# tf.data pipelines


def train_dataset(source: Source, selection: Selection, batch_size: int, image_size: int,
                  augment: bool = True, seed: int = 0, labelled_only: bool = False,
                  shuffle_buffer: int | None = None, labelled_per_batch: int = 0,
                  crop_area_min: float = CROP_AREA_RANGE[0]) -> tf.data.Dataset:
    """Endless batches (images float32 [B, S, S, C] in [0, 1], labels int64 [B], indices int64 [B])
    of the selected training examples: pass after pass, each pass a new shuffle and new augmentations
    drawn from `seed`, the partial last batch of a pass dropped; indices are bank rows (positions in
    selection.rows). Every iteration of the returned dataset yields the same batches (Keras under a
    multi-replica strategy iterates a dataset once before the iterator it trains on), and the same seed
    gives the same batches in a freshly built dataset. labelled_only keeps the labelled examples only
    (the supervised baseline) with the same indices.

    labelled_per_batch > 0 (a departure from the paper, which draws batches uniformly): every batch
    is that many labelled examples, from passes over the labelled examples, followed by batch_size
    minus that many unlabelled ones, from passes over the unlabelled examples.

    crop_area_min: the smallest share of the image area that the random resized crop keeps (the
    paper's 0.2 unless changed, a departure)."""
    all_rows = np.arange(len(selection.rows), dtype=np.int64)
    augmenter = (functools.partial(augment_image, image_size=image_size, crop_area_min=crop_area_min)
                 if augment else None)
    if labelled_only:
        return _batches(source, selection, all_rows[selection.is_labelled], batch_size, image_size,
                        augmenter, seed, shuffle_buffer, "labelled ")
    if not labelled_per_batch:
        return _batches(source, selection, all_rows, batch_size, image_size, augmenter, seed, shuffle_buffer)
    if not 0 < labelled_per_batch < batch_size:
        raise ValueError(f"labelled_per_batch={labelled_per_batch} must be between 0 and "
                         f"batch_size={batch_size}")
    labelled_seed, unlabelled_seed = (int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(2))
    labelled = _batches(source, selection, all_rows[selection.is_labelled], labelled_per_batch,
                        image_size, augmenter, labelled_seed, shuffle_buffer, "labelled ")
    unlabelled = _batches(source, selection, all_rows[~selection.is_labelled],
                          batch_size - labelled_per_batch, image_size, augmenter, unlabelled_seed,
                          shuffle_buffer, "unlabelled ")
    mixed = tf.data.Dataset.zip(unlabelled, labelled).map(
        lambda first, second: tuple(tf.concat([a, b], 0) for a, b in zip(first, second)))
    return _deterministic(mixed.prefetch(AUTOTUNE))


def _batches(source, selection, bank_rows, batch_size, image_size, augmenter, seed, shuffle_buffer,
             kind=""):
    """train_dataset's endless batches of the given bank rows (see there); augmenter: (image, seed) ->
    image, or None for the evaluation preprocessing."""
    if len(bank_rows) < batch_size:
        raise ValueError(f"{len(bank_rows)} {kind}training examples are fewer than "
                         f"batch_size={batch_size}: no full batch")
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    if shuffle_buffer is None:
        shuffle_buffer = min(len(bank_rows), source.default_shuffle_buffer_limit or len(bank_rows))
    stored = source._encoded_examples("train", selection.rows[bank_rows])  # pylint: disable=protected-access
    bank_row_of_position = tf.constant(bank_rows)

    def prepare(stored_example, example_seed):
        image, label, position = source._decode(*stored_example)  # pylint: disable=protected-access
        if augmenter is not None:
            image = augmenter(image, example_seed)
        else:
            image = preprocess_for_eval(image, image_size)
        return image, label, tf.gather(bank_row_of_position, position)

    def endless_passes(_):
        # Built inside flat_map, so every iteration of the returned dataset builds these afresh and
        # replays the same passes; the shuffle and the example seeds still change from pass to pass.
        shuffled = stored.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        # One stateless seed [2] per example: deterministic under parallel map.
        example_seeds = tf.data.Dataset.random(seed=augment_seed, rerandomize_each_iteration=True)
        return (tf.data.Dataset.zip(shuffled, example_seeds.batch(2))
                .map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
                .batch(batch_size, drop_remainder=True)
                .repeat())

    return _deterministic(tf.data.Dataset.range(1).flat_map(endless_passes).prefetch(AUTOTUNE))


def eval_dataset(source: Source, split: str, batch_size: int, image_size: int) -> tf.data.Dataset:
    """Batches (images float32 [B, S, S, C] in [0, 1], labels int64, indices int64) of every example of
    `split` in source order, preprocessed by `preprocess_for_eval`; the last batch may be smaller."""
    dataset = (source.examples(split)
               .map(lambda image, label, index: (preprocess_for_eval(image, image_size), label, index),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
               .batch(batch_size)
               .prefetch(AUTOTUNE))
    return _deterministic(dataset)


def preprocess_for_eval(images, image_size: int) -> tf.Tensor:
    """The one evaluation preprocessing, for an image [H, W, C] or a batch [B, H, W, C] (uint8, or
    float in [0, 1]): the central square crop resized to image_size (no-op when the images already
    are image_size square), as float32 in [0, 1]. Pure TF ops, so it can live in a SavedModel."""
    images = tf.image.convert_image_dtype(tf.convert_to_tensor(images), tf.float32)
    height, width = tf.shape(images)[-3], tf.shape(images)[-2]

    def crop_and_resize():
        side = tf.minimum(height, width)
        square = tf.image.crop_to_bounding_box(
            images, (height - side) // 2, (width - side) // 2, side, side)
        return resize_square(square, image_size)

    already_sized = tf.logical_and(tf.equal(height, image_size), tf.equal(width, image_size))
    resized = tf.cond(already_sized, lambda: images, crop_and_resize)
    return tf.ensure_shape(resized, images.shape[:-3] + (image_size, image_size, images.shape[-1]))


def _deterministic(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


# ----------------------------------------------------------------------------------------------
# Helpers


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected 'train' or 'test'")
    return split


def _resolve_rows(rows, num_rows: int) -> np.ndarray:
    if rows is None:
        return np.arange(num_rows, dtype=np.int64)
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-D integer array, got {rows.dtype} {rows.shape}")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= num_rows):
        raise ValueError(f"rows must lie in [0, {num_rows}), got [{rows.min()}, {rows.max()}]")
    return rows


def _check_fraction(name: str, value: float):
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # a frozen Selection should not change through its arrays either
    return array


def _round_half_up(x: float) -> int:
    # Not Python's round(): ties to even would turn 0.5 labelled examples into 0.
    return int(math.floor(x + 0.5))


def _existing_path(location: str, uri: str) -> str:
    path = os.path.expanduser(location)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset {uri!r}: {path} does not exist")
    return path


def _as_image_array(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: images must be [N, H, W] or [N, H, W, 1 or 3], got {x.shape}")
    return x


def _as_label_array(y, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # Keras-style [N, 1] labels
        y = y[:, 0]
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"{what}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise ValueError(f"{what}: negative label {y.min()}")
    return y.astype(np.int64)


def _find_idx_file(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"idx source {directory}: neither {stem}.gz nor {stem} found")


def _read_maybe_gzipped(path: str) -> bytes:
    with open(path, "rb") as file:
        raw = file.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: corrupt gzip data ({error})") from error


def _find_eval_folder(root: str) -> str:
    for name in ("test", "val"):
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError(f"folder source {root}: neither test/ nor val/ exists")


def _visible_entries(directory: str) -> list[os.DirEntry]:
    return sorted((entry for entry in os.scandir(directory) if not entry.name.startswith(".")),
                  key=lambda entry: entry.name)


def _class_folders(split_dir: str, bad_files: list) -> list[str]:
    """The class folder names of a split; files beside them go to bad_files."""
    entries = _visible_entries(split_dir)
    bad_files += [(os.fsencode(entry.path), "not inside a class folder")
                  for entry in entries if not entry.is_dir()]
    folders = [entry for entry in entries if entry.is_dir()]
    for folder in folders:
        if not folder.name.isprintable():  # undecodable bytes (surrogates), line breaks
            raise ValueError(f"{_shown(os.fsencode(folder.path))}: a class folder's name must be "
                             "printable UTF-8 (it becomes a class name): rename the folder")
    return [folder.name for folder in folders]


def _check_same_classes(train_classes: list[str], eval_classes: list[str], eval_dir: str):
    missing = sorted(set(train_classes) - set(eval_classes))
    if missing:
        raise ValueError(f"{eval_dir}: no folder for classes present in train: {missing}")
    unknown = sorted(set(eval_classes) - set(train_classes))
    if unknown:
        raise ValueError(f"{eval_dir}: classes {unknown} are not in train")


def _list_class_images(split_dir: str, class_names: list[str], bad_files: list):
    """(paths as bytes, labels int64) of the image files, class by class, each class in sorted
    order of its subfolders and files; other entries go to bad_files. Paths are kept as bytes so that
    file names in any encoding reach tf.io.read_file unchanged."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        for entry in _entries_under(os.path.join(split_dir, name)):
            if not entry.is_file():
                bad_files.append((os.fsencode(entry.path), "not a regular file"))
            elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                bad_files.append((os.fsencode(entry.path), f"not a {'/'.join(IMAGE_EXTENSIONS)} file"))
            else:
                paths.append(os.fsencode(entry.path))
                labels.append(label)
    return np.array(paths, dtype=bytes), np.array(labels, dtype=np.int64)


def _entries_under(directory: str):
    """Visible non-folder entries under directory, depth first, sorted by name at each level."""
    for entry in _visible_entries(directory):
        if entry.is_dir():
            yield from _entries_under(entry.path)
        else:
            yield entry


def _decode_image_file(path) -> tf.Tensor:
    """The one decoding of folder images: uint8 [H, W, 3] whatever the file stores (grayscale
    repeated, alpha dropped, CMYK converted by libjpeg); the first frame of an animation."""
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def _decoded_sizes(paths: np.ndarray, bad_files: list) -> np.ndarray:
    """(height, width) int64 [n, 2] of every image, fully decoded in parallel as training decodes
    it; -1 for the files that fail, which go to bad_files."""
    sizes = np.full((len(paths), 2), -1, np.int64)
    if not len(paths):
        return sizes
    decoded = (tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
               .map(lambda position, path: (position, tf.shape(_decode_image_file(path))[:2]),
                    num_parallel_calls=AUTOTUNE, deterministic=False)
               .ignore_errors()  # a failing file is dropped here, then decoded alone for its error
               .batch(4096))
    for positions, position_sizes in decoded.as_numpy_iterator():
        sizes[positions] = position_sizes
    bad_files += [(paths[i], _decode_error(paths[i])) for i in np.flatnonzero(sizes[:, 0] < 0)]
    return sizes


def _decode_error(path: bytes) -> str:
    try:
        _decode_image_file(tf.constant(path))
    except tf.errors.OpError as error:
        # Drop TF's function-node prefix and op-name suffix; keep the decoder's own words.
        message = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:\w+\].*", "", error.message)
        return " ".join(message.split())
    return "failed to decode once and then decoded: is the storage unreliable?"


def _shown(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")  # printable whatever the file name's bytes


def _apply_bad_image_policy(root: str, bad_files: list, on_bad_image: str) -> tuple:
    """Raises an error listing the bad files (on_bad_image="error"), or warns and returns them as
    (path, why) ("skip")."""
    if not bad_files:
        return ()
    bad_files = sorted(bad_files)
    listing = "".join(f"\n  {_shown(path)}: {why}" for path, why in bad_files[:_BAD_FILES_SHOWN])
    if len(bad_files) > _BAD_FILES_SHOWN:
        listing += f"\n  ... and {len(bad_files) - _BAD_FILES_SHOWN} more"
    if on_bad_image == "error":
        raise ValueError(f"folder source {root}: {len(bad_files)} files are not usable images "
                         f"(--on_bad_image=skip leaves them out):{listing}")
    logging.warning("folder source %s: skipping %d files that are not usable images:%s",
                    root, len(bad_files), listing)
    return tuple((_shown(path), why) for path, why in bad_files)


def _check_no_empty_class(split_dir: str, class_names: list[str], listed_labels, kept_labels):
    listed = np.bincount(listed_labels, minlength=len(class_names))
    kept = np.bincount(kept_labels, minlength=len(class_names))
    for label in np.flatnonzero(kept == 0):
        name = class_names[label]
        skipped = f" (all {listed[label]} of its files were skipped)" if listed[label] else ""
        raise ValueError(f"{os.path.join(split_dir, name)}: class {name!r} has no images{skipped}")


def write_skipped_files(skipped_files, directory: str):
    """Writes directory/skipped_images.txt: one line `path<TAB>why` per file of source.skipped_files."""
    path = os.path.join(directory, SKIPPED_FILES_NAME)
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(f"{skipped}\t{why}\n" for skipped, why in skipped_files)
    logging.warning("the %d skipped files are listed in %s", len(skipped_files), path)


def _prepared_builder(tfds, name: str, data_dir: str | None):
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
    except Exception as error:  # any TFDS failure; re-raised with the dataset named, cause chained
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise RuntimeError(f"TFDS dataset {name!r} (data_dir={data_dir!r}) could not be loaded or "
                           f"prepared: {type(error).__name__}: {first_line}") from error
    return builder


def _tfds_eval_split(name: str, splits) -> str:
    available = list(splits.keys())
    if not available:  # split names unknown (a mocked dataset): TFDS accepts any name
        return "test"
    for candidate in ("test", "validation"):
        if candidate in available:
            return candidate
    raise ValueError(f"TFDS dataset {name!r} has neither a 'test' nor a 'validation' split: {available}")
