"""The command lines end to end: llp-train (LLP under 2-replica MirroredStrategy, supervised, resume),
llp-propagate, and every flagfile in flags/."""
import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from llp_tf import data, experiment, propagation, resume, train
from llp_tf.config import TrainConfig
from llp_tf.tools import train as train_tool
from tests.conftest import ROOT, TINY, run_tool, scalar_series
from tests.datasets import write_npz


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "flags", "*.cfg"))
                                       + glob.glob(os.path.join(ROOT, "flags", "paper", "*.cfg"))),
                         ids=os.path.basename)
def test_flagfile_parses_into_a_valid_config(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # nested --flagfile lines are relative to the repository root
    flag_values = flags.FlagValues()
    train_tool.define_config_flags(flag_values)
    # flags/recommended.cfg leaves the dataset to the user's command line
    given = [line for line in open(path) if line.startswith("--dataset=")]  # comments do not count
    dataset = [] if given else ["--dataset=folder:/tmp/yours"]
    flag_values(["llp-train", f"--flagfile={path}", *dataset, "--workdir=/tmp/unused"])
    config = train_tool.config_from_flags(flag_values)
    config.validate()
    assert config.dataset


@pytest.mark.slow
def test_llp_train_end_to_end_on_two_replicas(tiny_llp_run):
    workdir = tiny_llp_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    for key in ("method", "dataset", "num_labelled", "epochs", "wall_seconds", "val_top1", "val_top5",
                "knn_top1", "pseudo_label_accuracy"):
        assert key in metrics, key
    assert metrics["method"] == "llp" and metrics["epochs"] == 3
    assert metrics["num_labelled"] == 48  # 10% of each class of 480
    assert len(metrics["pseudo_label_accuracy_history"]) == 3  # the switch, then each LLP epoch
    for key in ("val_top1", "knn_top1", "pseudo_label_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    # The classes are easy: the bank's propagation must beat chance (0.25) by far.
    assert metrics["pseudo_label_accuracy"] > 0.5
    norms = scalar_series(workdir / "tensorboard", "aggregation/norm_mean")
    assert len(norms) == 3 and all(0.0 <= v <= 1.0 for v in norms)  # one point per epoch
    assert len(scalar_series(workdir / "tensorboard", "propagation/pseudo_label_accuracy")) == 3
    knn = scalar_series(workdir / "tensorboard", "val/knn_top1")
    assert len(knn) == 3 and knn[-1] == pytest.approx(metrics["knn_top1"], abs=1e-6)


@pytest.mark.slow
def test_supervised_baseline_and_resume(tiny_npz, tmp_path):
    workdir = tmp_path / "supervised"
    common = [f"--dataset=npz:{tiny_npz}", f"--workdir={workdir}", *TINY, "--method=supervised"]
    run_tool("llp_tf.tools.train", *common, "--epochs=2")
    first = json.loads((workdir / "metrics.json").read_text())
    assert first["method"] == "supervised" and first["epochs"] == 2
    assert first["pseudo_label_accuracy"] is None
    run_tool("llp_tf.tools.train", *common, "--epochs=3")
    resumed = json.loads((workdir / "metrics.json").read_text())
    assert resumed["epochs"] == 3
    assert resumed["wall_seconds"] < first["wall_seconds"] * 1.5  # one more epoch, not three


@pytest.mark.slow
def test_xla_compiled_step_in_bfloat16_trains(tiny_npz, tmp_path):
    """--jit_compile with mixed precision, as on a GPU: the loss's own XLA functions nest inside the
    compiled step and its custom gradient compiles; the run finishes with finite results."""
    workdir = tmp_path / "xla"
    run_tool("llp_tf.tools.train", f"--dataset=npz:{tiny_npz}", f"--workdir={workdir}", *TINY,
             "--epochs=2", "--instance_epochs=1", "--jit_compile", "--mixed_precision=mixed_bfloat16")
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["pseudo_label_accuracy_history"]) == 2
    assert all(np.isfinite(metrics[key]) for key in ("val_top1", "knn_top1", "pseudo_label_accuracy"))


@pytest.mark.slow
def test_two_stage_baseline_propagates_once_and_keeps_its_pseudo_labels(tiny_npz, tmp_path):
    """The non-iterative foil: instance recognition, one weighted-kNN propagation at the switch, then
    training on those labels; LLP (test above) propagates after every epoch instead."""
    workdir = tmp_path / "two_stage"
    run_tool("llp_tf.tools.train", f"--dataset=npz:{tiny_npz}", f"--workdir={workdir}", *TINY,
             "--method=two_stage", "--use_density=false", "--epochs=3", "--instance_epochs=1")
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["method"] == "two_stage" and metrics["epochs"] == 3
    assert len(metrics["pseudo_label_accuracy_history"]) == 1
    assert metrics["pseudo_label_accuracy"] == pytest.approx(metrics["pseudo_label_accuracy_history"][0])
    assert len(scalar_series(workdir / "tensorboard", "propagation/pseudo_label_accuracy")) == 1


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "flags", "ablation", "*.cfg"))),
                         ids=os.path.basename)
