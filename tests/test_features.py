"""The one features file format (llp_tf/features.py): `features` + `labels` (-1 unknown), the old key
`embeddings` still read with a message, and the programs that read it."""
import numpy as np
import pytest
from absl import logging as absl_logging

from llp_tf import features as features_lib
from tests.conftest import run_tool


def write(path, key="features", labels=None, rows=None):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(40, 8)).astype(np.float32) * 3 if rows is None else rows
    labels = np.where(np.arange(40) % 4 == 0, np.arange(40) % 3, -1) if labels is None else labels
    np.savez(path, **{key: rows, "labels": labels})
    return rows, labels


def test_rows_are_unit_in_float64_and_labels_kept(tmp_path):
    rows, labels = write(tmp_path / "f.npz")
    features, read_labels = features_lib.load_features(tmp_path / "f.npz")
    assert features.dtype == np.float32 and read_labels.dtype == np.int64
    unit = (rows.astype(np.float64) / np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True))
    np.testing.assert_array_equal(features, unit.astype(np.float32))
    np.testing.assert_array_equal(read_labels, labels)


def test_old_key_is_read_with_a_message(tmp_path, monkeypatch):
    rows, _ = write(tmp_path / "old.npz", key="embeddings")
    messages = []
    monkeypatch.setattr(absl_logging, "warning", lambda text, *args: messages.append(text % args))
    features, _ = features_lib.load_features(tmp_path / "old.npz")
    assert len(messages) == 1 and "`embeddings` is now `features`" in messages[0]
    assert features.shape == rows.shape


@pytest.mark.parametrize("change, message", [
    (dict(key="vectors"), "lacks ['features']"),
    (dict(labels=np.zeros(39, np.int64)), "labels [N]"),
    (dict(labels=np.full(40, 0.5)), "whole numbers"),
    (dict(rows=np.zeros((40, 8), np.float32)), "40 feature rows are all zero"),
    (dict(rows=np.full((40, 8), np.nan, np.float32)), "NaN or Inf"),
])
def test_bad_files_are_named(tmp_path, change, message):
    write(tmp_path / "bad.npz", **change)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        features_lib.load_features(tmp_path / "bad.npz")


def test_check_all_known_names_the_unknown_rows():
    features_lib.check_all_known(np.array([0, 1, 2]), "x.npz")
    with pytest.raises(ValueError, match="x.npz: 2 rows have no class"):
        features_lib.check_all_known(np.array([0, -1, -1]), "x.npz")


@pytest.mark.slow
def test_compare_propagation_refuses_unknown_labels_in_one_line(tmp_path):
    write(tmp_path / "f.npz")
    result = run_tool("llp_tf.tools.compare_propagation", f"--features={tmp_path / 'f.npz'}",
                      "--methods=knn", check=False)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("llp-compare-propagation:")]
    assert "rows have no class" in line
