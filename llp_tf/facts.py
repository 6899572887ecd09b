"""What a workdir records about its run beside config.json, so that a rerun can tell whether it is the
same run, and a trained run can be exported and evaluated without its training data:

    dataset.json     `Facts`: the dataset and its fingerprint (llp_tf/data/fingerprint.py), class
                     names, image shape and channels, the image size trained on, example and class
                     counts, embedding size (the backbone's settings are in config.json)
    data_files.npz   a folder dataset's data.FileTable: its files' hashes and decode results, which
                     later starts read instead of decoding the folder again
    split.npz        the labelled split

`check_workdir` compares a training job with what its workdir holds and writes nothing;
`record_workdir`, called only after that check, writes them, dataset.json last (its presence means
the others are whole). `read_facts` gives them back to llp_tf/finished.py. No flags here.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from absl import logging

from llp_tf.checkpoints import replace_atomically
from llp_tf.data import FileTable
from llp_tf.data.fingerprint import differences
from llp_tf.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class Facts:
    """dataset.json. Workdirs written before a field existed read it as None."""
    dataset: str
    num_examples: int  # bank rows
    num_classes: int
    embedding_dim: int
    class_names: list | None = None
    image_size: int | None = None  # the side of the square images the network was trained on
    channels: int | None = None
    image_shape: list | None = None  # [H, W, C] of every image, or None when they differ
    data: dict | None = None  # the source's fingerprint

    def standalone(self) -> bool:
        """True when these facts alone rebuild the network (no dataset needed)."""
        return None not in (self.class_names, self.image_size, self.channels)


def facts_of(experiment) -> Facts:
    """The Facts of an llp_tf.experiment.Experiment."""
    source = experiment.source
    return Facts(dataset=experiment.config.dataset, num_examples=int(len(experiment.selection.rows)),
                 num_classes=int(experiment.num_classes),
                 embedding_dim=int(experiment.config.embedding_dim),
                 class_names=[str(name) for name in source.class_names],
                 image_size=int(experiment.image_size), channels=int(source.channels),
                 image_shape=list(source.image_shape) if source.image_shape else None,
                 data=source.fingerprint())


def read_facts(workdir) -> Facts | None:
    """The Facts recorded in `workdir`, None when it has none yet."""
    path = Workdir(workdir).facts
    if not os.path.exists(path):
        return None
    with open(path) as f:
        values = json.load(f)
    known = {field.name for field in dataclasses.fields(Facts)}
    return Facts(**{key: value for key, value in values.items() if key in known})


def read_file_table(workdir) -> FileTable | None:
    """The folder files recorded in `workdir`, None when there are none (or they do not read)."""
    path = Workdir(workdir).data_files
    if not os.path.exists(path):
        return None
    try:
        return FileTable.load(path)
    except (OSError, ValueError) as error:
        logging.warning("%s does not read (%s): every file of the folder is decoded again", path, error)
        return None


def check_workdir(workdir, experiment):
    """Refuses, before anything is written, a workdir made for other data (any example in another
    row: the message says which files or arrays changed), another example or class count, embedding
    size or labelled split. Writes nothing."""
    recorded = read_facts(workdir)
    if recorded is None:
        return
    current = facts_of(experiment)
    changes = [f"it was made for {key} = {getattr(recorded, key)}, this run has {key} = "
               f"{getattr(current, key)}" for key in ("num_examples", "num_classes")
               if getattr(recorded, key) != getattr(current, key)]
    if recorded.data is None:
        logging.warning("%s records no fingerprint of its data (written by an older llp_tf): not "
                        "checked, recorded now", workdir)
    else:
        changes += differences(recorded.data, current.data, read_file_table(workdir),
                               experiment.source.file_table)
    if changes:
        raise ValueError(
            f"{workdir} was made for other data ({recorded.dataset}) than --dataset={current.dataset}: "
            f"{'; '.join(changes)}. Nothing in it was changed: train on these data with another "
            "--workdir (or rerun with the data it was made for)")
    if recorded.embedding_dim != current.embedding_dim:
        raise ValueError(f"{workdir} was made for embedding_dim = {recorded.embedding_dim}, this run has "
                         f"embedding_dim = {current.embedding_dim}: use another --workdir")
    split = np.load(Workdir(workdir).split)
    if not (np.array_equal(split["rows"], experiment.selection.rows)
            and np.array_equal(split["is_labelled"], experiment.selection.is_labelled)):
        raise ValueError(f"{workdir} holds another labelled split (other --split_seed, fractions or "
                         "data): use another --workdir")


def record_workdir(workdir, experiment):
    """Writes the facts, the folder's file table, the labelled split and the skipped-files list of
    the experiment into `workdir` (created if need be); a file whose content would not change is
    left as it is. Call check_workdir first."""
    files = Workdir(workdir)
    files.create()
    source, selection = experiment.source, experiment.selection
    if source.skipped_files:
        files.write_skipped_files(source.skipped_files)
    first_run = not os.path.exists(files.facts)
    if first_run:
        replace_atomically(files.split, lambda f: np.savez(
            f, rows=selection.rows, is_labelled=selection.is_labelled))
    table = source.file_table
    if table is not None:
        recorded_table = None if first_run else read_file_table(workdir)
        if recorded_table is None or not recorded_table.equals(table):
            replace_atomically(files.data_files, table.save)
    facts = dataclasses.asdict(facts_of(experiment))
    if first_run or dataclasses.asdict(read_facts(workdir)) != facts:
        files.write_json(files.facts, facts)  # last: its presence means the others are whole
