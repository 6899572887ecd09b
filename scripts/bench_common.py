"""What the benchmark scripts share: the line each prints first (which machine and TensorFlow produced
its figures), and the LLP model they time."""
import os
import platform

import keras
import tensorflow as tf

from llp_tf.backbones import build_backbone
from llp_tf.model import LLPModel, LLPState


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


def build_model(backbone, input_shape, num_classes, is_labelled, labels, width=None, **departures):
    """An LLPModel (SGD, built) whose every row already has a label, as after a propagation;
    departures: LLPModel's keyword arguments of departures from the paper."""
    state = LLPState(is_labelled, labels, 128)
    state.labels.assign(labels)
    model = LLPModel(build_backbone(backbone, input_shape, width=width), num_classes, state, **departures)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model(tf.zeros((1,) + tuple(input_shape)))
    # Built for every variable: a phase trains only some of them (LLPModel.phase_variables), and an
    # optimizer first used by one phase would refuse the other heads later.
    model.optimizer.build(model.trainable_variables)
    return model
