"""Checkpoint files on disk: which ones a restore may take, what killed saves leave behind, and
writes that a kill cannot leave half done. No Keras here: llp_tf/resume.py saves and restores through
these.

A checkpoint is "whole" when its index and data read back; TensorFlow writes a new one under a
temporary name and records it only after, so a SIGKILL never makes a damaged one the newest recorded,
but a full disk, a truncated copy or a flipped byte can, and restore then falls back to an older one.
"""
import glob
import os
import shutil

import tensorflow as tf
from absl import logging

INTERRUPTED_DIR = "interrupted"  # beside the epoch checkpoints: the mid-epoch one of a stopped run
# What reading a damaged checkpoint raises: DataLossError for a bad checksum, NotFoundError for a
# missing file, IndexError for a truncated data file.
UNREADABLE = (tf.errors.OpError, IndexError)


def replace_atomically(path, write):
    """Writes through write(binary file) to a file beside `path`, then renames it to `path`: a kill
    leaves the old file or the new one, never a part of one."""
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        write(f)
    os.replace(partial, path)


def error_text(error):
    return error.message if isinstance(error, tf.errors.OpError) else str(error)


def remove_unrecorded_checkpoint(prefix):
    """Frees what a failed write of `prefix` left, unless the manager's state records it."""
    directory = os.path.dirname(prefix)
    state = tf.train.get_checkpoint_state(directory) if os.path.isdir(directory) else None
    if state and prefix in [os.path.join(directory, os.path.basename(p))
                            for p in state.all_model_checkpoint_paths]:
        return
    shutil.rmtree(f"{prefix}_temp", ignore_errors=True)
    for path in glob.glob(f"{glob.escape(prefix)}.index") + glob.glob(f"{glob.escape(prefix)}.data-*"):
        os.remove(path)


def remove_checkpoint_directory(directory):
    """Index files first: a kill part-way leaves no index whose data is gone."""
    for path in glob.glob(os.path.join(directory, "*.index")):
        os.remove(path)
    shutil.rmtree(directory, ignore_errors=True)


def checkpoint_paths(directory):
    """The checkpoints of `directory` a restore considers: those the manager's state file names and
    an interrupted one."""
    state = tf.train.get_checkpoint_state(directory) if os.path.isdir(directory) else None
    paths = [os.path.join(directory, os.path.basename(p))
             for p in (state.all_model_checkpoint_paths if state else [])]
    return paths + [p[:-len(".index")]
                    for p in glob.glob(os.path.join(directory, INTERRUPTED_DIR, "*.index"))]


def saved_checkpoints(directory, warn=True):
    """[(path, (epochs completed, steps done of the next epoch))], newest first, of the checkpoints
    of `directory` whose index reads. Others are skipped, with a warning if files of them remain."""
    found = []
    for path in checkpoint_paths(directory):
        if not glob.glob(f"{glob.escape(path)}.*"):
            continue  # recorded, then deleted by a sweep that a kill cut short
        try:
            found.append((path, saved_position(path)))
        except UNREADABLE as error:
            if warn:
                logging.warning("checkpoint %s is unreadable, skipped: %s", path, error_text(error))
    return sorted(found, key=lambda item: item[1], reverse=True)


def newest_whole_checkpoint(directory):
    """The newest checkpoint of `directory` (an epoch's or an interrupted one) whose every tensor reads
    back, for the tools that only read a run (llp-eval, llp-export, --init_from): damaged ones are
    skipped with a warning naming them. None when the directory holds no checkpoint."""
    saved, candidates = saved_checkpoints(directory), checkpoint_paths(directory)
    for path, _ in saved:
        try:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)  # checks the tensor's checksum
            return path
        except UNREADABLE as error:
            logging.warning("checkpoint %s does not read back whole, trying an older one: %s",
                            path, error_text(error))
    if candidates:
        raise ValueError(f"no checkpoint in {directory} reads back whole (tried {', '.join(candidates)})")
    return None


def saved_position(path):
    """(epochs completed, steps done of the next epoch) of a checkpoint, read from it."""
    reader = tf.train.load_checkpoint(path)
    epochs = int(reader.get_tensor("state/completed_epochs/.ATTRIBUTES/VARIABLE_VALUE"))
    steps_key = "progress/steps_in_epoch/.ATTRIBUTES/VARIABLE_VALUE"
    return epochs, int(reader.get_tensor(steps_key)) if reader.has_tensor(steps_key) else 0


def describe_position(position):
    epochs, steps = position
    return f"{epochs} epochs done" + (f", {steps} steps of epoch {epochs + 1}" if steps else "")


def remove_leftovers(directory, completed_epochs):
    """Deletes what killed saves left: TensorFlow's *_temp directories of unmerged shards, and the
    data of epoch checkpoints before `completed_epochs` whose index a killed sweep already deleted."""
    for leftover in glob.glob(os.path.join(directory, "*_temp")) + glob.glob(
            os.path.join(directory, INTERRUPTED_DIR, "*_temp")):
        shutil.rmtree(leftover, ignore_errors=True)
    for data_file in glob.glob(os.path.join(directory, "ckpt-*.data-*")):
        prefix = data_file.split(".data-")[0]
        number = prefix.rsplit("-", 1)[1]
        if number.isdigit() and int(number) < completed_epochs and not os.path.exists(f"{prefix}.index"):
            os.remove(data_file)


def check_checkpoint_shapes(path, state):
    """A checkpoint of another dataset size or embedding size is refused with a message saying which."""
    saved = dict(tf.train.list_variables(path))
    for name, variable in (("bank", state.bank), ("log_density", state.log_density)):
        key = f"state/{name}/.ATTRIBUTES/VARIABLE_VALUE"
        if key in saved and tuple(saved[key]) != tuple(variable.shape):
            raise ValueError(f"checkpoint {path} has {name} of shape {tuple(saved[key])} but this run "
                             f"needs {tuple(variable.shape)} (another dataset size, labelled count or "
                             "embedding size): use another --workdir")