def test_ablation_flagfile_sets_only_its_switches(path, monkeypatch):
    """Each Table 6 ablation file composes with a dataset flagfile and changes only the ablation
    switches (K, density, confidence, category loss, the 1-NN metric)."""
    monkeypatch.chdir(ROOT)
    configs = []
    for extra in ([], [f"--flagfile={path}"]):
        flag_values = flags.FlagValues()
        train_tool.define_config_flags(flag_values)
        flag_values(["llp-train", "--flagfile=flags/paper/fashion_mnist_1pct.cfg", *extra, "--workdir=/tmp/x"])
        configs.append(train_tool.config_from_flags(flag_values))
    configs[1].validate()
    changed = {name for name, value in vars(configs[1]).items() if getattr(configs[0], name) != value}
    assert changed <= {"k", "use_density", "use_confidence", "use_category_loss", "eval_knn_k"}
    assert configs[1].eval_knn_k == 1


RECIPE_DEPARTURES = {"consistency_warmup.cfg"}  # they need the recipe's supervised warm-up


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "flags", "departures", "*.cfg"))),
                         ids=os.path.basename)
def test_departure_flagfile_composes_with_a_dataset_flagfile(path, monkeypatch):
    """Each departure file composes with a dataset flagfile, or with the recipe's where it acts on the
    recipe's supervised warm-up."""
    monkeypatch.chdir(ROOT)
    flag_values = flags.FlagValues()
    train_tool.define_config_flags(flag_values)
    base = (["--flagfile=flags/recommended.cfg", "--dataset=folder:/tmp/images"]
            if os.path.basename(path) in RECIPE_DEPARTURES else ["--flagfile=flags/paper/cifar10_jpg_1pct.cfg"])
    flag_values(["llp-train", *base, f"--flagfile={path}", "--init_from=/tmp/x", "--workdir=/tmp/y"])
    config = train_tool.config_from_flags(flag_values)
    config.validate()
    named = [line[2:].strip().split("=")[0] for line in open(path) if line.startswith("--")]
    assert named and all(flag_values[name].present for name in named)
    assert config.dataset.startswith("folder:")


@pytest.mark.slow
def test_workdir_of_another_size_class_count_or_embedding_size_is_refused(tiny_npz, tmp_path):
    workdir = tmp_path / "llp"
    common = [f"--workdir={workdir}", *TINY, "--epochs=1", "--instance_epochs=0"]
    run_tool("llp_tf.tools.train", f"--dataset=npz:{tiny_npz}", *common)
    fewer_examples = write_npz(tmp_path / "fewer.npz", num_train=320)
    five_classes = write_npz(tmp_path / "five.npz", num_classes=5)
    refusals = [
        ([f"--dataset=npz:{fewer_examples}"], ["num_examples = 480", "num_examples = 320"]),
        ([f"--dataset=npz:{five_classes}"], ["num_classes = 4"]),
        ([f"--dataset=npz:{tiny_npz}", "--embedding_dim=64"], ["embedding_dim = 128"]),
    ]
    for extra, messages in refusals:
        result = run_tool("llp_tf.tools.train", *common, *extra, check=False)
        assert result.returncode != 0, extra
        for message in messages:
            assert message in result.stderr, (message, result.stderr[-500:])

