"""Resume after SIGKILL: a training process killed in the middle of an epoch, rerun with the same command,
finishes its planned epochs from its last checkpoint; the state the trainer restores from that
checkpoint (weights, optimizer step and momentum, bank, labels, confidences, log-density, epoch,
progress) equals it bit for bit. Other faults: tests/test_faults.py."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from llp_tf import experiment, resume
from llp_tf.config import TrainConfig
from tests.datasets import write_npz
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # every test here starts a program or trains a run

EPOCHS, STEPS = 4, 150  # one instance epoch, then three LLP epochs of STEPS steps
TIMEOUT = 300  # seconds, for any one wait


def command(npz, workdir):
    # --verbose=2: Keras prints "Epoch e/4" as an epoch starts and "150/150 - ..." as it ends, which
    # tells when to kill and, afterwards, that the kill landed inside epoch 3.
    return [sys.executable, "-m", "llp_tf.tools.train", f"--dataset=npz:{npz}", f"--workdir={workdir}",
            "--backbone=small_cnn", "--width=1", "--batch_size=32", "--labelled_fraction=0.1", "--k=5",
            "--t=10", "--eval_knn_k=20", "--learning_rate=0.05", f"--epochs={EPOCHS}",
            "--instance_epochs=1", f"--steps_per_epoch={STEPS}", "--verbose=2"]


def epoch_line(epoch):
    return f"Epoch {epoch}/{EPOCHS}"


def latest_checkpoint_number(workdir):
    state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
    if state is None or not state.model_checkpoint_path:
        return 0
    return int(state.model_checkpoint_path.rsplit("-", 1)[1])


def tail(path, size=3000):
    with open(path, errors="replace") as f:
        return f.read()[-size:]


def start_and_kill_in_epoch_3(npz, workdir, logs):
    """Starts training, SIGKILLs it about a third into epoch 3, returns the process's stdout."""
    stdout_path, stderr_path = logs / "killed.stdout", logs / "killed.stderr"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        process = subprocess.Popen(command(npz, workdir), stdout=out, stderr=err, cwd=ROOT, env=env)
    try:
        def wait_for(what, ready):
            deadline = time.monotonic() + TIMEOUT
            while not ready():
                if process.poll() is not None:
                    pytest.fail(f"training exited with {process.returncode} before {what}:\n"
                                f"{tail(stdout_path)}\n{tail(stderr_path)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {what} after {TIMEOUT} s:\n{tail(stdout_path)}\n{tail(stderr_path)}")
                time.sleep(0.05)
            return time.monotonic()

        read = stdout_path.read_text
        epoch_2 = wait_for("start of epoch 2", lambda: epoch_line(2) in read())
        epoch_3 = wait_for("checkpoint 2 and the start of epoch 3",
                           lambda: epoch_line(3) in read() and latest_checkpoint_number(workdir) == 2)
        # Epoch 2 (which also retraced the step for the LLP phase) took epoch_3 - epoch_2: epoch 3
        # is at least about as long, so this lands among its training steps.
        time.sleep(max(0.2, 0.3 * (epoch_3 - epoch_2)))
        print(f"epoch 2 took {epoch_3 - epoch_2:.1f} s; killing {time.monotonic() - epoch_3:.1f} s "
              "into epoch 3")
        if process.poll() is not None:
            pytest.fail(f"training finished (exit {process.returncode}) before the kill")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:  # a failed wait: leave no training behind
            process.kill()
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return read()


