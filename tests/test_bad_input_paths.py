"""Bad input that lies in a path: symbolic-link loops in a folder dataset, a --workdir that cannot be
a folder, files that are not .npz archives or hold Python objects, empty features, a test label no
training image has, and outputs that cannot be written. Each is refused with one line naming the
input and the fix, with no stack trace, before anything is written or computed."""
import os
import re

import numpy as np
import pytest

from llp_tf import data, features as features_lib, train
from llp_tf.tools import cli
from tests.conftest import TINY, run_tool
from tests.test_bad_input import tiny_config, write_plain_folder

# ---------------------------------------------------------------------------------------------
# Symbolic-link loops in a folder dataset


@pytest.fixture(scope="module")
def looped_folder(tmp_path_factory):
    """(root, {link: a word of its reason}) of a plain folder holding four kinds of loop."""
    root = write_plain_folder(str(tmp_path_factory.mktemp("looped")), per_class=2, per_class_test=1)
    os.symlink("self.png", f"{root}/train/cat/self.png")  # a link to itself
    os.symlink("b.png", f"{root}/train/dog/a.png")  # a <-> b
    os.symlink("a.png", f"{root}/train/dog/b.png")
    os.symlink("..", f"{root}/train/fish/up")  # a folder link to the folder holding its class
    os.symlink("..", f"{root}/test/up")  # beside the class folders, to the dataset's root
    return root, {f"{root}/train/cat/self.png": "symbolic link loop",
                  f"{root}/train/dog/a.png": "symbolic link loop",
                  f"{root}/train/dog/b.png": "symbolic link loop",
                  f"{root}/train/fish/up": "a folder that contains it",
                  f"{root}/test/up": "a folder that contains it"}


def test_symbolic_link_loops_are_named_or_skipped_not_followed(looped_folder):
    root, loops = looped_folder
    with pytest.raises(ValueError, match="5 files are not usable images") as error:
        data.load_source(f"folder:{root}")
    listed = dict(re.findall(r"^  (.+?): (.+)$", str(error.value), re.MULTILINE))
    assert set(listed) == set(loops)
    for path, reason in loops.items():
        assert reason in listed[path] and "remove the link" in listed[path], (path, listed[path])
    source = data.load_source(f"folder:{root}", on_bad_image="skip")
    assert sorted(path for path, _ in source.skipped_files) == sorted(loops)
    assert len(source.labels("train")) == 4 * 2 and len(source.labels("test")) == 4 * 1


# ---------------------------------------------------------------------------------------------
# The workdir: checked before the data, made only after it


@pytest.mark.parametrize("under", [False, True], ids=["a_file", "under_a_file"])
def test_a_workdir_that_cannot_be_a_folder_is_refused(tiny_npz, tmp_path, under):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("kept")
    workdir = blocker / "run" if under else blocker
    expected = f"lies under {blocker}, which is a file" if under else "is a file"
    with pytest.raises(ValueError, match=re.escape(f"--workdir={workdir} {expected}: a run's workdir "
                                                   "is a folder")):
        train.train(tiny_config(tiny_npz, workdir))
    assert blocker.read_text() == "kept"


def test_no_workdir_is_made_for_data_that_is_refused(tmp_path):
    x, y = np.zeros((40, 8, 8), np.uint8), np.arange(40) % 3
    y_test = np.array([0, 1, 2, 7])
    np.savez(tmp_path / "other_test_label.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y_test)
    workdir = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match=re.escape(
            "other_test_label.npz y_test: label 7 never occurs in y_train (its labels: 0..2)")):
        train.train(tiny_config(tmp_path / "other_test_label.npz", workdir))
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------
# .npz files: a features file, an npz dataset


