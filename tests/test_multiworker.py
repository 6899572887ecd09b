"""llp-train as a two-worker MultiWorkerMirroredStrategy cluster: two processes on loopback ports, each
with its own TF_CONFIG. Both workers' bank copies must end identical, and equal to those of the
one-process two-replica run `tiny_llp_run` (same settings, so the same global batches split the
same way) to float rounding; only the chief writes to the shared workdir."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from llp_tf import distribute
from tests.conftest import ROOT

WORKERS = 2
# The cluster run takes 1-2.5 min on 2 cores shared with other jobs; the limit only ends a hang.
CLUSTER_TIMEOUT_SECONDS = 300
STATE_KEY = "state/{}/.ATTRIBUTES/VARIABLE_VALUE"


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def flags_like(recorded_workdir, overrides):
    """llp-train flags of the run recorded in recorded_workdir/config.json, with overrides."""
    config = json.loads((recorded_workdir / "config.json").read_text())
    config.update(overrides)
    flags = []
    for name, value in config.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        flags.append(f"--{name}={value}")
    return flags


def run_cluster(base, flags):
    """Runs llp-train as WORKERS processes of one cluster; returns their state dumps and private
    temporary directories. Any failure or the timeout kills every worker and shows their logs."""
    ports = free_ports(WORKERS)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes, logs, dumps, scratch_dirs = [], [], [], []
    try:
        for index in range(WORKERS):
            scratch = base / f"tmp{index}"
            scratch.mkdir()
            env = dict(os.environ, TMPDIR=str(scratch), TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            logs.append(base / f"worker{index}.log")
            dumps.append(base / f"worker{index}.npz")
            scratch_dirs.append(scratch)
            with open(logs[-1], "w") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "llp_tf.tools.train", *flags, f"--state_dump={dumps[-1]}"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        problem = wait_for(processes, time.monotonic() + CLUSTER_TIMEOUT_SECONDS)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if problem:
        tails = "\n".join(f"--- worker {i} ---\n{log.read_text()[-4000:]}" for i, log in enumerate(logs))
        pytest.fail(f"{problem}\n{tails}")
    return dumps, scratch_dirs


def wait_for(processes, deadline):
    """None once every process exited with 0, else what went wrong (a failed worker leaves the
    others waiting in a collective, so the first failure ends the wait)."""
    while time.monotonic() < deadline:
        codes = [process.poll() for process in processes]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return f"worker {failed[0]} exited with {codes[failed[0]]}"
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.5)
    return f"the cluster did not finish within {CLUSTER_TIMEOUT_SECONDS} s"


def checkpoint_state(workdir, name, epoch=None):
    """A state variable from the checkpoint after `epoch` (None: the newest)."""
    if epoch is None:
        path = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
        assert path is not None, f"no checkpoint in {workdir}"
    else:
        path = str(workdir / "checkpoints" / f"ckpt-{epoch}")
    return tf.train.load_variable(path, STATE_KEY.format(name))


@pytest.fixture(scope="module")
def two_worker_run(tiny_llp_run, tmp_path_factory):
    """(workdir, llp-train flags, [chief's, other's] state dump, [their TMPDIRs]) of the cluster run."""
    reference = json.loads((tiny_llp_run / "config.json").read_text())
    assert reference["method"] == "llp" and 0 < reference["instance_epochs"] < reference["epochs"], \
        "the reference run must include the instance -> LLP switch"
    workdir = tmp_path_factory.mktemp("multiworker") / "workdir"
    flags = flags_like(tiny_llp_run, {"workdir": str(workdir), "strategy": "multiworker", "cpu_replicas": 0})
    dumps, scratch_dirs = run_cluster(workdir.parent, flags)
    return workdir, flags, [np.load(dump) for dump in dumps], scratch_dirs


@pytest.mark.slow
def test_two_workers_keep_identical_banks_equal_to_one_process(two_worker_run, tiny_llp_run):
    workdir, _, (chief, other), _ = two_worker_run
    assert chief["bank"].shape[0] == 1  # one replica (CPU) per worker
    for name in ("bank", "labels", "confidences"):
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    # Equal to the one-process run to float rounding after the first epoch (measured: 1.3e-7; the
    # rounding grows with training, to ~1e-3 in the third epoch, so later banks are not compared).
    np.testing.assert_allclose(checkpoint_state(workdir, "bank", epoch=1),
                               checkpoint_state(tiny_llp_run, "bank", epoch=1), atol=1e-5)
    # The switch's propagation (end of epoch 1) from those banks: the same pseudo-labels but for ties.
    assert np.mean(checkpoint_state(workdir, "labels", epoch=1)
                   == checkpoint_state(tiny_llp_run, "labels", epoch=1)) > 0.99
    labels = chief["labels"][0]
    assert (labels >= 0).all()  # propagation labelled every row on both workers
    # Final pseudo-labels only roughly: the grown rounding moved 3.5% of them on CI's machine.
    assert np.mean(labels == checkpoint_state(tiny_llp_run, "labels")) > 0.9
    # The chief's checkpoint holds what it trained.
    np.testing.assert_array_equal(checkpoint_state(workdir, "bank"), chief["bank"][0])


@pytest.mark.slow
def test_only_the_chief_writes(two_worker_run, tiny_llp_run):
    workdir, _, _, scratch_dirs = two_worker_run
    reference = json.loads((tiny_llp_run / "config.json").read_text())
    assert json.loads((workdir / "metrics.json").read_text())["epochs"] == reference["epochs"]
    assert (workdir / "config.json").exists()
    assert (workdir / "dataset.json").exists() and (workdir / "split.npz").exists()
    assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    for scratch in scratch_dirs:  # the other worker's checkpoints went here and were removed
        assert not list(scratch.iterdir())


@pytest.mark.slow
def test_a_rerun_restores_the_chiefs_checkpoint_on_every_worker(two_worker_run, tmp_path_factory):
    workdir, flags, _, _ = two_worker_run
    # No epoch left: a finished run's rerun changes nothing unless asked to --reevaluate, which
    # restores the chief's checkpoint on every worker and computes the final state again.
    dumps, _ = run_cluster(tmp_path_factory.mktemp("multiworker-rerun"), [*flags, "--reevaluate"])
    for dump in dumps:
        np.testing.assert_array_equal(np.load(dump)["bank"][0], checkpoint_state(workdir, "bank"))


def test_tf_config_worker_count(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.tf_config_worker_count() == 0
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert distribute.tf_config_worker_count() == 3
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.tf_config_worker_count()


def test_auto_picks_multiworker_when_tf_config_names_several_workers(monkeypatch):
    monkeypatch.setattr(distribute, "_multi_worker_strategy", lambda cpu_replicas: "multiworker")
    for workers, expected in ((2, "multiworker"), (1, tf.distribute.get_strategy())):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"][:workers]},
                                                    "task": {"type": "worker", "index": 0}}))
        assert distribute.make_strategy("auto") == expected


def test_multiworker_strategy_refuses_what_cannot_work(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        distribute.make_strategy("multiworker")
    with pytest.raises(ValueError, match="cpu_replicas"):
        distribute.make_strategy("multiworker", cpu_replicas=2)
    with pytest.raises(ValueError, match="unknown strategy 'multi'"):
        distribute.make_strategy("multi")


def test_a_non_chief_saves_to_a_scratch_directory_it_removes(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    checkpoint = tf.train.Checkpoint(value=tf.Variable(1.0))
    chief_dir = tmp_path / "checkpoints"
    as_worker = types.SimpleNamespace(extended=types.SimpleNamespace(should_checkpoint=False))
    manager = distribute.checkpoint_manager(checkpoint, str(chief_dir), as_worker, max_to_keep=2)
    for _ in range(2):  # the second save recreates the removed directory
        saved = manager.save()
        assert saved.startswith(str(tmp_path / "scratch"))
        assert not os.path.exists(manager.directory)
    assert not chief_dir.exists()
    as_chief = types.SimpleNamespace(extended=types.SimpleNamespace(should_checkpoint=True))
    distribute.checkpoint_manager(checkpoint, str(chief_dir), as_chief, max_to_keep=2).save()
    assert tf.train.latest_checkpoint(str(chief_dir)) is not None