@pytest.mark.slow
def test_llp_propagate_matches_the_library(tmp_path):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 16))
    truth = rng.integers(0, 5, 3000)
    embeddings = (centres[truth] + 0.7 * rng.normal(size=(3000, 16))) * 3.0  # not unit length
    labels = np.where(rng.random(3000) < 0.1, truth, -1)
    features = tmp_path / "features.npz"
    np.savez(features, embeddings=embeddings, labels=labels)
    output = tmp_path / "out.npz"
    result = run_tool("llp_tf.tools.propagate", f"--features={features}", f"--output={output}",
                      "--k=10", "--t=25", "--query_rows=333")
    assert "propagated" in result.stdout and " s " in result.stdout
    assert result.stdout.rstrip().endswith(f"-> {output}")  # the path written, as given
    with np.load(output) as out:
        pseudo, confidences = out["pseudo_labels"], out["confidences"]
    assert pseudo.dtype == np.int64 and confidences.dtype == np.float32
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = propagation.propagate(unit.astype(np.float32), labels >= 0, labels, 5, k=10, t=25)
    np.testing.assert_array_equal(pseudo, expected.labels)
    np.testing.assert_allclose(confidences, expected.confidences, atol=1e-6)
    labelled = labels >= 0
    np.testing.assert_array_equal(pseudo[labelled], labels[labelled])
    assert np.all(confidences[labelled] == 1.0)
    assert np.mean(pseudo[~labelled] == truth[~labelled]) > 0.8


@pytest.mark.slow
def test_llp_propagate_names_a_missing_array(tmp_path):
    features = tmp_path / "features.npz"
    np.savez(features, embeddings=np.ones((10, 4)))
    result = run_tool("llp_tf.tools.propagate", f"--features={features}",
                      f"--output={tmp_path / 'out.npz'}", check=False)
    assert result.returncode != 0 and "labels" in result.stderr


@pytest.mark.slow
def test_departures_from_the_paper_run_end_to_end(tiny_npz, tmp_path):
    """--init_from starts from a supervised run's network (only its network); the other departures
    train alongside it; a network of another shape is refused by name."""
    supervised = tmp_path / "supervised"
    common = [f"--dataset=npz:{tiny_npz}", *TINY]
    run_tool("llp_tf.tools.train", *common, f"--workdir={supervised}", "--method=supervised", "--epochs=1")

    config = TrainConfig(dataset=f"npz:{tiny_npz}", workdir=str(tmp_path / "started"), width=1,
                         batch_size=32, labelled_fraction=0.1, k=5, t=10, init_from=str(supervised))
    started = experiment.Experiment(config)
    finished = experiment.Experiment(dataclasses.replace(config, workdir=str(supervised)))
    bank_before = started.model.state.bank.numpy()
    resume.init_network(started, str(supervised))
    finished.checkpoint.restore(tf.train.latest_checkpoint(str(supervised / "checkpoints")))
    assert len(started.model.weights) == len(finished.model.weights) > 10
    for mine, theirs in zip(started.model.weights, finished.model.weights):  # BatchNorm statistics too
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    np.testing.assert_array_equal(started.model.state.bank.numpy(), bank_before)
    assert not np.array_equal(bank_before, finished.model.state.bank.numpy())

    workdir = tmp_path / "llp"
    run_tool("llp_tf.tools.train", *common, f"--workdir={workdir}", f"--init_from={supervised}",
             "--epochs=2", "--instance_epochs=1", "--warmup_category_loss", "--labelled_per_batch=8",
             "--confidence_threshold=0.3", "--refresh_bank", "--crop_area_min=0.5")
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["pseudo_label_accuracy_history"]) == 2
    assert metrics["val_top1"] > 0.35  # four classes: well above chance

    result = run_tool("llp_tf.tools.train", *common, f"--workdir={tmp_path / 'wider'}", "--width=2",
                      f"--init_from={supervised}", "--epochs=1", "--instance_epochs=0", check=False)
    assert result.returncode != 0 and "does not hold this network (--backbone=small_cnn" in result.stderr


