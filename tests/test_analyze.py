"""llp-analyze (paper Sec. 5, Fig. 2): the figures and summary of a finished tiny run, the
multi-modality score and the MDS embedding on synthetic data, and the command line's errors."""
import json
import shutil

import numpy as np
import pytest

from llp_tf import aggregation, analysis
from llp_tf.config import TrainConfig
from tests.conftest import TINY, run_tool
from tests.datasets import write_npz
from tests.test_cli import scalar_series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("aggregation_curve", "class_norm_histogram", "class_norm_scatter", "mds_classes")


def check_png(path):
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, (path, len(data))
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= 300, (path, image.size)


@pytest.fixture(scope="module")
def analysed(tiny_llp_run, tmp_path_factory):
    """llp-analyze of the tiny run compared with a copy of itself (a moved workdir)."""
    copy = tmp_path_factory.mktemp("moved") / "llp_copy"
    shutil.copytree(tiny_llp_run, copy)
    output_dir = tmp_path_factory.mktemp("analysis")
    result = run_tool("llp_tf.tools.analyze", f"--workdir={tiny_llp_run}", f"--compare_workdir={copy}",
                      f"--output_dir={output_dir}", "--max_points_per_class=60")
    return tiny_llp_run, output_dir, result


@pytest.mark.slow
def test_figures_and_summary_of_a_finished_run(analysed):
    workdir, output_dir, result = analysed
    for name in FIGURES:
        check_png(output_dir / f"{name}.png")
    text = (output_dir / "summary.txt").read_text()
    assert text.strip() in result.stdout
    for phrase in ("easiest (highest norm)", "hardest (lowest norm)", "most multi-modal",
                   "multi-modality: spherical", "pseudo-label accuracy", "compare:"):
        assert phrase in text, phrase
    summary = json.loads((output_dir / "summary.json").read_text())
    for key in ("workdir", "method", "epochs", "norm_mean", "norm_mean_labelled", "class_names",
                "class_norms", "class_multimodality", "pseudo_label_accuracy",
                "class_pseudo_label_accuracy", "aggregation_curve", "ranking", "chosen", "mds_classes",
                "compare", "figures", "multimodality_definition"):
        assert key in summary, key
    assert summary["method"] == "llp" and summary["epochs"] == 3

    # Per-class norms: in [0, 1] and those of the restored bank with the true labels.
    from llp_tf import finished
    model, run = finished.restore_model(str(workdir))
    want = aggregation.class_mean_norms(model.state.bank, run.selection.true_labels, run.num_classes)
    norms = np.array(summary["class_norms"], np.float64)
    assert ((norms >= 0) & (norms <= 1)).all()
    np.testing.assert_allclose(norms, want, rtol=1e-6)
    np.testing.assert_allclose(summary["compare"]["class_norms"], want, rtol=1e-6)  # the copy
    assert summary["compare"]["same_labelled_split"]

    # The curve is the TensorBoard scalars, one point per epoch; its end is the final bank's value.
    logdir = workdir / "tensorboard"
    curve = summary["aggregation_curve"]
    assert curve["epochs"] == [1, 2, 3]
    assert curve["epochs"] == [int(e) for e in scalar_series(logdir, "epoch")]
    np.testing.assert_allclose(curve["norm_mean"], scalar_series(logdir, "aggregation/norm_mean"))
    np.testing.assert_allclose(curve["norm_mean_labelled"],
                               scalar_series(logdir, "aggregation/norm_mean_labelled"))
    assert summary["norm_mean"] == pytest.approx(curve["norm_mean"][-1], abs=1e-5)

    # Pseudo-label accuracy: per class in [0, 1], overall the one llp-train reported.
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert summary["pseudo_label_accuracy"] == pytest.approx(metrics["pseudo_label_accuracy"])
    assert all(0.0 <= a <= 1.0 for a in summary["class_pseudo_label_accuracy"])

    # The MDS classes: easiest, hardest and most multi-modal of the other classes (4 classes here).
    chosen, ranking = summary["chosen"], summary["ranking"]
    assert summary["mds_classes"] == [chosen["easiest"], chosen["hardest"], chosen["multimodal"]]
    assert chosen["easiest"] == int(np.argmax(norms)) == ranking["easiest"][0]
    assert chosen["hardest"] == int(np.argmin(norms)) == ranking["hardest"][0]
    others = [c for c in range(4) if c not in (chosen["easiest"], chosen["hardest"])]
    modality = np.array(summary["class_multimodality"])
    assert chosen["multimodal"] == others[int(np.argmax(modality[others]))]


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_two_separated_clusters_score_as_multimodal_and_one_blob_does_not():
    rng = np.random.default_rng(0)
    dim = 64
    a, b, c = unit(rng.normal(size=(3, dim)))
    blob = lambda n, centre, spread: unit(centre + spread * rng.normal(size=(n, dim)))  # noqa: E731
    two_clusters = np.concatenate([blob(200, a, 0.06), blob(200, unit((a + b)[None])[0], 0.06)])
    one_blob = blob(400, a, 0.06)
    diffuse = blob(400, a, 1.0)
    # One mode stretched along one direction: a 2-means silhouette would call it bimodal.
    elongated = unit(a + 0.15 * rng.normal(size=(400, 1)) * c + 0.01 * rng.normal(size=(400, dim)))
    scores = {name: analysis.multimodality(rows, seed=0) for name, rows in
              [("two", two_clusters), ("blob", one_blob), ("diffuse", diffuse), ("elongated", elongated)]}
    assert scores["two"] > 0.7, scores
    for name in ("blob", "diffuse", "elongated"):
        assert scores[name] < 0.3, scores
    assert analysis.multimodality(two_clusters, seed=0) == scores["two"]  # seeded: reproducible
    assert np.isnan(analysis.multimodality(one_blob[:5]))
    # The split itself finds the two clusters.
    assignment, _ = analysis.two_means(two_clusters, seed=0)
    truth = np.repeat([0, 1], 200)
    assert max(np.mean(assignment == truth), np.mean(assignment != truth)) > 0.99


