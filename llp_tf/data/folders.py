"""`FolderSource`: image files in DIR/<split>/<class>/, checked once on opening. Folder validation
(class folders alike in both splits, no empty class), the one decoding of a folder image, the bad-image
policy (refuse, or skip and list) and the skipped-files list written into a workdir. The decode check
reads each file once, hashing it in the same read, and records what it found in a
fingerprint.FileTable; given the table of an earlier opening it reads only the files whose size or
modification time changed."""
from __future__ import annotations

import errno
import os
import re
import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging

from llp_tf.config import BAD_IMAGE_POLICIES
from llp_tf.data.base import AUTOTUNE, SPLITS, ListedSource
from llp_tf.data.fingerprint import FileTable, folder_fingerprint

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")  # what tf.io.decode_image reads
_BAD_FILES_SHOWN = 20  # in an error or warning; the skipped-files list has them all
_FILE_NAME_ENCODING = sys.getfilesystemencoding()


class FolderSource(ListedSource):
    """Image files in DIR/<split>/<class>/, subfolders of a class folder included and hidden entries
    ignored; classes are the sorted train subfolder names. Every image is decoded once here, as
    training decodes it, so that no file can fail mid-epoch (or taken as `known_files` recorded it,
    when its size and modification time are unchanged). Files that are not decodable images
    (or lie outside any class folder) raise one error that lists them, or with on_bad_image="skip"
    are left out and listed in `skipped_files`. Images are decoded to 3 channels whatever they store
    (grayscale repeated, alpha dropped, CMYK converted), so mixed files are fine."""

    def __init__(self, root: str, on_bad_image: str = "error", known_files: FileTable | None = None,
                 splits=SPLITS):
        """known_files: the file_table of an earlier opening of this folder (wherever it lay then):
        files with the size and modification time recorded there are not read again. splits: the
        splits to open (a finished run's evaluation opens one); without 'train', the classes are the
        subfolders of the split opened (training checked that they are the train split's)."""
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        started = time.perf_counter()
        split_dirs = {}
        if "train" in splits:
            split_dirs["train"] = os.path.join(root, "train")
            if not os.path.isdir(split_dirs["train"]):
                raise FileNotFoundError(f"folder source {root}: no train/ folder")
        if "test" in splits:
            split_dirs["test"] = _find_eval_folder(root)
        bad_files = []  # (path, why) of every file that cannot be used, both splits
        first = next(iter(split_dirs.values()))
        self.class_names = _class_folders(root, first, bad_files)
        if not self.class_names:
            raise ValueError(f"folder source {root}: {os.path.basename(first)}/ has no class folders")
        if len(split_dirs) == 2:
            _check_same_classes(self.class_names, _class_folders(root, split_dirs["test"], bad_files),
                                split_dirs["test"])
        self.num_classes = len(self.class_names)
        self.channels = 3
        self._stored, self._labels, sizes, listed_labels, tables = {}, {}, [], {}, []
        prefix = os.fsencode(os.path.join(root, ""))
        self.files_decoded = 0  # files read and decoded by this opening (the others were known)
        for split, split_dir in split_dirs.items():
            paths, listed_labels[split], stats = _list_class_images(
                root, split_dir, self.class_names, bad_files)
            table, decoded = _checked_files(paths, stats, prefix, bad_files, known_files)
            self.files_decoded += decoded
            usable = table.kept()
            self._stored[split], self._labels[split] = paths[usable], listed_labels[split][usable]
            sizes.append(np.stack([table.heights, table.widths], axis=1)[usable])
            tables.append(table)
        self.skipped_files = _apply_bad_image_policy(root, bad_files, on_bad_image)
        decode_failed = {bytes(path) for table in tables for path in table.paths[~table.kept()]}
        tables.append(FileTable.from_rows(
            (path[len(prefix):], -1, -1, 0, -1, -1, why) for path, why in sorted(bad_files)
            if path[len(prefix):] not in decode_failed))
        self.file_table = FileTable.concatenate(tables)
        self._split_folders = {split: os.path.basename(d) for split, d in split_dirs.items()}
        for split, split_dir in split_dirs.items():
            _check_no_empty_class(split_dir, self.class_names, listed_labels[split], self._labels[split])
        sizes = np.concatenate(sizes)
        self.image_shape = (*map(int, sizes[0]), 3) if np.all(sizes == sizes[0]) else None
        logging.info("folder source %s: %d files checked in %.1f s, %d of them read and decoded (the "
                     "others as recorded)", root, len(self.file_table), time.perf_counter() - started,
                     self.files_decoded)

    def fingerprint(self):
        return folder_fingerprint(self.file_table, self._split_folders)

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
    """(paths as bytes, labels int64, (size, st_mtime_ns) int64 [n, 2]) of the image files, class by
    class, each class in sorted order of its subfolders and files; other entries go to bad_files.
    Paths are kept as bytes so that file names in any encoding reach tf.io.read_file unchanged."""
    paths, labels, stats = [], [], []
    enclosing = {_folder_id(root), _folder_id(split_dir)}
    for label, name in enumerate(class_names):
        for entry, kind in _entries_under(os.path.join(split_dir, name), enclosing):
            if kind != "file":
                bad_files.append((os.fsencode(entry.path), kind))
            elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                bad_files.append((os.fsencode(entry.path), f"not a {'/'.join(IMAGE_EXTENSIONS)} file"))
            else:
                try:
                    stat = entry.stat()  # one stat call, cached by the entry
                    stats.append((stat.st_size, stat.st_mtime_ns))
                except OSError:
                    stats.append((-1, -1))  # gone since the listing: its read fails and names it
                paths.append(entry.path.encode(_FILE_NAME_ENCODING, "surrogateescape"))  # os.fsencode
                labels.append(label)
    return (np.array(paths, dtype=bytes), np.array(labels, dtype=np.int64),
            np.array(stats, np.int64).reshape(-1, 2))


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
    return _decode_image(tf.io.read_file(path))


