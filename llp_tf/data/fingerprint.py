"""What identifies the examples behind a source's rows, so that a workdir can tell its own data from
other data of the same size, and the folder decode check's record, so that a restart decodes only
the files that changed.

- `FileTable`: one row per file a folder source listed, both splits: its path relative to the
  dataset's root, size, modification time (ns), content hash (64-bit farmhash of the bytes, taken in
  the same read as the decode check, by folders.py) and decoded height and width, or -1 and why the
  file cannot be used (then it is on the skip list). Rows whose size and modification time are those
  of the recorded row are not read again: a folder copied elsewhere (new times) is re-read and
  accepted when its contents are equal; an edited file is re-read and found changed. (A file
  rewritten with the same size within the file system's time resolution of its recorded time is the
  one change this cannot see.)
- `array_fingerprint`, `tfds_fingerprint`: the JSON summary of the other kinds of source (a content
  hash per array; name, version and splits of a TFDS dataset). A folder's summary is its counts; its
  rows are compared through the tables.
- `differences`: what changed between a recorded fingerprint and the current one, in a few lines.

Pure: NumPy and the standard library only, no TensorFlow, no flags, no workdir (llp_tf/workdir.py
names the file the table is kept in).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np

SHOWN = 5  # files named per kind of change in a message

_COLUMNS = ("paths", "sizes", "mtimes", "hashes", "heights", "widths", "errors")


@dataclasses.dataclass(frozen=True)
class FileTable:
    paths: np.ndarray  # bytes [n], relative to the dataset's root ('train/cat/01.png')
    sizes: np.ndarray  # int64 [n], -1 for an entry that is not a regular file
    mtimes: np.ndarray  # int64 [n], st_mtime_ns
    hashes: np.ndarray  # uint64 [n], 0 where the file was not read whole or did not decode
    heights: np.ndarray  # int64 [n], -1 when the file is skipped
    widths: np.ndarray  # int64 [n]
    errors: np.ndarray  # bytes [n], UTF-8: why the file is skipped, else b""

    @classmethod
    def empty(cls):
        return cls.from_rows([])

    @classmethod
    def from_rows(cls, rows):
        """rows: (path bytes, size, mtime_ns, hash, height, width, error str)."""
        columns = list(zip(*rows)) or [()] * len(_COLUMNS)
        columns[-1] = [error.encode() if isinstance(error, str) else error for error in columns[-1]]
        dtypes = (bytes, np.int64, np.int64, np.uint64, np.int64, np.int64, bytes)
        return cls(*(np.array(column, dtype) for column, dtype in zip(columns, dtypes)))

    @classmethod
    def concatenate(cls, tables):
        return cls(*(np.concatenate([getattr(t, name) for t in tables]) if tables else
                     getattr(cls.empty(), name) for name in _COLUMNS))

    def __len__(self):
        return len(self.paths)

    def kept(self) -> np.ndarray:
        """bool [n]: the files that are examples (decoded), in source order."""
        return self.heights >= 0

    def equals(self, other: FileTable) -> bool:
        return all(np.array_equal(getattr(self, name), getattr(other, name)) for name in _COLUMNS)

    def known_rows(self, paths: np.ndarray, sizes, mtimes) -> np.ndarray:
        """int64 [len(paths)]: the row of this table recording each of `paths` (bytes) with the same
        size and modification time, else -1 (the file must be read)."""
        if not len(self) or not len(paths):
            return np.full(len(paths), -1, np.int64)
        rows = self._path_order[np.minimum(np.searchsorted(self._sorted_paths, paths), len(self) - 1)]
        same = (self.paths[rows] == paths) & (self.sizes[rows] == sizes) & (self.mtimes[rows] == mtimes)
        return np.where(same, rows, -1)

    @functools.cached_property
    def _path_order(self):
        return np.argsort(self.paths, kind="stable")

    @functools.cached_property
    def _sorted_paths(self):
        return self.paths[self._path_order]

    def take(self, rows) -> FileTable:
        return FileTable(*(getattr(self, name)[rows] for name in _COLUMNS))

    def save(self, file):
        np.savez(file, **{name: getattr(self, name) for name in _COLUMNS})

    @classmethod
    def load(cls, path) -> FileTable:
        with np.load(path, allow_pickle=False) as saved:
            missing = set(_COLUMNS) - set(saved.files)
            if missing:
                raise ValueError(f"{path}: not a file table (missing {sorted(missing)})")
            return cls(*(saved[name] for name in _COLUMNS))


def folder_fingerprint(table: FileTable, splits) -> dict:
    """The JSON summary of a folder source: kind and counts (its rows are in the table)."""
    kept = table.kept()
    counts = {split: int(np.sum(kept & _under(table.paths, folder))) for split, folder in splits.items()}
    return {"kind": "folder", "files": counts, "skipped": int(np.sum(~kept))}


def array_fingerprint(arrays: dict) -> dict:
    """A SHA-256 per array (its dtype, shape and bytes). Class names are not data: renaming a class
    keeps every row."""
    hashes = {}
    for name, array in sorted(arrays.items()):
        array = np.ascontiguousarray(array)
        digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
        hashes[name] = digest.hexdigest()
    return {"kind": "arrays", "sha256": hashes}


def tfds_fingerprint(name: str, version: str, splits: dict, counts: dict) -> dict:
    return {"kind": "tfds", "name": name, "version": version, "splits": dict(splits),
            "examples": {split: int(n) for split, n in counts.items()}}


def differences(recorded: dict, current: dict, recorded_table: FileTable | None = None,
                current_table: FileTable | None = None) -> list[str]:
    """What differs between two fingerprints, one short line per kind of change; [] when they
    identify the same examples in the same rows. Folders compare their tables' kept files: path,
    size and content hash, in order."""
    if recorded.get("kind") != current.get("kind"):
        return [f"it was made for {recorded.get('kind')} data, these are {current.get('kind')} data"]
    if current["kind"] == "folder":
        if recorded_table is None:
            return ["the record of its folder's files is missing"]
        return _folder_differences(recorded_table, current_table)
    if current["kind"] == "arrays":
        return [f"the {name} differ" for name, digest in current["sha256"].items()
                if recorded["sha256"].get(name) != digest]
    return [f"{key} {recorded.get(key)} -> {current.get(key)}" for key in sorted(current)
            if recorded.get(key) != current.get(key)]


def _folder_differences(recorded: FileTable, current: FileTable) -> list[str]:
    old, new = recorded.take(recorded.kept()), current.take(current.kept())
    if (len(old) == len(new) and np.array_equal(old.paths, new.paths)
            and np.array_equal(old.sizes, new.sizes) and np.array_equal(old.hashes, new.hashes)):
        return []
    old_rows = {path: row for row, path in enumerate(old.paths.tolist())}
    new_rows = {path: row for row, path in enumerate(new.paths.tolist())}
    skipped_now = {path: error.decode(errors="replace")
                   for path, error in zip(current.paths.tolist(), current.errors.tolist()) if error}
    added = [path for path in new_rows if path not in old_rows]
    removed = [path for path in old_rows if path not in new_rows]
    changed = [path for path, row in new_rows.items() if path in old_rows
               and (old.sizes[old_rows[path]] != new.sizes[row] or old.hashes[old_rows[path]] != new.hashes[row])]
    lines = []
    for what, paths in (("added", added), ("removed", removed), ("changed", changed)):
        if paths:
            shown = [_shown(p) + (f" (now skipped: {skipped_now[p]})" if p in skipped_now else "")
                     for p in paths[:SHOWN]]
            more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
            lines.append(f"{len(paths)} file{'s' * (len(paths) != 1)} {what}: {', '.join(shown)}{more}")
    return lines or ["the same files in another order"]


def _under(paths: np.ndarray, folder: str) -> np.ndarray:
    prefix = folder.encode() + b"/"
    return np.array([path.startswith(prefix) for path in paths.tolist()], bool)


def _shown(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")