def write_bad_npz(path, kind):
    """A file at `path` that is not a readable .npz of numbers, of the given kind."""
    rows = np.ones((6, 4), np.float32)
    if kind == "npy":
        np.save(path, rows)
        os.replace(f"{path}.npy", path)
    elif kind == "text":
        path.write_text("features,labels\n")
    elif kind == "object_features":
        np.savez(path, features=np.array([rows[0], "a"], dtype=object), labels=np.array([0, -1]))
    elif kind == "object_labels":
        np.savez(path, features=rows, labels=np.array([0, 1, -1, -1, -1, None], dtype=object))
    elif kind == "no_rows":
        np.savez(path, features=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    elif kind == "no_columns":
        np.savez(path, features=np.zeros((6, 0), np.float32), labels=np.zeros(6, np.int64))


@pytest.mark.parametrize("kind, message", [
    ("npy", "is an .npy file (one array, written by np.save): write the arrays into one .npz"),
    ("text", "is not an .npz archive: write the arrays into one .npz"),
    ("object_features", ": array 'features' holds Python objects (dtype=object)"),
    ("object_labels", ": array 'labels' holds Python objects (dtype=object)"),
    ("no_rows", ": the features are empty (0 rows of 4 dimensions): write at least one row"),
    ("no_columns", ": the features are empty (6 rows of 0 dimensions): write at least one dimension"),
])
def test_a_features_file_that_cannot_be_read_is_named(tmp_path, kind, message):
    path = tmp_path / "features.npz"
    write_bad_npz(path, kind)
    with pytest.raises(ValueError, match=re.escape(f"{path}{message}" if message[0] == ":"
                                                   else f"{path} {message}")):
        features_lib.load_features(str(path))


@pytest.mark.parametrize("kind, message", [
    ("npy", "is an .npy file"),
    ("text", "is not an .npz archive"),
    ("object_labels", ": array 'y_train' holds Python objects"),
    ("empty_train", ": x_train holds no images"),
    ("other_test_labels", " y_test: labels 7, 9 never occur in y_train (its labels: 0..2, 5)"),
])
def test_an_npz_dataset_that_cannot_be_read_is_named(tmp_path, kind, message):
    path = tmp_path / "dataset.npz"
    x, y = np.zeros((40, 8, 8), np.uint8), np.array([0, 1, 2, 5] * 10)
    arrays = dict(x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    if kind in ("npy", "text"):
        write_bad_npz(path, kind)
    else:
        if kind == "object_labels":
            arrays["y_train"] = np.array([*y[:-1], None], dtype=object)
        elif kind == "empty_train":
            arrays.update(x_train=x[:0], y_train=y[:0])
        else:
            arrays["y_test"] = np.array([0, 7, 9, 5])
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match=re.escape(f"{path}{message}" if message[0] in ": "
                                                   else f"{path} {message}")):
        data.load_source(f"npz:{path}")


# ---------------------------------------------------------------------------------------------
# Outputs: checked before the work


def test_an_output_that_cannot_be_written_is_refused_before_the_work(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "input.npz").write_bytes(b"x")
    cases = {
        "folder": "is a directory: name a file, e.g. {}/output.npz".format(tmp_path / "folder"),
        "folder/labels_out": "the output is a .npz file; give a name ending in .npz",
        "missing/out.npz": f"the folder {tmp_path / 'missing'} does not exist",
        "input.npz/out.npz": f"{tmp_path / 'input.npz'} is a file, not a folder",
        "input.npz": f"is the input file {tmp_path / 'input.npz'}",
    }
    for given, message in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            cli.check_output_file("output", str(tmp_path / given), ".npz",
                                  inputs=[str(tmp_path / "input.npz")])
    cli.check_output_file("output", str(tmp_path / "folder" / "out.npz"), ".npz")
    cli.check_output_file("output", str(tmp_path / "new" / "eval.json"), ".json", creates_folder=True)
    assert sorted(os.listdir(tmp_path)) == ["folder", "input.npz"]  # nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only folder")
def test_an_output_in_a_folder_this_user_cannot_write_is_refused(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o555)
    with pytest.raises(ValueError, match=re.escape(f"{folder} is not writable")):
        cli.check_output_file("output", str(folder / "out.npz"), ".npz")


# ---------------------------------------------------------------------------------------------
# The programs: one line, no stack trace, nothing written


@pytest.mark.slow
def test_the_programs_answer_each_bad_path_in_one_line(tmp_path):
    features = tmp_path / "features.npz"
    rng = np.random.default_rng(0)
    np.savez(features, features=rng.normal(size=(60, 4)), labels=np.where(np.arange(60) < 12,
                                                                         np.arange(60) % 3, -1))
    np.save(tmp_path / "rows.npy", np.ones((6, 4)))
    (tmp_path / "feat").mkdir()
    (tmp_path / "notes.txt").write_text("kept")
    before = sorted(os.listdir(tmp_path))
    propagate = ["llp_tf.tools.propagate", f"--features={features}"]
    runs = [
        ([*propagate, f"--output={tmp_path / 'feat' / 'labels_out'}"], "give a name ending in .npz"),
        ([*propagate, f"--output={tmp_path / 'feat'}"], "is a directory: name a file"),
        ([*propagate, f"--output={tmp_path / 'missing' / 'out.npz'}"], "does not exist"),
        (["llp_tf.tools.propagate", f"--features={tmp_path / 'rows.npy'}",
          f"--output={tmp_path / 'out.npz'}"], "rows.npy is an .npy file"),
        (["llp_tf.tools.train", f"--dataset=npz:{features}", f"--workdir={tmp_path / 'notes.txt'}", *TINY],
         "notes.txt is a file: a run's workdir is a folder"),
        (["llp_tf.tools.evaluate", f"--workdir={tmp_path / 'notes.txt'}"],
         "notes.txt is a file, not the --workdir of an llp-train run"),
    ]
    for command, message in runs:
        result = run_tool(*command, check=False)
        program = {"propagate": "llp-propagate", "train": "llp-train", "evaluate": "llp-eval"}[
            command[0].rsplit(".", 1)[1]]
        assert result.returncode == 1, (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        (line,) = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: ")]
        assert message in line, (message, line)
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "notes.txt").read_text() == "kept"
    assert not os.listdir(tmp_path / "feat")
