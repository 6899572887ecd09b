"""`TfdsSource`: a TensorFlow Datasets dataset read in its stored order, images decoded lazily."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from llp_tf.data.base import Source, check_split, resolve_rows
from llp_tf.data.fingerprint import tfds_fingerprint


class TfdsSource(Source):
    """A TensorFlow Datasets dataset read in its stored (file) order, images decoded lazily."""

    # Shuffling happens on encoded images (ImageNet: ~110 kB each), so a full-set buffer is too big;
    # TFDS shuffles examples when it writes them, so a partial buffer still mixes well.
    default_shuffle_buffer_limit = 10_000

    def __init__(self, name: str, data_dir: str | None = None):
        import tensorflow_datasets as tfds  # optional-speed import, not a loop dodge: only this source needs it, and it is slow

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
        return self._read_labels(check_split(split)).copy()

    def fingerprint(self):
        info = self._builder.info
        return tfds_fingerprint(info.name, str(info.version), self._split_names,
                                {split: len(self._read_labels(split)) for split in self._split_names})

    def _read_labels(self, split):
        """All labels of the split, read once in one pass that skips image decoding."""
        if split not in self._label_cache:
            labels = self._stored_examples(split).map(lambda image, label: label).batch(8192)
            self._label_cache[split] = np.concatenate(
                [np.zeros([0], np.int64)] + list(labels.as_numpy_iterator()))
        return self._label_cache[split]

    def encoded_examples(self, split, rows):
        split = check_split(split)
        stored = self._stored_examples(split).enumerate()
        if rows is None:
            return stored.map(lambda row, example: (*example, row))
        num_rows = len(self._read_labels(split))
        rows = resolve_rows(rows, num_rows)
        if np.any(np.diff(rows) <= 0):
            raise ValueError("a TFDS source is read in stored order: rows must be strictly increasing")
        position_of_row = np.full(num_rows, -1, np.int64)
        position_of_row[rows] = np.arange(len(rows))
        position_of_row = tf.constant(position_of_row)
        return (stored
                .map(lambda row, example: (*example, tf.gather(position_of_row, row)))
                .filter(lambda image, label, position: position >= 0))

    def decode(self, encoded_image, label, index):
        return self._image_feature.decode_example(encoded_image), label, index

    def _stored_examples(self, split):
        """(encoded image, label int64) in stored order; image decoding skipped."""
        examples = self._builder.as_dataset(
            split=self._split_names[split], shuffle_files=False, read_config=self._read_config,
            decoders={self._image_key: self._tfds.decode.SkipDecoding()})
        return examples.map(lambda example: (example[self._image_key],
                                             tf.cast(example[self._label_key], tf.int64)))


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