def _decode_image(content) -> tf.Tensor:
    """The one decoding of folder images: uint8 [H, W, 3] whatever the file stores (grayscale
    repeated, alpha dropped, CMYK converted by libjpeg); the first frame of an animation."""
    return tf.io.decode_image(content, channels=3, expand_animations=False)


def _checked_files(paths: np.ndarray, stats: np.ndarray, prefix: bytes, bad_files: list,
                   known: FileTable | None):
    """(FileTable of `paths`, relative to `prefix`, with their (size, mtime) `stats`; how many files
    were read). Each file not known with its size and modification time is read once, hashed and
    fully decoded as training decodes it, in parallel; the others take their row of `known`. Files
    that fail go to bad_files."""
    relative = _without_prefix(paths, len(prefix))
    rows = (known.known_rows(relative, stats[:, 0], stats[:, 1]) if known is not None
            else np.full(len(paths), -1, np.int64))
    found = rows >= 0
    hashes, (heights, widths) = np.zeros(len(paths), np.uint64), np.full((2, len(paths)), -1, np.int64)
    errors = [b""] * len(paths)
    if np.any(found):
        hashes[found] = known.hashes[rows[found]]
        heights[found], widths[found] = known.heights[rows[found]], known.widths[rows[found]]
        for i in np.flatnonzero(found & (heights < 0)):
            errors[i] = known.errors[rows[i]]
    unread = np.flatnonzero(~found)
    if len(unread):
        checked = (tf.data.Dataset.from_tensor_slices((unread, paths[unread]))
                   .map(_hash_and_size, num_parallel_calls=AUTOTUNE, deterministic=False)
                   .ignore_errors()  # a failing file is dropped here, then decoded alone for its error
                   .batch(4096))
        for positions, position_hashes, sizes in checked.as_numpy_iterator():
            hashes[positions] = position_hashes
            heights[positions], widths[positions] = sizes[:, 0], sizes[:, 1]
        for i in unread[heights[unread] < 0]:
            errors[i] = _decode_error(paths[i]).encode()
    bad_files += [(paths[i], errors[i].decode(errors="replace")) for i in np.flatnonzero(heights < 0)]
    table = FileTable(relative, stats[:, 0], stats[:, 1], hashes, heights, widths, np.array(errors, bytes))
    return table, len(unread)


def _without_prefix(paths: np.ndarray, length: int) -> np.ndarray:
    """The byte strings `paths` (which all start with the same `length` bytes) without those bytes."""
    width = paths.dtype.itemsize
    if not len(paths) or width <= length:
        return np.array([path[length:] for path in paths.tolist()], bytes)
    characters = paths.view(np.uint8).reshape(len(paths), width)[:, length:]
    return np.ascontiguousarray(characters).view(f"S{width - length}").ravel()


def _hash_and_size(position, path):
    """(position, 64-bit farmhash of the file's bytes, decoded (height, width)): one read."""
    content = tf.io.read_file(path)
    hashed = tf.bitcast(tf.fingerprint(content[None])[0], tf.uint64)
    return position, hashed, tf.shape(_decode_image(content), out_type=tf.int64)[:2]


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
