"""Test session set-up: split the CPU into two logical devices before TensorFlow touches them.

MirroredStrategy code paths are tested on ["/cpu:0", "/cpu:1"]; tests that need no strategy use the
default device, so the split costs nothing elsewhere.
"""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One 2-replica MirroredStrategy for the whole session: strategies created one after another in
    a process reuse collective instance keys, and the collective runtime then mixes their shapes."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Flags of a tiny llp-train run on tests.datasets.write_npz data: seconds per epoch on 2 cores.
TINY = ["--backbone=small_cnn", "--width=1", "--batch_size=32", "--labelled_fraction=0.1",
        "--k=5", "--t=10", "--eval_knn_k=20", "--learning_rate=0.05", "--verbose=0"]


def run_tool(module, *args, check=True):
    """Runs `python -m module args` from the repository root; raises with its output on failure."""
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    if check and result.returncode:
        raise AssertionError(f"{module} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    from tests.datasets import write_npz
    return write_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="session")
def tiny_llp_run(tiny_npz, tmp_path_factory):
    """The workdir of a finished 3-epoch LLP run (1 instance-recognition epoch) on 2 replicas."""
    workdir = tmp_path_factory.mktemp("runs") / "llp"
    run_tool("llp_tf.tools.train", f"--dataset=npz:{tiny_npz}", f"--workdir={workdir}", *TINY,
             "--epochs=3", "--instance_epochs=1", "--strategy=mirrored", "--cpu_replicas=2")
    return workdir


def scalar_series(logdir, tag):
    """Values of one scalar tag, in step order, read back from the event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    events.Reload()
    return [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]

