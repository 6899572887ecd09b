"""`FolderSource`: image files in DIR/<split>/<class>/, checked once on opening. Folder validation
(class folders alike in both splits, no empty class), the one decoding of a folder image, the bad-image
policy (refuse, or skip and list) and the skipped-files list written into a workdir."""
from __future__ import annotations

import errno
import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from llp_tf.config import BAD_IMAGE_POLICIES
from llp_tf.data.base import AUTOTUNE, ListedSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")  # what tf.io.decode_image reads
_BAD_FILES_SHOWN = 20  # in an error or warning; the skipped-files list has them all


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
        self.class_names = _class_folders(root, split_dirs["train"], bad_files)
        if not self.class_names:
            raise ValueError(f"folder source {root}: train/ has no class folders")
        _check_same_classes(self.class_names, _class_folders(root, split_dirs["test"], bad_files),
                            split_dirs["test"])
        self.num_classes = len(self.class_names)
        self.channels = 3
        self._stored, self._labels, sizes, listed_labels = {}, {}, [], {}
        for split, split_dir in split_dirs.items():
            paths, listed_labels[split] = _list_class_images(root, split_dir, self.class_names, bad_files)
            split_sizes = _decoded_sizes(paths, bad_files)
            usable = split_sizes[:, 0] >= 0
            self._stored[split], self._labels[split] = paths[usable], listed_labels[split][usable]
            sizes.append(split_sizes[usable])
        self.skipped_files = _apply_bad_image_policy(root, bad_files, on_bad_image)
        for split, split_dir in split_dirs.items():
            _check_no_empty_class(split_dir, self.class_names, listed_labels[split], self._labels[split])
        distinct_sizes = np.unique(np.concatenate(sizes), axis=0)
        self.image_shape = (*map(int, distinct_sizes[0]), 3) if len(distinct_sizes) == 1 else None

    def decode(self, path, label, index):
        image = _decode_image_file(path)
        return tf.ensure_shape(image, self.image_shape or (None, None, 3)), label, index


def _find_eval_folder(root: str) -> str:
    for name in ("test", "val"):
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError(f"folder source {root}: neither test/ nor val/ exists")


def _visible_entries(directory: str) -> list[os.DirEntry]:
    return sorted((entry for entry in os.scandir(directory) if not entry.name.startswith(".")),
                  key=lambda entry: entry.name)


def _folder_id(path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _kind(entry: os.DirEntry, enclosing: set) -> str:
    """"folder", "file", or why the entry cannot be used. enclosing: the _folder_id of every folder
    that contains the entry, so that a link back to one of them (up -> ..) is not followed for ever."""
    try:
        if entry.is_dir():
            if _folder_id(entry.path) in enclosing:
                return "a symbolic link to a folder that contains it (a loop): remove the link"
            return "folder"
        if entry.is_file():
            return "file"
        if entry.is_symlink() and not os.path.lexists(os.path.realpath(entry.path)):
            return "a symbolic link to nothing"
        return "not a regular file"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop (it leads back to itself): remove the link"
        return f"cannot be read ({error.strerror})"


def _class_folders(root: str, split_dir: str, bad_files: list) -> list[str]:
    """The class folder names of a split; files beside them go to bad_files."""
    enclosing = {_folder_id(root), _folder_id(split_dir)}
    kinds = [(entry, _kind(entry, enclosing)) for entry in _visible_entries(split_dir)]
    bad_files += [(os.fsencode(entry.path), "not inside a class folder" if kind == "file" else kind)
                  for entry, kind in kinds if kind != "folder"]
    folders = [entry for entry, kind in kinds if kind == "folder"]
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


def _list_class_images(root: str, split_dir: str, class_names: list[str], bad_files: list):
    """(paths as bytes, labels int64) of the image files, class by class, each class in sorted
    order of its subfolders and files; other entries go to bad_files. Paths are kept as bytes so that
    file names in any encoding reach tf.io.read_file unchanged."""
    paths, labels = [], []
    enclosing = {_folder_id(root), _folder_id(split_dir)}
    for label, name in enumerate(class_names):
        for entry, kind in _entries_under(os.path.join(split_dir, name), enclosing):
            if kind != "file":
                bad_files.append((os.fsencode(entry.path), kind))
            elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                bad_files.append((os.fsencode(entry.path), f"not a {'/'.join(IMAGE_EXTENSIONS)} file"))
            else:
                paths.append(os.fsencode(entry.path))
                labels.append(label)
    return np.array(paths, dtype=bytes), np.array(labels, dtype=np.int64)


def _entries_under(directory: str, enclosing: set):
    """(entry, kind) of the visible non-folder entries under directory, depth first, sorted by name
    at each level (kind as _kind gives it; a link back to an enclosing folder is an entry, not
    followed)."""
    enclosing = enclosing | {_folder_id(directory)}
    for entry in _visible_entries(directory):
        kind = _kind(entry, enclosing)
        if kind == "folder":
            yield from _entries_under(entry.path, enclosing)
        else:
            yield entry, kind


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