def test_mds_keeps_two_clusters_apart():
    rng = np.random.default_rng(1)
    dim = 32
    a, b = unit(rng.normal(size=(2, dim)))
    rows = np.concatenate([unit(a + 0.25 * rng.normal(size=(60, dim))),
                           unit(b + 0.25 * rng.normal(size=(60, dim)))])
    truth = np.repeat([0, 1], 60)
    points = analysis.mds_embedding(rows, seed=0)
    assert points.shape == (120, 2) and np.isfinite(points).all()
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argmin(distances, axis=1)
    assert np.mean(truth[nearest] == truth) > 0.95
    np.testing.assert_allclose(analysis.mds_embedding(rows, seed=0), points)  # seeded


def test_class_choice_and_sampling():
    norms = np.array([0.5, 0.9, np.nan, 0.2, 0.6])
    modality = np.array([0.1, 0.95, np.nan, 0.9, 0.4])  # the top two are the easiest and hardest
    assert analysis.choose_classes(norms, modality) == {"easiest": 1, "hardest": 3, "multimodal": 4}
    labels = np.repeat([0, 1, 2], [10, 3, 50])
    rows = analysis.sample_class_rows(labels, [2, 1], 5, seed=0)
    assert len(rows) == 8 and (labels[rows[:5]] == 2).all() and (labels[rows[5:]] == 1).all()
    np.testing.assert_array_equal(rows, analysis.sample_class_rows(labels, [2, 1], 5, seed=0))
    with pytest.raises(ValueError, match="class index 7 is out of range"):
        analysis.check_classes([0, 7], 5)


def test_runs_on_other_examples_are_not_compared():
    def state(labels, rows=None):
        labels = np.asarray(labels)
        return analysis.RunState(
            workdir=f"run{len(labels)}", method="llp", dataset="npz:x", backbone="small_cnn",
            warmup_epochs=1, class_names=["a", "b"],
            rows=np.arange(len(labels)) if rows is None else np.asarray(rows), true_labels=labels,
            is_labelled=np.zeros(len(labels), bool), current_labels=labels,
            bank=np.ones((len(labels), 4), np.float32), epochs=1, checkpoint="ckpt-1")

    analysis.check_comparable(state([0, 1, 1]), state([0, 1, 1]))
    with pytest.raises(ValueError, match="run2 has 2 training examples and run3 has 3"):
        analysis.check_comparable(state([0, 1, 1]), state([0, 1]))
    with pytest.raises(ValueError, match="other training examples or labels"):
        analysis.check_comparable(state([0, 1, 1]), state([0, 1, 0]))
    with pytest.raises(ValueError, match="other training examples or labels"):
        analysis.check_comparable(state([0, 1, 1]), state([0, 1, 1], rows=[0, 1, 3]))


@pytest.mark.slow
def test_command_line_errors(tiny_llp_run, tmp_path):
    output_dir = tmp_path / "out"
    unknown = run_tool("llp_tf.tools.analyze", f"--workdir={tiny_llp_run}", f"--output_dir={output_dir}",
                       "--classes=0,9", check=False)
    assert unknown.returncode != 0
    assert "llp-analyze: class index 9 is out of range: the run has 4 classes" in unknown.stderr
    not_a_number = run_tool("llp_tf.tools.analyze", f"--workdir={tiny_llp_run}",
                            f"--output_dir={output_dir}", "--classes=coat", check=False)
    assert not_a_number.returncode != 0 and "--classes takes class indices" in not_a_number.stderr
    missing = run_tool("llp_tf.tools.analyze", f"--workdir={tmp_path / 'nowhere'}",
                       f"--output_dir={output_dir}", check=False)
    assert missing.returncode != 0 and "is not a directory" in missing.stderr

    # A run on another dataset size (one supervised step is enough to leave a checkpoint).
    other = tmp_path / "other"
    run_tool("llp_tf.tools.train", f"--dataset=npz:{write_npz(tmp_path / 'other.npz', num_train=320)}",
             f"--workdir={other}", *TINY, "--method=supervised", "--epochs=1", "--steps_per_epoch=1")
    result = run_tool("llp_tf.tools.analyze", f"--workdir={tiny_llp_run}", f"--compare_workdir={other}",
                      f"--output_dir={output_dir}", check=False)
    assert result.returncode != 0
    assert "has 320 training examples" in result.stderr and "has 480" in result.stderr
    assert "same dataset and training split" in result.stderr
    assert not (output_dir / "class_norm_scatter.png").exists()


def test_switch_epoch_of_a_resolved_config_as_config_json_holds_it():
    """llp-analyze and llp-compare-propagation --workdir read config.json, the resolved config: a
    supervised warm-up's (warmup_epochs=3, instance_epochs=0) must not be resolved (refused) again."""
    switch_epoch = analysis.runs.switch_epoch
    common = dict(dataset="npz:x", workdir="w", epochs=5, warmup_epochs=3)
    assert switch_epoch(TrainConfig(**common, warmup="supervised").resolved()) == 3
    assert switch_epoch(TrainConfig(**common).resolved()) == 3
    assert switch_epoch(TrainConfig(**common, method="supervised").resolved()) == 0
