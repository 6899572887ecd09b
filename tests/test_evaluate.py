"""llp-eval end to end: a tiny trained run evaluated by the command line agrees with what training
reported (metrics.json, TensorBoard) and with itself (confusion matrix, per-class accuracy); an earlier
checkpoint, the training split and bad inputs; top-5 on a stand-in model with more classes."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from llp_tf import data, evaluation, finished
from tests.datasets import write_npz
from tests.conftest import TINY, run_tool, scalar_series

NUM_TRAIN, NUM_TEST, NUM_CLASSES = 480, 120, 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(npz path, workdir, metrics.json, llp-eval's stdout) of a 2-epoch LLP run evaluated by the CLI."""
    root = tmp_path_factory.mktemp("evaluate")
    npz = write_npz(root / "tiny.npz", num_train=NUM_TRAIN, num_test=NUM_TEST, num_classes=NUM_CLASSES)
    workdir = str(root / "run")
    run_tool("llp_tf.tools.train", f"--dataset=npz:{npz}", f"--workdir={workdir}", *TINY,
             "--epochs=2", "--instance_epochs=1")
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    result = run_tool("llp_tf.tools.evaluate", f"--workdir={workdir}")
    return npz, workdir, metrics, result.stdout


@pytest.fixture(scope="module")
def results(trained):
    with open(os.path.join(trained[1], "eval_test.json")) as f:  # the default --output
        return json.load(f)


@pytest.mark.slow
def test_agrees_with_the_metrics_of_training(trained, results):
    _, workdir, metrics, stdout = trained
    assert results["checkpoint"] == os.path.join(workdir, "checkpoints", "ckpt-2")
    assert results["epoch"] == metrics["epochs"] == 2 and results["split"] == "test"
    np.testing.assert_allclose(results["top1"], metrics["val_top1"], atol=1e-6)
    np.testing.assert_allclose(results["knn_top1"], metrics["knn_top1"], atol=1e-6)
    assert results["top5"] is None and metrics["val_top5"] is None  # 4 classes
    assert results["knn_k"] == 20
    assert "ckpt-2" in stdout and "top1" in stdout and "eval_test.json" in stdout


@pytest.mark.slow
def test_confusion_matrix_and_per_class_accuracy(trained, results):
    npz, _, _, _ = trained
    matrix = np.array(results["confusion_matrix"])
    assert matrix.shape == (NUM_CLASSES, NUM_CLASSES) and matrix.dtype.kind == "i"
    assert matrix.sum() == results["num_examples"] == NUM_TEST
    with np.load(npz) as data:
        true_counts = np.bincount(data["y_test"], minlength=NUM_CLASSES)
    np.testing.assert_array_equal(matrix.sum(axis=1), true_counts)  # rows are the true classes
    np.testing.assert_allclose(np.trace(matrix) / matrix.sum(), results["top1"], atol=1e-12)
    per_class = results["per_class_accuracy"]
    assert [c["class"] for c in per_class] == list(range(NUM_CLASSES))
    assert [c["name"] for c in per_class] == [str(c) for c in range(NUM_CLASSES)]
    for c, entry in enumerate(per_class):
        assert entry["num_examples"] == true_counts[c]
        np.testing.assert_allclose(entry["accuracy"], matrix[c, c] / true_counts[c], atol=1e-12)


@pytest.mark.slow
def test_an_earlier_checkpoint_gives_its_epoch(trained, tmp_path):
    _, workdir, _, _ = trained
    earlier = os.path.join(workdir, "checkpoints", "ckpt-1")
    output = tmp_path / "epoch1.json"
    run_tool("llp_tf.tools.evaluate", f"--workdir={workdir}", f"--checkpoint={earlier}",
             f"--output={output}")
    results = json.loads(output.read_text())
    assert results["checkpoint"] == earlier and results["epoch"] == 1
    # Training validated epoch 1 with these very weights (the checkpoint follows the validation).
    val_top1 = scalar_series(os.path.join(workdir, "tensorboard"), "val/top1")
    np.testing.assert_allclose(results["top1"], val_top1[0], atol=1e-6)


