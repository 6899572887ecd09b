"""The supervised warm-up inside one llp-train run (--warmup=supervised): stopped during the warm-up
and again after the switch to LLP, reruns finish exactly like an uninterrupted run; very few labels
(10 per class) train in both methods."""
import json
import signal

import numpy as np
import pytest

from llp_tf import train
from llp_tf.config import TrainConfig
from scripts import kill_drill
from tests.test_faults import assert_same_as_reference, stop_with

EPOCHS, WARMUP, STEPS = 3, 1, 10  # epoch 1 supervised, the switch's propagation, epochs 2-3 LLP
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def command(npz, workdir, extra=()):
    return kill_drill.train_command(f"npz:{npz}", workdir, epochs=EPOCHS, instance_epochs=WARMUP,
                                    steps_per_epoch=STEPS, keep=2, warmup="supervised") + list(extra)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--consistency_weight=1", "--consistency_threshold=0.5",
                                         "--consistency_warmup", "--labelled_per_batch=8")],
                         ids=["recipe", "with_consistency"])
def test_supervised_warmup_stopped_in_the_warmup_and_after_the_switch_resumes_bit_for_bit(
        tiny_npz, tmp_path, extra):
    """The recipe's shape, and with the consistency departure in the warm-up and the LLP epochs (whose
    mixed warm-up batches and weak views must come back the same after a restart too)."""
    command_of = lambda workdir: command(tiny_npz, workdir, extra)  # noqa: E731
    reference = str(tmp_path / "reference")
    process = kill_drill.start(command_of(reference), str(tmp_path / "reference_log"))
    assert process.wait(timeout=600) == 0, kill_drill.read(f"{tmp_path}/reference_log.err")[-3000:]
    metrics = json.loads(kill_drill.read(f"{reference}/metrics.json"))
    assert metrics["warmup"] == "supervised" and metrics["warmup_epochs"] == WARMUP
    assert metrics["instance_epochs"] == 0 and 0.0 <= metrics["warmup_val_top1"] <= 1.0
    assert len(metrics["pseudo_label_accuracy_history"]) == EPOCHS - WARMUP + 1  # the switch's too
    assert ("consistency_mask" in kill_drill.read(f"{tmp_path}/reference_log.out")) == bool(extra)

    workdir = str(tmp_path / "run")
    first = str(tmp_path / "first")  # SIGTERM inside epoch 1: the supervised warm-up
    process = kill_drill.start(command_of(workdir), first)
    stderr = stop_with(signal.SIGTERM, process, first, 1)
    assert process.returncode == 128 + signal.SIGTERM and "in epoch 1 and saved" in stderr, stderr[-3000:]
    second = str(tmp_path / "second")  # SIGINT inside epoch 3: LLP, after the switch
    process = kill_drill.start(command_of(workdir), second)
    stderr = stop_with(signal.SIGINT, process, second, 3)
    assert process.returncode == 128 + signal.SIGINT and "in epoch 3 and saved" in stderr, stderr[-3000:]
    assert "(0 epochs done" in stderr  # it resumed inside the warm-up
    last = str(tmp_path / "last")
    process = kill_drill.start(command_of(workdir), last)
    assert process.wait(timeout=600) == 0, kill_drill.read(f"{last}.err")[-3000:]
    assert "(2 epochs done" in kill_drill.read(f"{last}.err")  # and then after the switch
    assert_same_as_reference(reference, workdir)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["supervised", "llp"])
def test_ten_labels_per_class_train_in_both_methods(method, tmp_path):
    """Fashion-MNIST with 10 labelled images per class (100, fewer than one batch of 128): supervised
    training and the supervised warm-up cycle them; LLP propagates from them."""
    if not __import__("os").path.isdir(FASHION_MNIST):
        pytest.skip("needs the Debian package dataset-fashion-mnist (CI installs it)")
    config = TrainConfig(
        dataset=f"idx:{FASHION_MNIST}", workdir=str(tmp_path / method), method=method,
        labelled_fraction=10 / 6000, kept_fraction=0.05, batch_size=128, epochs=2, warmup="supervised",
        warmup_epochs=1, steps_per_epoch=3, learning_rate=0.05, eval_knn_k=20, strategy="default",
        verbose=0)
    metrics = train.train(config)
    assert metrics["num_labelled"] == 100 and metrics["epochs"] == 2
    assert np.isfinite(metrics["val_top1"]) and metrics["val_top1"] > 0.15  # above chance (0.1)
    if method == "llp":
        assert len(metrics["pseudo_label_accuracy_history"]) == 2
        assert metrics["pseudo_label_accuracy"] > 0.15
