"""The features file every program that reads features takes (llp-propagate, llp-compare-propagation).

A features file is a NumPy .npz with two arrays:
  features  float [N, D]  one row per example; rows are L2-normalised on reading (none may be all zero)
  labels    int [N]       the class of each row, -1 where it is unknown
llp-propagate propagates labels to the -1 rows; llp-compare-propagation scores methods against the
labels, so it needs every row's class. Files written before this format hold `embeddings` instead of
`features`: they are still read, with a one-line message saying the key is now `features`.
"""
import numpy as np
from absl import logging

from llp_tf.npz import open_npz, read_array

UNKNOWN = -1  # the label of a row whose class is not given
FEATURES_KEY = "features"
OLD_FEATURES_KEY = "embeddings"  # llp-propagate's key before the two formats were made one
NORMALISE_ROWS = 65536  # rows normalised at a time: a float64 copy of the whole file is not needed


def unit_rows(rows) -> np.ndarray:
    """float64 rows scaled to unit L2 norm (a zero row stays zero)."""
    rows = np.asarray(rows, np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def checked_unit_rows(features, origin, in_place: bool = False) -> np.ndarray:
    """float32 unit rows of `features` (normalised in float64, a block of rows at a time); ValueError
    naming `origin` if a row holds NaN or Inf or is all zero. in_place: a float32 `features` is
    overwritten rather than copied (at N = 1M rows of 128 a copy is half a gigabyte)."""
    if not np.isfinite(features).all():
        raise ValueError(f"{origin}: features hold NaN or Inf")
    zero_rows = int(np.sum(~features.any(axis=1)))
    if zero_rows:
        raise ValueError(f"{origin}: {zero_rows} feature rows are all zero")
    reuse = in_place and features.dtype == np.float32 and features.flags.writeable
    unit = features if reuse else np.empty(features.shape, np.float32)
    for start in range(0, len(features), NORMALISE_ROWS):
        unit[start:start + NORMALISE_ROWS] = unit_rows(features[start:start + NORMALISE_ROWS])
    return unit


def load_features(path):
    """(float32 unit rows [N, D], int64 labels [N] with -1 where unknown) from the features file at
    `path` (see the module docstring); ValueError naming what is wrong with it."""
    with open_npz(path) as archive:
        key = FEATURES_KEY
        if FEATURES_KEY not in archive.files and OLD_FEATURES_KEY in archive.files:
            logging.warning("%s: the key `%s` is now `%s`; reading `%s` as the features", path,
                         OLD_FEATURES_KEY, FEATURES_KEY, OLD_FEATURES_KEY)
            key = OLD_FEATURES_KEY
        missing = sorted({key, "labels"} - set(archive.files))
        if missing:
            raise ValueError(f"{path} lacks {missing} (it has {archive.files})")
        features, labels = read_array(archive, key, path), read_array(archive, "labels", path)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"{path}: features must be [N, D] and labels [N]; got {features.shape} and "
                         f"{labels.shape}")
    if not features.size:
        missing = "one row per example" if not len(features) else "one dimension per row"
        raise ValueError(f"{path}: the features are empty ({features.shape[0]} rows of "
                         f"{features.shape[1]} dimensions): write at least {missing}")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise ValueError(f"{path}: features must be numbers, got {features.dtype}")
    if not np.issubdtype(labels.dtype, np.integer) and not (
            np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))):
        raise ValueError(f"{path}: labels must be whole numbers (-1 where unknown), got {labels.dtype}")
    return checked_unit_rows(features, path, in_place=True), labels.astype(np.int64)


def check_all_known(labels, origin):
    """ValueError naming `origin` unless every row has its class (no label below 0)."""
    unknown = int(np.sum(np.asarray(labels) < 0))
    if unknown:
        raise ValueError(f"{origin}: {unknown} rows have no class (label < 0); labels must be non-negative "
                         "integers (every row's true class)")