def test_refresh_bank_rewrites_the_bank_before_each_propagation(tiny_npz, tmp_path):
    """--refresh_bank (departure): the pass first sets every bank row to the network's embedding of
    its unaugmented image, then propagates from those rows (float64 reference)."""
    from tests import reference

    config = TrainConfig(dataset=f"npz:{tiny_npz}", workdir=str(tmp_path), width=1, batch_size=32,
                         labelled_fraction=0.1, k=5, t=10, bank_init="random", refresh_bank=True)
    run = experiment.Experiment(config)
    _, propagator = train.make_callbacks(run)
    propagator.set_model(run.model)
    random_bank = run.model.state.bank.numpy()
    stats = propagator.propagate()

    images = np.load(tiny_npz)["x_train"][run.selection.rows]
    embeddings = run.model(data.preprocess_for_eval(images, 12), training=False)["embeddings"].numpy()
    bank = run.model.state.bank.numpy()
    np.testing.assert_allclose(bank, embeddings, atol=1e-5)
    assert np.abs(bank - random_bank).max() > 0.1
    state = run.model.state
    expected = reference.propagate(embeddings.astype(np.float64), state.is_labelled.numpy(),
                                   np.where(state.is_labelled.numpy(), run.selection.true_labels, -1),
                                   run.num_classes, k=5, t=10, tau=config.tau, use_density=True,
                                   include_self=False)
    np.testing.assert_array_equal(state.labels.numpy(), expected["labels"])
    np.testing.assert_allclose(state.confidences.numpy(), expected["confidences"], atol=1e-4)
    assert stats["propagation/refresh_seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("method_flags", [["--method=llp", "--instance_epochs=1"],
                                          ["--method=llp", "--instance_epochs=1", "--labelled_per_batch=8"],
                                          ["--method=supervised"]],
                         ids=["llp", "labelled_per_batch", "supervised"])
def test_llp_train_on_two_replicas_equals_one_device(method_flags, tiny_npz, tmp_path):
    """The same run on one device and on two replicas (--deterministic) trains on the same batches
    (Keras iterates a dataset once more under a strategy): the same weights, BatchNorm statistics, bank
    and pseudo-labels after the first epoch (instance recognition, then the switch's propagation). Not
    later: a float-level tie in one example's vote may flip its pseudo-label, and the runs part."""
    readers = []
    for name, placement in (("one", []), ("two", ["--strategy=mirrored", "--cpu_replicas=2"])):
        workdir = tmp_path / name
        run_tool("llp_tf.tools.train", f"--dataset=npz:{tiny_npz}", *TINY, f"--workdir={workdir}",
                 "--epochs=2", "--steps_per_epoch=3", "--learning_rate=0.01", "--deterministic",
                 *method_flags, *placement)
        readers.append(tf.train.load_checkpoint(str(workdir / "checkpoints" / "ckpt-1")))
    one, two = readers
    # Momentum slots left out: gradients summed in another order (per replica, then all-reduced) make
    # rounding differences, which three steps grow to ~1e-4 of the weights here and 1.2e-3 on CI's
    # machine, more of the momentum. Other batches put the runs ~1x the weights' scale apart.
    names = [name for name in one.get_variable_to_shape_map()
             if "save_counter" not in name and "optimizer/_variables" not in name]
    assert any("state/bank" in name for name in names) and len(names) > 20
    apart = {}
    for name in names:
        expected, got = np.asarray(one.get_tensor(name)), np.asarray(two.get_tensor(name))
        if expected.dtype.kind != "f":  # pseudo-labels may flip where two classes' votes tie
            assert np.mean(got != expected) <= 0.01, name
            continue
        scale = max(np.max(np.abs(expected), initial=0), 1e-3)
        apart[name] = float(np.max(np.abs(got - expected), initial=0) / scale)
    assert max(apart.values()) < 1e-2, sorted(apart.items(), key=lambda item: -item[1])[:5]


