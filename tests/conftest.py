"""Test session set-up: split the CPU into two logical devices before TensorFlow touches them.

MirroredStrategy code paths are tested on ["/cpu:0", "/cpu:1"]; tests that need no strategy use the
default device, so the split costs nothing elsewhere.
"""
import os

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
