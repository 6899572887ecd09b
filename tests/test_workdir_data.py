"""The workdir knows its data: a rerun on other data of the same size is refused before anything is
written, a finished run is never rewritten by accident, a trained folder run exports and evaluates with
its training folder moved away, and an opening of a folder reads its record instead of decoding the
files again (llp_tf/facts.py, llp_tf/data/fingerprint.py)."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from llp_tf import data
from llp_tf.data import fingerprint
from tests.conftest import TINY, run_tool
from tests.datasets import write_image_folder, write_npz

ONE_EPOCH = [*TINY, "--epochs=1", "--instance_epochs=0"]


def train(dataset, workdir, *extra, check=True):
    return run_tool("llp_tf.tools.train", f"--dataset={dataset}", f"--workdir={workdir}", *ONE_EPOCH,
                    *extra, check=check)


def file_digests(directory):
    """{relative path: SHA-256} of every file under directory."""
    digests = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def assert_refused(workdir, dataset, *messages):
    before = file_digests(workdir)
    result = train(dataset, workdir, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("llp-train:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for message in ("was made for other data", "another --workdir", *messages):
        assert message in lines[0], lines[0]
    assert file_digests(workdir) == before  # config.json, metrics.json, checkpoints: byte-identical
    return lines[0]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """(image folder, workdir of a finished one-epoch LLP run on it)."""
    base = tmp_path_factory.mktemp("folder_run")
    root = write_image_folder(base / "images")
    train(f"folder:{root}", base / "run")
    return root, base / "run"


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    """(npz file, workdir of a finished one-epoch LLP run on it)."""
    base = tmp_path_factory.mktemp("npz_run")
    npz = write_npz(base / "a.npz")
    train(f"npz:{npz}", base / "run")
    return npz, base / "run"


@pytest.mark.slow
def test_another_npz_of_the_same_size_is_refused(npz_run, tmp_path):
    _, workdir = npz_run
    other = write_npz(tmp_path / "b.npz", seed=1)  # same counts, shapes and classes
    line = assert_refused(workdir, f"npz:{other}", "the train images differ", "the train labels differ")
    assert "a.npz" in line  # the data it was made for


@pytest.mark.slow
def test_a_folder_with_one_file_swapped_is_refused(folder_run, tmp_path):
    root, workdir = folder_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # times kept: only the swapped file is read again
    swapped = copy / "train" / "c1" / "003.png"
    Image.fromarray(np.full((12, 12, 3), 90, np.uint8)).save(swapped)
    assert_refused(workdir, f"folder:{copy}", "1 file changed: train/c1/003.png")


@pytest.mark.slow
def test_a_folder_with_a_file_added_and_one_removed_is_refused(folder_run, tmp_path):
    root, workdir = folder_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    os.remove(copy / "train" / "c0" / "000.png")
    shutil.copy(copy / "train" / "c2" / "001.png", copy / "train" / "c2" / "extra.png")
    assert_refused(workdir, f"folder:{copy}", "1 file added: train/c2/extra.png",
                   "1 file removed: train/c0/000.png")


@pytest.mark.slow
def test_a_finished_run_rerun_changes_nothing_and_reevaluate_recomputes(npz_run, tmp_path):
    npz, workdir = npz_run
    before = file_digests(workdir)
    result = train(f"npz:{npz}", workdir)
    assert "holds this run finished (1 epochs)" in result.stdout
    assert f"its metrics are in {workdir / 'metrics.json'}" in result.stdout
    assert file_digests(workdir) == before  # metrics.json and config.json byte-identical
    # --reevaluate (on a copy) computes the final metrics again from the last checkpoint.
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    train(f"npz:{npz}", copy, "--reevaluate")
    old, new = (json.loads((path / "metrics.json").read_text()) for path in (workdir, copy))
    assert new["wall_seconds"] != old["wall_seconds"]  # rewritten
    for key in ("val_top1", "val_top5", "knn_top1", "pseudo_label_accuracy", "epochs"):
        assert new[key] == pytest.approx(old[key], abs=1e-6), key


@pytest.mark.slow
def test_a_copied_folder_is_the_same_data(folder_run, tmp_path):
    """New modification times everywhere: every file is read again, and its content is the same."""
    root, workdir = folder_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copyfile)
    before = file_digests(workdir)
    result = train(f"folder:{copy}", workdir)
    assert "holds this run finished" in result.stdout
    assert file_digests(workdir) == before


@pytest.mark.slow
def test_export_and_eval_with_the_training_folder_moved_away(folder_run, tmp_path):
    root, workdir = folder_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    moved, train_away = tmp_path / "moved", tmp_path / "train_away"
    os.rename(root, moved)
    os.rename(moved / "train", train_away)  # only moved/test remains
    try:
        export_dir = tmp_path / "exported"
        run_tool("llp_tf.tools.export", f"--workdir={workdir}", f"--export_dir={export_dir}")
        names = (export_dir / "assets" / "class_names.txt").read_text().splitlines()
        assert names == ["c0", "c1", "c2", "c3"]
        output = tmp_path / "eval.json"
        run_tool("llp_tf.tools.evaluate", f"--workdir={workdir}", f"--dataset=folder:{moved}",
                 f"--output={output}")
        results = json.loads(output.read_text())
        assert results["num_examples"] == 16
        for key in ("top1", "knn_top1"):  # the checkpoint training evaluated last, on the same images
            assert results[key] == pytest.approx(metrics[f"val_{key}" if key == "top1" else key], abs=1e-6)
        missing = run_tool("llp_tf.tools.evaluate", f"--workdir={workdir}", f"--output={output}",
                           check=False)
        assert missing.returncode == 1 and "Traceback" not in missing.stderr
        assert f"llp-eval: dataset 'folder:{root}': {root} does not exist" in missing.stderr
    finally:
        os.rename(train_away, moved / "train")
        os.rename(moved, root)


def test_a_second_opening_decodes_only_changed_files(tmp_path):
    root = write_image_folder(tmp_path / "images")
    first = data.load_source(f"folder:{root}")
    assert first.files_decoded == 80 and len(first.file_table) == 80
    second = data.load_source(f"folder:{root}", known_files=first.file_table)
    assert second.files_decoded == 0 and second.file_table.equals(first.file_table)
    assert second.image_shape == first.image_shape and second.class_names == first.class_names
    touched, edited = (os.path.join(root, "train", "c3", name) for name in ("005.png", "006.png"))
    os.utime(touched, ns=(1, 1))  # a new time, the same bytes: read again, found the same
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(edited)
    third = data.load_source(f"folder:{root}", known_files=first.file_table)
    assert third.files_decoded == 2
    assert fingerprint.differences(first.fingerprint(), third.fingerprint(), first.file_table,
                                   third.file_table) == ["1 file changed: train/c3/006.png"]
    # Only the evaluated split is opened, with the run's classes.
    shutil.rmtree(os.path.join(root, "train"))
    test_only = data.load_source(f"folder:{root}", known_files=first.file_table, splits=("test",),
                                 class_names=first.class_names)
    assert test_only.files_decoded == 0 and len(test_only.labels("test")) == 16
    with pytest.raises(ValueError, match="train split of this source was not opened"):
        test_only.labels("train")