@pytest.mark.slow
def test_refreshed_bank_is_the_final_network_on_every_replica(tiny_npz, tmp_path):
    """--refresh_bank on two replicas: the last pass rewrote every replica's copy of the bank with the
    final network's embeddings of the unaugmented images."""
    from llp_tf import finished

    workdir, dump = tmp_path / "run", tmp_path / "state.npz"
    run_tool("llp_tf.tools.train", f"--dataset=npz:{tiny_npz}", *TINY, f"--workdir={workdir}",
             "--epochs=2", "--instance_epochs=1", "--refresh_bank", "--strategy=mirrored",
             "--cpu_replicas=2", f"--state_dump={dump}")
    copies = np.load(dump)["bank"]
    assert copies.shape[0] == 2
    np.testing.assert_array_equal(copies[0], copies[1])
    model, run = finished.restore_model(str(workdir))
    embeddings = np.zeros_like(copies[0])
    for images, _, indices in run.ordered_train_dataset():
        embeddings[indices.numpy()] = model(images, training=False)["embeddings"].numpy()
    np.testing.assert_allclose(copies[0], embeddings, atol=1e-5)


@pytest.mark.slow
def test_results_table_lists_runs_and_averages_seeds(tiny_llp_run, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed in (0, 1):
        (runs / f"tiny_llp_s{seed}").symlink_to(tiny_llp_run)
    metrics = json.loads((tiny_llp_run / "metrics.json").read_text())
    out = run_tool("scripts.results_table", str(runs)).stdout
    assert out.count("| tiny_llp_s") == 2
    assert "| tiny_llp | npz:" in out and f"| 2 | {100 * metrics['val_top1']:.2f} | 0.00 |" in out
    config = json.loads((tiny_llp_run / "config.json").read_text())
    assert f"{100 * config['labelled_fraction']:g}% labels, llp, " in out and f", K={config['k']}" in out
    assert f"{100 * metrics['knn_top1']:.2f} (k={config['eval_knn_k']})" in out
    assert ", no " not in out  # every Table 6 ingredient is on; the ablations name those switched off
    ablation = tmp_path / "ablation"
    ablation.mkdir()
    for name in ("metrics.json", "config.json"):
        (ablation / name).write_text((tiny_llp_run / name).read_text())
    (ablation / "config.json").write_text(json.dumps({**config, "use_density": False, "use_category_loss": False,
                                                      "refresh_bank": True, "crop_area_min": 0.6,
                                                      "confidence_threshold": 0.8, "width": 2}))
    (runs / "tiny_abl_s0").symlink_to(ablation)
    out = run_tool("scripts.results_table", str(runs), "--match=abl").stdout
    assert ", no density, no category loss" in out and "tiny_llp_s" not in out
    assert ", bank refreshed before each propagation, crops of >= 60% of the area" in out
    assert ", pseudo-labels below confidence 0.8 weigh 0, width 2" in out
    assert "refreshed" not in run_tool("scripts.results_table", str(runs), "--match=tiny_llp").stdout


@pytest.mark.slow
def test_first_propagation_of_a_trained_network(tiny_llp_run, tmp_path):
    """tools/first_propagation.py: the classifier's and the embedding head's propagation accuracy on
    the unlabelled rows, against the same computed here from the restored network."""
    from llp_tf import finished

    output = tmp_path / "first.json"
    run_tool("llp_tf.tools.first_propagation", f"--workdir={tiny_llp_run}", "--k=5",
             f"--output_json={output}")
    results = json.loads(output.read_text())
    model, run = finished.restore_model(str(tiny_llp_run))
    num_rows, num_classes = model.state.num_examples, model.num_classes
    embeddings = np.zeros([num_rows, model.state.bank.shape[1]], np.float32)
    logits, labels = np.zeros([num_rows, num_classes]), np.zeros(num_rows, int)
    for images, true_labels, indices in run.ordered_train_dataset():
        outputs = model(images, training=False)
        embeddings[indices.numpy()] = outputs["embeddings"].numpy()
        logits[indices.numpy()] = outputs["logits"].numpy()
        labels[indices.numpy()] = true_labels.numpy()
    is_labelled = model.state.is_labelled.numpy()
    pseudo = propagation.propagate(embeddings, is_labelled, np.where(is_labelled, labels, -1), num_classes, k=5,
                                   t=run.config.t, tau=run.config.tau).labels
    unlabelled = ~is_labelled
    one_row = 1.0 / unlabelled.sum()  # float32 embeddings computed in other batches may flip a tie
    assert results["embedding head, K=5, LLP (density)"] == pytest.approx(
        np.mean(pseudo[unlabelled] == labels[unlabelled]), abs=one_row)
    assert results["classifier"] == pytest.approx(
        np.mean(logits.argmax(1)[unlabelled] == labels[unlabelled]), abs=one_row)
    assert len(results) == 1 + 4 * 2  # classifier; 4 feature kinds x (density, kNN) at one K


@pytest.mark.slow
def test_pseudo_label_confidence_table(tiny_llp_run):
    """tools/pseudo_label_confidence.py: each threshold's share of unlabelled rows and their accuracy,
    against the same counted here, row by row, from the restored state."""
    from llp_tf import finished

    out = run_tool("llp_tf.tools.pseudo_label_confidence", f"--workdir={tiny_llp_run}",
                   "--thresholds=0,0.5,0.9,1.01").stdout
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "%" in line]
    printed = {float(t): (float(share.strip(" %")), accuracy.strip(" %")) for t, share, accuracy in rows}
    model, run = finished.restore_model(str(tiny_llp_run))
    is_labelled, confidences, labels = (getattr(model.state, name).numpy()
                                        for name in ("is_labelled", "confidences", "labels"))
    unlabelled = [row for row in range(len(labels)) if not is_labelled[row]]
    for threshold in (0, 0.5, 0.9):
        kept = [row for row in unlabelled if confidences[row] >= threshold]
        right = sum(labels[row] == run.selection.true_labels[row] for row in kept)
        assert printed[threshold][0] == pytest.approx(100 * len(kept) / len(unlabelled), abs=0.05)
        assert float(printed[threshold][1]) == pytest.approx(100 * right / len(kept), abs=0.005)
    assert printed[0][0] == 100.0 and printed[1.01] == (0.0, "nan")  # confidences are at most 1


@pytest.mark.slow
def test_every_run_behind_results_parses_into_a_valid_config(monkeypatch, tmp_path):
    """scripts/run_results.sh (dry run): each run's arguments, flagfiles included, make a valid llp-train
    config, every run has its own workdir, and every --init_from names a run listed before it."""
    import shlex
    import subprocess

    runs = tmp_path / "runs"
    listing = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_results.sh"), str(runs)],
                             env={**os.environ, "DRY_RUN": "1"}, capture_output=True, text=True, check=True)
    lines = listing.stdout.splitlines()
    assert len(lines) >= 20 and not runs.exists()
    monkeypatch.chdir(ROOT)
    workdirs = []
    for line in lines:
        flag_values = flags.FlagValues()
        train_tool.define_config_flags(flag_values)
        flag_values(["llp-train", *shlex.split(line)])
        config = train_tool.config_from_flags(flag_values)
        config.validate()
        assert config.init_from is None or config.init_from in workdirs, line
        workdirs.append(config.workdir)
    assert len(set(workdirs)) == len(workdirs)
