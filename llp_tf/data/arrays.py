"""Sources held in memory as uint8 arrays: `ArraySource`, and the two file forms read into one,
MNIST-format idx files (`load_idx_source`, `read_idx`) and a .npz (`load_npz_source`).

Class names: an npz may carry a `class_names` array; idx files carry none, so the label files of
Fashion-MNIST and MNIST are recognised by their content (`known_idx_class_names`: the class counts of
both splits and the first labels of each, whatever the compression) and get their published names."""
from __future__ import annotations

import gzip
import math
import os

import numpy as np

from llp_tf.data.base import SPLITS, ListedSource
from llp_tf.npz import open_npz, read_array


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
        for split in SPLITS:
            if not len(self._labels[split]):
                raise ValueError(f"{origin}: x_{split} holds no images")
        train_classes = np.unique(self._labels["train"])
        unknown = np.setdiff1d(self._labels["test"], train_classes)
        if unknown.size:
            raise ValueError(f"{origin} y_test: label{'s' if unknown.size > 1 else ''} "
                             f"{', '.join(map(str, unknown[:10]))} never occur{'s' if unknown.size == 1 else ''} "
                             f"in y_train (its labels: {_label_ranges(train_classes)}); every test class "
                             "needs training images: relabel or drop those test images")
        largest_label = max(int(labels.max(initial=-1)) for labels in self._labels.values())
        if class_names is None:
            class_names = [str(c) for c in range(largest_label + 1)]
        self.class_names = [str(name) for name in class_names]
        self.num_classes = len(self.class_names)
        if largest_label >= self.num_classes:
            raise ValueError(f"{origin}: label {largest_label} but only {self.num_classes} class names "
                             f"({', '.join(self.class_names)}): give one name per class")
        self.image_shape = tuple(int(d) for d in self._stored["train"].shape[1:])
        self.channels = self.image_shape[-1]


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
    class_names = known_idx_class_names(arrays["y_train"], arrays["y_test"])
    return ArraySource(**arrays, class_names=class_names, origin=directory)  # adds the channel axis


# Label files recognised by content: (train class counts, test class counts, first train labels, first
# test labels) -> the dataset's class names, in label order.
_FASHION_MNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                        "Sneaker", "Bag", "Ankle boot"]
KNOWN_IDX_DATASETS = {
    "Fashion-MNIST": ((6000,) * 10, (1000,) * 10, (9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9),
                      (9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5), _FASHION_MNIST_NAMES),
    "MNIST": ((5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
              (980, 1135, 1032, 1010, 982, 892, 958, 1028, 1009, 974),
              (5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5), (7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6),
              [str(digit) for digit in range(10)]),
}


def known_idx_class_names(y_train, y_test):
    """The published class names when the labels are those of a dataset in KNOWN_IDX_DATASETS, else
    None (the classes are then named by their numbers)."""
    for train_counts, test_counts, train_first, test_first, names in KNOWN_IDX_DATASETS.values():
        if (tuple(np.bincount(y_train).tolist()) == train_counts
                and tuple(np.bincount(y_test).tolist()) == test_counts
                and tuple(y_train[:len(train_first)].tolist()) == train_first
                and tuple(y_test[:len(test_first)].tolist()) == test_first):
            return list(names)
    return None


def load_npz_source(path: str) -> ArraySource:
    """A .npz with x_train, y_train, x_test, y_test and, optionally, class_names."""
    with open_npz(path) as npz:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(npz.files)})")
        arrays = {key: read_array(npz, key, path) for key in ("x_train", "y_train", "x_test", "y_test")}
        class_names = ([str(name) for name in read_array(npz, "class_names", path)]
                       if "class_names" in npz.files else None)
        return ArraySource(**arrays, class_names=class_names, origin=path)


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


def _label_ranges(labels) -> str:
    """'0..2, 5' for the sorted distinct labels [0, 1, 2, 5]."""
    runs, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[i - 1] + 1:
            first, last = labels[start], labels[i - 1]
            runs.append(str(first) if first == last else f"{first}..{last}")
            start = i
    return ", ".join(runs[:5]) + (f", ... ({len(labels)} labels)" if len(runs) > 5 else "")


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
