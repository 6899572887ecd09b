"""Benchmark: one LLP (and instance-recognition) training step against one supervised step of the same
network and batch, in the same process, as the memory bank grows.

  python tools/bench_step.py --bank_rows=10000,60000,200000 --backbone=small_cnn --image_size=28

Prints milliseconds per step and the ratios to the supervised step, with the machine it ran on.
"""
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from llp_tf.backbones import build_backbone
from llp_tf.model import LLPModel, LLPState

flags.DEFINE_list("bank_rows", ["10000", "60000", "200000"], "bank sizes N to measure")
flags.DEFINE_string("backbone", "small_cnn", "backbone")
flags.DEFINE_integer("image_size", 28, "square image side")
flags.DEFINE_integer("channels", 1, "image channels")
flags.DEFINE_integer("batch_size", 128, "batch")
flags.DEFINE_integer("num_classes", 10, "classes")
flags.DEFINE_integer("steps", 20, "timed steps per phase (after 3 warm-up steps)")
FLAGS = flags.FLAGS


def build_model(num_rows):
    rng = np.random.default_rng(0)
    is_labelled = rng.random(num_rows) < 0.01
    labels = rng.integers(0, FLAGS.num_classes, num_rows)
    state = LLPState(is_labelled, labels, 128)
    state.labels.assign(labels)  # as after a propagation
    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
    model = LLPModel(build_backbone(FLAGS.backbone, shape), FLAGS.num_classes, state)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model(tf.zeros((1,) + shape))
    return model


def ms_per_step(model, phase, batch):
    model.phase = phase
    step = tf.function(model.train_step)
    for _ in range(3):
        step(batch)
    started = time.perf_counter()
    for _ in range(FLAGS.steps):
        logs = step(batch)
    float(logs["loss"])  # wait for the last step
    return 1000 * (time.perf_counter() - started) / FLAGS.steps


def main(argv):
    del argv
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"{FLAGS.backbone} {FLAGS.image_size}x{FLAGS.image_size}x{FLAGS.channels}, batch {FLAGS.batch_size}")
    print(f"{'N':>9} {'supervised ms':>14} {'instance ms':>12} {'llp ms':>8} {'instance/sup':>13} {'llp/sup':>8}")
    rng = np.random.default_rng(1)
    for num_rows in [int(n) for n in FLAGS.bank_rows]:
        model = build_model(num_rows)
        shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
        batch = (tf.constant(rng.random(shape), tf.float32),
                 tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), tf.int64),
                 tf.constant(rng.permutation(num_rows)[:FLAGS.batch_size], tf.int64))
        times = {phase: ms_per_step(model, phase, batch) for phase in ("supervised", "instance", "llp")}
        sup = times["supervised"]
        print(f"{num_rows:>9} {sup:>14.1f} {times['instance']:>12.1f} {times['llp']:>8.1f} "
              f"{times['instance'] / sup:>13.2f} {times['llp'] / sup:>8.2f}")


if __name__ == "__main__":
    app.run(main)
