"""llp-compare-propagation on tiny clustered features: Table 5's protocol prints a row per method and
its LLP / kNN accuracies are those of llp_tf.propagation on the same draws; the scale sweep runs each
method in its own capped process and reports where a global method stops."""
import json
import re

import numpy as np
import pytest

from llp_tf import propagation, propagation_comparison
from tests.conftest import run_tool

pytestmark = pytest.mark.slow  # every test here starts a program or trains a run

TOOL = "llp_tf.tools.compare_propagation"
ALL_METHODS = ("llp", "knn", "label_spreading_knn", "label_spreading_rbf", "label_propagation_knn",
               "label_propagation_rbf", "diffusion")
SMALL_PROTOCOL = ["--classes=4", "--images_per_class=30", "--labelled_per_class=3", "--subsamples=3",
                  "--k=3", "--t=5", "--tau=0.1", "--diffusion_k=10"]


@pytest.fixture(scope="module")
def features_npz(tmp_path_factory):
    """480 rows of 16-D features around 6 class centres."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 80)
    features = rng.normal(size=(6, 16))[labels] + rng.normal(size=(480, 16))
    path = tmp_path_factory.mktemp("features") / "features.npz"
    np.savez(path, features=features.astype(np.float32), labels=labels)
    return path


def test_protocol_prints_every_method_and_matches_propagation(features_npz, tmp_path):
    output = tmp_path / "out.json"
    result = run_tool(TOOL, f"--features={features_npz}", *SMALL_PROTOCOL, f"--output_json={output}")
    for name in ALL_METHODS:
        assert re.search(rf"^\| {name} \| \d+\.\d ± \d+\.\d \| \d+\.\d+ \|$", result.stdout, re.M), name
    report = json.loads(output.read_text())
    with np.load(features_npz) as archive:
        features, labels = archive["features"], archive["labels"]
    norms = np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)
    features = (features / norms).astype(np.float32)  # as the tool normalises (in float64)
    draws = report["subsamples"]["subsamples"]
    assert len(draws) == 3 and len({tuple(d["rows"]) for d in draws}) == 3
    for method, use_density in (("llp", True), ("knn", False)):
        expected = []
        for draw in draws:
            rows, is_labelled = np.array(draw["rows"]), np.array(draw["is_labelled"])
            truth = np.searchsorted(draw["classes"], labels[rows])
            predicted = propagation.propagate(features[rows], is_labelled, truth, 4, k=3, t=5, tau=0.1,
                                              use_density=use_density).labels
            expected.append(np.mean(predicted[~is_labelled] == truth[~is_labelled]))
        assert report["subsamples"]["methods"][method]["accuracy"] == pytest.approx(expected, abs=1e-12)
        assert min(expected) > 0.5  # four well-separated classes: far above chance (25 %)


def test_sweep_reports_where_a_dense_method_runs_out_of_memory(features_npz, tmp_path):
    output = tmp_path / "out.json"
    # The rbf kernel of 6000 rows is a 288 MB dense matrix: over a 0.25 GiB cap; LLP keeps going.
    result = run_tool(TOOL, f"--features={features_npz}", *SMALL_PROTOCOL, "--subsamples=1",
                      "--methods=llp,label_spreading_rbf", "--sweep_sizes=6000",
                      "--memory_limit_gb=0.25", f"--output_json={output}")
    sweep = json.loads(output.read_text())["sweep"]
    (llp,), (spreading,) = sweep["methods"]["llp"], sweep["methods"]["label_spreading_rbf"]
    assert llp["status"] == "ok" and spreading["status"] == "out of memory"
    assert 0.5 < llp["accuracy"] <= 1 and llp["seconds"] > 0 and llp["extra_mib"] > 0
    (sample,) = sweep["samples"]
    assert sample["size"] == 6000 and sample["resampled"] and abs(sample["labelled"] - 600) <= 6
    assert re.search(r"^\| llp \| [\d.]+ s, \d+ MiB, [\d.]+% \|$", result.stdout, re.M)
    assert "| label_spreading_rbf | out of memory (> 0.25 GiB) |" in result.stdout


def test_sweep_stops_a_method_over_the_time_limit_and_skips_larger_sizes(features_npz, tmp_path):
    output = tmp_path / "out.json"
    # A kNN graph of 20000 rows takes far longer than the poll interval, so a 0 s limit always stops it.
    result = run_tool(TOOL, f"--features={features_npz}", *SMALL_PROTOCOL, "--subsamples=1",
                      "--methods=label_spreading_knn", "--sweep_sizes=20000,30000", "--time_limit=0",
                      f"--output_json={output}")
    (results,) = json.loads(output.read_text())["sweep"]["methods"].values()
    statuses = [r["status"] for r in results]
    assert statuses == ["over time limit", "not run"]
    assert "| label_spreading_knn | over 0 s (" in result.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--features=", "--methods=label_spreading_rbf"], "exactly one of --features and --workdir"),
    (["--methods=llp,magic"], "unknown methods ['magic']"),
    (["--methods=label_spreading_rbf", "--classes=7"], "only 6 classes have"),
    (["--methods=label_spreading_rbf", "--sweep_sizes=500,100"], "increasing"),
])
def test_bad_input_is_named(features_npz, arguments, message):
    result = run_tool(TOOL, f"--features={features_npz}", *SMALL_PROTOCOL, *arguments, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_default_class_count_fits_the_data():
    """Without --classes: the paper's 50 where the data has as many classes of --images_per_class rows,
    else all of those (10 on Fashion-MNIST, where the former default of 50 failed)."""
    assert propagation_comparison.default_class_count(np.repeat(np.arange(10), 6000), 50) == 10
    assert propagation_comparison.default_class_count(np.repeat(np.arange(80), 60), 50) == 50
    assert propagation_comparison.default_class_count(np.repeat(np.arange(6), [80] * 5 + [20]), 30) == 5
    with pytest.raises(ValueError, match="lower --images_per_class"):
        propagation_comparison.default_class_count(np.repeat(np.arange(3), [80, 10, 10]), 50)


def test_protocol_without_classes_draws_every_class_of_small_data(features_npz):
    protocol = [argument for argument in SMALL_PROTOCOL if not argument.startswith("--classes")]
    result = run_tool(TOOL, f"--features={features_npz}", *protocol, "--methods=llp,knn", "--subsamples=1")
    assert "1 subsamples of 6 classes x 30 images" in result.stdout