def test_resume_after_sigkill_mid_epoch(tmp_path):
    npz = write_npz(tmp_path / "data.npz", num_train=2000)
    workdir = str(tmp_path / "run")
    stdout = start_and_kill_in_epoch_3(npz, workdir, tmp_path)
    after_epoch_3_started = stdout.split(epoch_line(3), 1)[1]
    assert f"{STEPS}/{STEPS}" not in after_epoch_3_started, (
        "the kill landed after epoch 3 ended (machine too busy?):\n" + stdout[-3000:])
    assert latest_checkpoint_number(workdir) == 2
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))

    check_restore_is_bit_exact(workdir, latest, tmp_path / "resaved")

    result = subprocess.run(command(npz, workdir), capture_output=True, text=True, cwd=ROOT,
                            timeout=TIMEOUT)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["epochs"] == EPOCHS
    # The rerun trained epochs 3 and 4 only, with the optimizer's step count carried over.
    assert epoch_line(3) in result.stdout and epoch_line(4) in result.stdout
    assert epoch_line(2) not in result.stdout
    assert latest_checkpoint_number(workdir) == EPOCHS
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", f"ckpt-{EPOCHS}"))
    assert reader.get_tensor("state/completed_epochs/.ATTRIBUTES/VARIABLE_VALUE") == EPOCHS
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == EPOCHS * STEPS
    # TensorBoard: the killed run's epochs 1-2, then the rerun's 3-4 at the restored step count.
    assert epoch_summaries(os.path.join(workdir, "tensorboard")) == [
        (STEPS * epoch, epoch) for epoch in range(1, EPOCHS + 1)]


def epoch_summaries(logdir):
    """[(step, epoch)] of the "epoch" scalar over every event file of logdir, in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    events.Reload()
    return [(e.step, int(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors("epoch")]


def check_restore_is_bit_exact(workdir, latest, resaved_dir):
    """Rebuilds the run as the trainer does, restores with its restore(), then writes the restored
    objects to a new checkpoint: it must hold the same keys as `latest`, each bit for bit."""
    with open(os.path.join(workdir, "config.json")) as f:
        values = json.load(f)
    values["lr_drop_epochs"] = tuple(values["lr_drop_epochs"])
    run = experiment.Experiment(TrainConfig(**values))
    assert resume.restore(run) == (2, 0)  # the trainer's own restore: 2 epochs done, none of the 3rd
    original = tf.train.load_checkpoint(latest)
    state = run.model.state
    direct = {"state/bank": state.bank, "state/labels": state.labels,
              "state/confidences": state.confidences, "state/is_labelled": state.is_labelled,
              "state/log_density": state.log_density, "state/completed_epochs": state.completed_epochs,
              "optimizer/_iterations": run.model.optimizer.iterations,
              "progress/steps_in_epoch": run.progress.steps_in_epoch,
              "progress/pseudo_label_accuracy_history": run.progress.pseudo_label_accuracy_history}
    for key, variable in direct.items():
        saved = original.get_tensor(f"{key}/.ATTRIBUTES/VARIABLE_VALUE")
        live = variable.numpy()
        assert live.dtype == saved.dtype and np.array_equal(live, saved), key
    assert run.model.optimizer.iterations.numpy() == 2 * STEPS
    assert np.all(state.labels.numpy() >= 0)  # propagated labels, not the -1 of a fresh state
    assert len(run.progress.pseudo_label_accuracy_history.numpy()) == 2  # the switch, LLP epoch 2

    resaved = tf.train.load_checkpoint(run.checkpoint.write(str(resaved_dir / "ckpt")))
    graph = "_CHECKPOINTABLE_OBJECT_GRAPH"
    original_keys = set(original.get_variable_to_shape_map()) - {graph}
    assert set(resaved.get_variable_to_shape_map()) - {graph} == original_keys
    for key in sorted(original_keys):
        before, after = original.get_tensor(key), resaved.get_tensor(key)
        assert before.dtype == after.dtype and np.array_equal(before, after), key
    # Every variable of the model, its optimizer (momentum included) and the state is in there.
    live = {id(v): v for v in (run.model.weights + run.model.optimizer.variables
                               + list(state.variables) + list(run.progress.variables))}
    momentum = [v for v in run.model.optimizer.variables if "momentum" in v.path]
    assert len(momentum) == len(run.model.trainable_variables)
    assert len(original_keys) == len(live) + 1  # + the checkpoint's save_counter
