"""The files of one run's --workdir, each named here once, and its config.json read and written.

    WORKDIR/config.json          the TrainConfig of the run (written by llp-train, read by every tool)
            dataset.json         the run's shape: dataset, example and class counts, embedding size
            split.npz            the labelled split: kept rows and which of them are labelled
            skipped_images.txt   files of a folder dataset left out (--on_bad_image=skip)
            metrics.json         the final metrics of a finished llp-train
            checkpoints/         ckpt-<epochs done>, one per epoch
            checkpoints/interrupted/   the mid-epoch checkpoint of a stopped run
            tensorboard/         the summaries (callbacks.SummaryCallback)
            eval_<split>.json    what llp-eval writes by default

Only names and config.json here: opening a finished run (its newest checkpoint, the restored model)
is llp_tf/finished.py; the checkpoint files themselves are llp_tf/checkpoints.py.
"""
import dataclasses
import json
import os

from absl import logging

from llp_tf.checkpoints import INTERRUPTED_DIR, replace_atomically
from llp_tf.config import TrainConfig


class Workdir:
    """The paths of the files of the run in `path` (which need not exist yet)."""

    CONFIG = "config.json"
    FACTS = "dataset.json"
    SPLIT = "split.npz"
    SKIPPED_FILES = "skipped_images.txt"
    METRICS = "metrics.json"
    CHECKPOINTS = "checkpoints"
    TENSORBOARD = "tensorboard"

    def __init__(self, path):
        self.path = str(path)

    def __repr__(self):
        return f"Workdir({self.path!r})"

    def _file(self, name):
        return os.path.join(self.path, name)

    @property
    def config(self):
        return self._file(self.CONFIG)

    @property
    def facts(self):
        return self._file(self.FACTS)

    @property
    def split(self):
        return self._file(self.SPLIT)

    @property
    def skipped_files(self):
        return self._file(self.SKIPPED_FILES)

    @property
    def metrics(self):
        return self._file(self.METRICS)

    @property
    def checkpoints(self):
        return self._file(self.CHECKPOINTS)

    @property
    def interrupted_checkpoints(self):
        return os.path.join(self.checkpoints, INTERRUPTED_DIR)

    @property
    def tensorboard(self):
        return self._file(self.TENSORBOARD)

    def eval_results(self, split):
        """Where llp-eval writes the evaluation of `split` by default."""
        return self._file(f"eval_{split}.json")

    def check_writable(self):
        """ValueError unless this path is a folder this process can write in, or one it can create:
        not a file, nothing under a file, not in a read-only place. Writes nothing."""
        existing = os.path.abspath(self.path)
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            what = "a file" if os.path.exists(existing) else "a symbolic link to nothing"
            where = (f"is {what}" if existing == os.path.abspath(self.path)
                     else f"lies under {existing}, which is {what}")
            raise ValueError(f"--workdir={self.path} {where}: a run's workdir is a folder; give a new "
                             "folder (or the workdir of a run to resume)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"--workdir={self.path}: {existing} is not writable: give a --workdir "
                             "where this user may write")

    def create(self):
        """Makes the folder (and its parents); ValueError naming it if that fails."""
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--workdir={self.path} cannot be made: {error.strerror}") from None

    def write_config(self, config: TrainConfig):
        replace_atomically(self.config, lambda f: f.write(config.to_json().encode()))

    def write_json(self, path, values):
        """`values` as indented JSON at `path` (one of this workdir's files), replaced atomically."""
        replace_atomically(path, lambda f: f.write(json.dumps(values, indent=2).encode()))

    def write_skipped_files(self, skipped_files):
        """One line `path<TAB>why` per file of source.skipped_files."""
        with open(self.skipped_files, "w", encoding="utf-8") as file:
            file.writelines(f"{skipped}\t{why}\n" for skipped, why in skipped_files)
        logging.warning("the %d skipped files are listed in %s", len(skipped_files), self.skipped_files)

    def read_config(self) -> TrainConfig:
        """The TrainConfig recorded in config.json, as written (settings this version does not know
        are ignored with a warning). A missing workdir or config.json is named."""
        path = self.config
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"workdir {self.path} is a file, not the --workdir of an llp-train run")
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"workdir {self.path} does not exist")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: is {self.path} the --workdir of an llp-train run?")
        with open(path) as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from None
        known = {field.name for field in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            logging.warning("%s: ignoring settings this version does not know: %s", path, unknown)
        values = {key: value for key, value in values.items() if key in known}
        for field in dataclasses.fields(TrainConfig):  # JSON gives lists for the tuple settings
            if isinstance(field.default, tuple) and isinstance(values.get(field.name), list):
                values[field.name] = tuple(values[field.name])
        return TrainConfig(**values)
