"""The line every benchmark prints first: which machine and TensorFlow produced its figures."""
import os
import platform

import tensorflow as tf


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe():
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
            f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}, "
            f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