@pytest.mark.slow
def test_knn_k_override_gives_the_nearest_labelled_row(trained, tmp_path):
    """--knn_k=1 (the paper's ablation metric): the label of the most similar labelled bank row, by a
    float64 reference on the restored model's test embeddings."""
    _, workdir, _, _ = trained
    output = tmp_path / "one_nn.json"
    run_tool("llp_tf.tools.evaluate", f"--workdir={workdir}", "--knn_k=1", f"--output={output}")
    results = json.loads(output.read_text())
    assert results["knn_k"] == 1
    model, run = finished.restore_model(workdir)
    embeddings, labels = [], []
    for images, true_labels, _ in data.eval_dataset(run.source, "test", 64, run.image_size):
        embeddings.append(model(images)["embeddings"].numpy())
        labels.append(true_labels.numpy())
    embeddings, labels = np.concatenate(embeddings).astype(np.float64), np.concatenate(labels)
    is_labelled = model.state.is_labelled.numpy()
    bank = model.state.bank.numpy()[is_labelled].astype(np.float64)
    nearest = model.state.labels.numpy()[is_labelled][np.argmax(embeddings @ bank.T, axis=1)]
    np.testing.assert_allclose(results["knn_top1"], np.mean(nearest == labels), atol=1e-12)
    with pytest.raises(ValueError, match="knn_k must be >= 1"):
        finished.evaluate_workdir(workdir, knn_k=0)


@pytest.mark.slow
def test_training_split(trained):
    npz, workdir, _, _ = trained
    results = finished.evaluate_workdir(workdir, split="train")
    matrix = np.array(results["confusion_matrix"])
    with np.load(npz) as data:
        true_counts = np.bincount(data["y_train"], minlength=NUM_CLASSES)
    assert results["split"] == "train" and results["num_examples"] == NUM_TRAIN
    np.testing.assert_array_equal(matrix.sum(axis=1), true_counts)
    assert 0.0 <= results["top1"] <= 1.0 and 0.0 <= results["knn_top1"] <= 1.0


@pytest.mark.slow
def test_clear_errors(trained, tmp_path):
    _, workdir, _, _ = trained
    result = run_tool("llp_tf.tools.evaluate", f"--workdir={tmp_path / 'missing'}", check=False)
    assert result.returncode != 0
    assert "llp-eval:" in result.stderr and "does not exist" in result.stderr
    with pytest.raises(ValueError, match="unknown split 'val'"):
        finished.evaluate_workdir(workdir, split="val")
    with pytest.raises(FileNotFoundError, match="ckpt-9"):
        finished.evaluate_workdir(workdir, os.path.join(workdir, "checkpoints", "ckpt-9"))
    fresh = tmp_path / "fresh"  # a run that never finished an epoch
    fresh.mkdir()
    with open(os.path.join(workdir, "config.json")) as f:
        (fresh / "config.json").write_text(f.read())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        finished.evaluate_workdir(str(fresh))


class _StandIn(tf.Module):
    """An LLPModel stand-in: the images are the logits, their first columns the embeddings."""

    def __init__(self, num_classes, state):
        super().__init__()
        self.num_classes, self.state = num_classes, state

    def __call__(self, images, training=False):
        return {"logits": images, "embeddings": tf.math.l2_normalize(images[:, :4], axis=1)}


def test_top5_and_one_pass_on_many_classes():
    rng = np.random.default_rng(0)
    num_classes, n = 8, 50
    logits = rng.normal(size=(n, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, n)
    state = tf.Module()
    state.is_labelled = tf.Variable(np.arange(20) < 10)
    state.bank = tf.Variable(tf.math.l2_normalize(rng.normal(size=(20, 4)).astype(np.float32), axis=1))
    state.labels = tf.Variable(rng.integers(0, num_classes, 20))
    model = _StandIn(num_classes, state)
    dataset = tf.data.Dataset.from_tensor_slices((logits, labels, np.arange(n))).batch(16)
    results = evaluation.evaluate_model(model, dataset, [f"c{i}" for i in range(num_classes)],
                                        knn_k=3, tau=0.1)
    order = np.argsort(-logits, axis=1, kind="stable")
    assert results["top1"] == pytest.approx(np.mean(order[:, 0] == labels))
    assert results["top5"] == pytest.approx(np.mean(np.any(order[:, :5] == labels[:, None], axis=1)))
    assert results["top5"] >= results["top1"]
    unit = tf.math.l2_normalize(logits[:, :4], axis=1).numpy()
    assert results["knn_top1"] == evaluation.knn_top1(state, unit, labels, num_classes, k=3, tau=0.1)
    assert results["knn_k"] == 3 and results["per_class_accuracy"][7]["name"] == "c7"


def test_evaluation_traces_once_per_model_not_once_per_call():
    """Every epoch's kNN evaluation reuses the model's traced step (a new tf.function per call was
    traced anew each epoch, and TensorFlow warned of retracing in every run)."""
    rng = np.random.default_rng(0)
    model = _StandIn(8, None)
    dataset = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(32, 8)).astype(np.float32), np.zeros(32, np.int64), np.arange(32))).batch(16)
    for _ in range(3):
        evaluation.embed_and_classify(model, dataset)
    step = evaluation._evaluation_step(model, evaluation.TOP_K)
    assert step.experimental_get_tracing_count() == 1
    assert evaluation._evaluation_step(_StandIn(8, None), evaluation.TOP_K) is not step
