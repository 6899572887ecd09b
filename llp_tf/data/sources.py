"""Opening a source from its URI: `load_source`, the one data entry point of every program.

A *source* is a dataset with a train and a test split, named by a URI:

    tfds:NAME    a TensorFlow Datasets dataset ('train', and 'test' or else 'validation')
    idx:DIR      MNIST-format idx files (train-images-idx3-ubyte[.gz], ..., t10k-labels-idx1-ubyte[.gz])
    folder:DIR   DIR/train/<class>/**/*.{jpg,jpeg,png,gif,bmp,webp} and DIR/test/<class>/** (or
                 DIR/val/<class>/**); every file is decoded once on opening, bad ones are refused or
                 skipped (on_bad_image)
    npz:FILE     a .npz with x_train, y_train, x_test, y_test (uint8 images) and, optionally,
                 class_names

Class names come from the source (folder names, an npz's class_names, the published names of the
Fashion-MNIST and MNIST idx files, TFDS's label names, else the label numbers) unless `class_names`
gives them.
"""
from __future__ import annotations

import os

from llp_tf.data.arrays import load_idx_source, load_npz_source
from llp_tf.data.base import SPLITS, Source
from llp_tf.data.fingerprint import FileTable
from llp_tf.data.folders import FolderSource
from llp_tf.data.tfds_source import TfdsSource


def load_source(uri: str, data_dir: str | None = None, on_bad_image: str = "error",
                class_names=(), known_files: FileTable | None = None, splits=SPLITS) -> Source:
    """Opens the source named by `uri` ('tfds:NAME', 'idx:DIR', 'folder:DIR' or 'npz:FILE');
    `data_dir` is the TFDS data directory (TFDS's default when None); on_bad_image ('error' or
    'skip') is what a folder source does with files that are not decodable images; class_names, when
    not empty, replaces the source's own names (one per class, in label order). Folder sources only:
    known_files, the file_table of an earlier opening, spares decoding the files it records
    unchanged; splits opens only these splits (a finished run's evaluation opens one)."""
    scheme, _, location = uri.partition(":")
    openers = {"tfds": lambda: TfdsSource(location, data_dir),
               "idx": lambda: load_idx_source(_existing_path(location, uri)),
               "folder": lambda: FolderSource(_existing_path(location, uri), on_bad_image, known_files,
                                              splits),
               "npz": lambda: load_npz_source(_existing_path(location, uri))}
    if scheme not in openers:
        raise ValueError(f"unknown dataset {uri!r}: expected one of "
                         + ", ".join(f"'{name}:...'" for name in openers))
    if not location:
        raise ValueError(f"dataset {uri!r} names no {'dataset' if scheme == 'tfds' else 'path'}")
    source = openers[scheme]()
    if class_names:
        source.class_names = checked_class_names(class_names, source.num_classes, uri)
    return source


def checked_class_names(names, num_classes: int, uri: str) -> list[str]:
    """`names` as a list of strings, or a ValueError naming what is wrong with them."""
    names = [str(name).strip() for name in names]
    if len(names) != num_classes:
        raise ValueError(f"--class_names gives {len(names)} names but {uri} has {num_classes} classes: "
                         f"give {num_classes} comma-separated names, in label order")
    if not all(names):
        raise ValueError(f"--class_names has an empty name at position {names.index('')}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--class_names repeats {', '.join(repeated)}: give each class its own name")
    return names


def _existing_path(location: str, uri: str) -> str:
    path = os.path.expanduser(location)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset {uri!r}: {path} does not exist")
    return path
