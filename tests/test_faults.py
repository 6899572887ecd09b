"""Faults lose nothing and runs are reproducible.

End to end (subprocesses, --deterministic): SIGINT and SIGTERM stop training at a step with a
checkpoint of it, and SIGKILLs inside checkpoint saves (scripts/kill_drill.py pauses the save there)
lose nothing; after the reruns, metrics.json and the final checkpoint equal those of a run that was
never stopped, so two runs with the same seeds give identical values. In process: a damaged checkpoint
is skipped for the previous one (by training and by the tools that read a run), one of an older
version is refused, non-finite state is never saved,
a non-finite loss stops training, a full disk (a small tmpfs) leaves the previous checkpoint intact,
and the labelled split is checked.
"""
import glob
import hashlib
import json
import logging
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from llp_tf import checkpoints, experiment, resume, train
from llp_tf.config import TrainConfig
from llp_tf.workdir import Workdir
from scripts import kill_drill

EPOCHS, STEPS = 3, 10  # one instance-recognition epoch, then two LLP epochs


@pytest.fixture(scope="module")
def reference_run(tiny_npz, tmp_path_factory):
    """The workdir of an uninterrupted run of the command the fault tests stop and rerun."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    process = kill_drill.start(command(tiny_npz, workdir), workdir)
    assert process.wait(timeout=600) == 0, kill_drill.read(f"{workdir}.err")[-3000:]
    return workdir


def command(npz, workdir):
    return kill_drill.train_command(f"npz:{npz}", workdir, epochs=EPOCHS, steps_per_epoch=STEPS, keep=2)


def stop_with(signal_number, process, log_prefix, epoch):
    """Sends the signal as soon as the run prints "Epoch <epoch>/3" and returns its stderr."""
    deadline = time.monotonic() + 600
    while f"Epoch {epoch}/{EPOCHS}" not in kill_drill.read(f"{log_prefix}.out"):
        assert process.poll() is None, kill_drill.read(f"{log_prefix}.err")[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal_number)
    process.wait(timeout=600)
    return kill_drill.read(f"{log_prefix}.err")


def assert_same_as_reference(reference, workdir):
    problems, differing = kill_drill.compare_runs(reference, workdir)
    assert not problems, problems
    assert not differing, differing  # deterministic ops and per-epoch data seeds: bit for bit


@pytest.mark.slow
def test_sigint_and_sigterm_stop_at_a_step_and_reruns_finish_like_an_uninterrupted_run(
        reference_run, tiny_npz, tmp_path):
    workdir = str(tmp_path / "run")
    first = str(tmp_path / "first")
    process = kill_drill.start(command(tiny_npz, workdir), first)
    stderr = stop_with(signal.SIGINT, process, first, 1)
    assert process.returncode == 128 + signal.SIGINT  # 130, as for any program stopped by Ctrl-C
    stopped = [line for line in stderr.splitlines() if line.startswith("llp-train: SIGINT: stopped")]
    assert stopped, stderr[-3000:]
    step = int(stopped[0].split("after step ")[1].split()[0])
    assert 1 <= step < STEPS and f"of {STEPS} in epoch 1 and saved" in stopped[0]
    interrupted = os.path.join(workdir, "checkpoints", "interrupted", f"ckpt-{step}")
    assert interrupted in stopped[0] and checkpoints.saved_position(interrupted) == (0, step)
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "checkpoint"))  # no epoch ended

    second = str(tmp_path / "second")
    process = kill_drill.start(command(tiny_npz, workdir), second)
    stderr = stop_with(signal.SIGTERM, process, second, 2)
    assert process.returncode == 128 + signal.SIGTERM
    assert kill_drill.resumed_from(stderr) == interrupted
    assert f"(0 epochs done, {step} steps of epoch 1)" in stderr
    assert "llp-train: SIGTERM: stopped after step " in stderr and "in epoch 2 and saved" in stderr
    assert not os.path.exists(interrupted)  # epoch 1's checkpoint superseded it

    last = str(tmp_path / "last")
    process = kill_drill.start(command(tiny_npz, workdir), last)
    assert process.wait(timeout=600) == 0, kill_drill.read(f"{last}.err")[-3000:]
    assert "/interrupted/" in kill_drill.resumed_from(kill_drill.read(f"{last}.err"))
    assert_same_as_reference(reference_run, workdir)
    # The pseudo-label history spans the three processes: the switch and both LLP epochs.
    histories = [json.loads(kill_drill.read(Workdir(w).metrics))["pseudo_label_accuracy_history"]
                 for w in (workdir, reference_run)]
    assert len(histories[0]) == EPOCHS and histories[0] == histories[1]


@pytest.mark.slow
def test_sigkills_inside_checkpoint_saves_lose_nothing(reference_run, tiny_npz, tmp_path):
    """Killed (1) with epoch 2's shards written but not merged, (2) with epoch 3's checkpoint merged
    but not yet recorded: each rerun resumes from the newest checkpoint that reads back whole."""
    workdir = str(tmp_path / "run")
    expected = None
    for number, pause_at in enumerate(["write:2", "record:2", None]):
        log = str(tmp_path / f"round{number}")
        process = kill_drill.start(command(tiny_npz, workdir), log, pause_at)
        if pause_at:
            assert kill_drill.kill_when(process, kill_drill.paused(log)), kill_drill.read(f"{log}.err")
        else:
            assert process.wait(timeout=600) == 0, kill_drill.read(f"{log}.err")[-3000:]
        assert kill_drill.resumed_from(kill_drill.read(f"{log}.err")) == expected
        health, recorded = kill_drill.checkpoint_health(workdir)
        assert all(error is None for _, error in health.values()), health
        expected = kill_drill.expected_restore(health, recorded)
        if pause_at == "write:2":
            assert os.path.isdir(os.path.join(workdir, "checkpoints", "ckpt-2_temp"))
            assert expected.endswith("ckpt-1")
        if pause_at == "record:2":  # whole on disk, but the state file does not name it
            assert set(health) > set(recorded) and expected.endswith("ckpt-2")
    assert_same_as_reference(reference_run, workdir)


# ----------------------------------------------------------------------------------------------
# In process, on the default one-device strategy


def tiny_config(npz, workdir, **overrides):
    values = dict(dataset=f"npz:{npz}", workdir=str(workdir), backbone="small_cnn", width=1,
                  batch_size=32, labelled_fraction=0.1, k=5, t=10, eval_knn_k=20, learning_rate=0.05,
                  epochs=2, instance_epochs=1, steps_per_epoch=4, strategy="default", verbose=0)
    values.update(overrides)
    return TrainConfig(**values)


def bank_of(path):
    return tf.train.load_checkpoint(path).get_tensor("state/bank/.ATTRIBUTES/VARIABLE_VALUE")


def test_restore_skips_a_damaged_checkpoint_for_the_previous_one(tiny_npz, tmp_path, caplog):
    config = tiny_config(tiny_npz, tmp_path)
    run = experiment.Experiment(config)
    checkpoints = tmp_path / "checkpoints"
    resume.save_checkpoint(run, None, 1)
    run.model.state.bank.assign(-run.model.state.bank)  # ckpt-2 differs from ckpt-1
    resume.save_checkpoint(run, None, 2)
    interrupted = resume.save_checkpoint(run, None, 2, steps_in_epoch=3)
    assert resume.restore(experiment.Experiment(config)) == (2, 3)  # the interrupted one is the newest

    data_file = glob.glob(f"{interrupted}.data-*")[0]
    damaged = bytearray(open(data_file, "rb").read())
    damaged[len(damaged) // 2] ^= 0xFF
    open(data_file, "wb").write(bytes(damaged))
    assert resume.restore(experiment.Experiment(config)) == (2, 0)
    assert f"checkpoint {interrupted} does not read back whole" in caplog.text
    assert "Checksum does not match" in caplog.text

    data_file = glob.glob(str(checkpoints / "ckpt-2.data-*"))[0]
    open(data_file, "r+b").truncate(1000)
    fresh = experiment.Experiment(config)
    assert resume.restore(fresh) == (1, 0)
    np.testing.assert_array_equal(fresh.model.state.bank.numpy(), bank_of(str(checkpoints / "ckpt-1")))

    os.remove(checkpoints / "ckpt-1.index")
    with pytest.raises(resume.TrainingFailed, match="no checkpoint in .* reads back whole"):
        resume.restore(experiment.Experiment(config))


def test_reading_tools_take_the_newest_whole_checkpoint(tiny_npz, tmp_path, caplog):
    """llp-eval, llp-export and --init_from (finished.checkpoint_path, resume.init_network) skip damaged
    checkpoints for the newest one that reads back whole, and name the problem when none does."""
    from llp_tf import finished

    config = tiny_config(tiny_npz, tmp_path)
    (tmp_path / "config.json").write_text(config.to_json())
    run = experiment.Experiment(config)
    checkpoints = tmp_path / "checkpoints"
    resume.save_checkpoint(run, None, 1)
    run.model.state.bank.assign(-run.model.state.bank)
    resume.save_checkpoint(run, None, 2)
    interrupted = resume.save_checkpoint(run, None, 2, steps_in_epoch=3)
    assert finished.checkpoint_path(str(tmp_path)) == interrupted

    data_file = glob.glob(f"{interrupted}.data-*")[0]
    damaged = bytearray(open(data_file, "rb").read())
    damaged[len(damaged) // 2] ^= 0xFF
    open(data_file, "wb").write(bytes(damaged))
    assert finished.checkpoint_path(str(tmp_path)) == str(checkpoints / "ckpt-2")
    assert f"checkpoint {interrupted} does not read back whole" in caplog.text

    open(glob.glob(str(checkpoints / "ckpt-2.data-*"))[0], "r+b").truncate(1000)
    assert finished.checkpoint_path(str(tmp_path), str(checkpoints)) == str(checkpoints / "ckpt-1")
    model, _ = finished.restore_model(str(tmp_path))
    np.testing.assert_array_equal(model.state.bank.numpy(), bank_of(str(checkpoints / "ckpt-1")))
    started = experiment.Experiment(tiny_config(tiny_npz, tmp_path / "started"))
    assert resume.init_network(started, str(tmp_path)) == str(checkpoints / "ckpt-1")

    os.remove(checkpoints / "ckpt-1.index")
    with pytest.raises(ValueError, match="no checkpoint in .* reads back whole"):
        finished.checkpoint_path(str(tmp_path))
    with pytest.raises(ValueError, match="--init_from=.*: no checkpoint in .* reads back whole"):
        resume.init_network(experiment.Experiment(tiny_config(tiny_npz, tmp_path / "started")), str(tmp_path))


def test_a_checkpoint_without_the_resume_progress_is_refused(tiny_npz, tmp_path):
    config = tiny_config(tiny_npz, tmp_path)
    run = experiment.Experiment(config)
    older = tf.train.Checkpoint(model=run.model, optimizer=run.model.optimizer, state=run.model.state)
    tf.train.CheckpointManager(older, str(tmp_path / "checkpoints"), max_to_keep=1).save(1)
    with pytest.raises(ValueError, match="ckpt-1 was written by another version of llp_tf .*steps_in_epoch"):
        resume.restore(experiment.Experiment(config))


def test_non_finite_state_is_never_saved(tiny_npz, tmp_path):
    run = experiment.Experiment(tiny_config(tiny_npz, tmp_path))
    resume.save_checkpoint(run, None, 1)
    run.model.state.bank[0, 0].assign(float("nan"))
    kept = str(tmp_path / "checkpoints" / "ckpt-1")
    with pytest.raises(resume.TrainingFailed,
                       match=rf"non-finite values in bank at the end of epoch 2: not saved\. The last "
                             rf"good checkpoint, {kept} \(1 epochs done\), is kept"):
        resume.save_checkpoint(run, None, 2)
    assert not glob.glob(str(tmp_path / "checkpoints" / "ckpt-2*"))


@pytest.mark.slow
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_npz, tmp_path):
    # Epoch 2's learning rate is 5e10: the weights, then the loss, blow up within a few steps.
    config = tiny_config(tiny_npz, tmp_path, steps_per_epoch=10, lr_drop_epochs=(1,), lr_drop_factor=1e12)
    kept = str(tmp_path / "checkpoints" / "ckpt-1")
    with pytest.raises(resume.TrainingFailed,
                       match=rf"the loss is (nan|inf) at step \d+ of 10 in epoch 2: training stopped, "
                             rf"nothing of this epoch was saved\. The last good checkpoint, {kept} "
                             r"\(1 epochs done\), is kept"):
        train.train(config)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) == kept
    assert not glob.glob(str(tmp_path / "checkpoints" / "ckpt-2*"))
    reader = tf.train.load_checkpoint(kept)
    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            assert np.isfinite(value).all(), key


@pytest.fixture
def small_disk(tmp_path):
    """A directory on its own 8 MB tmpfs (skips where this process may not mount)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): needs root and mount rights")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def file_digests(paths):
    return {path: hashlib.sha256(open(path, "rb").read()).hexdigest() for path in paths}


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tiny_npz, small_disk, caplog):
    caplog.set_level(logging.INFO, logger="absl")
    workdir = small_disk / "run"
    checkpoints = workdir / "checkpoints"
    train.train(tiny_config(tiny_npz, workdir, epochs=1, instance_epochs=0))
    kept = str(checkpoints / "ckpt-1")
    before = file_digests(glob.glob(f"{kept}.*"))
    checkpoint_bytes = sum(os.path.getsize(path) for path in before)
    disk = os.statvfs(small_disk)
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leaves half a checkpoint free
        f.write(b"\0" * (disk.f_bavail * disk.f_frsize - checkpoint_bytes // 2))

    with pytest.raises(resume.TrainingFailed) as failure:
        train.train(tiny_config(tiny_npz, workdir, epochs=2, instance_epochs=0))
    message = str(failure.value)
    assert f"writing checkpoint {checkpoints / 'ckpt-2'} at the end of epoch 2 failed" in message
    assert "No space left on device" in message
    assert f"The last good checkpoint, {kept} (1 epochs done), is kept" in message
    assert file_digests(glob.glob(f"{kept}.*")) == before
    assert sorted(os.listdir(checkpoints)) == ["checkpoint", *sorted(map(os.path.basename, before))]

    os.remove(filler)
    caplog.clear()
    metrics = train.train(tiny_config(tiny_npz, workdir, epochs=2, instance_epochs=0))
    assert f"resuming from {kept}" in caplog.text and metrics["epochs"] == 2


def test_the_labelled_split_is_saved_checked_and_follows_its_seed(tiny_npz, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = experiment.Experiment(tiny_config(tiny_npz, tmp_path / "a", split_seed=0))
    experiment.check_workdir(str(tmp_path / "a"), first)
    experiment.check_workdir(str(tmp_path / "a"),
                             experiment.Experiment(tiny_config(tiny_npz, tmp_path / "a", split_seed=0)))
    other = experiment.Experiment(tiny_config(tiny_npz, tmp_path / "b", split_seed=1))
    with pytest.raises(ValueError, match="holds another labelled split"):
        experiment.check_workdir(str(tmp_path / "a"), other)
    experiment.check_workdir(str(tmp_path / "b"), other)
    saved = [np.load(Workdir(tmp_path / name).split) for name in ("a", "b")]
    np.testing.assert_array_equal(saved[0]["is_labelled"], first.selection.is_labelled)
    assert not np.array_equal(saved[0]["rows"][saved[0]["is_labelled"]],
                              saved[1]["rows"][saved[1]["is_labelled"]])
