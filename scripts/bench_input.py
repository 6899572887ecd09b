"""Benchmark: the training input pipeline alone against the rate at which the model consumes batches,
in the same process, and whether feeding the model from the pipeline slows its steps.

  python scripts/bench_input.py --dataset=idx:/usr/share/datasets/fashion-mnist
  python scripts/bench_input.py --dataset=folder:/tmp/cifar10-jpg --backbone=cifar_resnet20

Three rates, in images per second, each after a warm-up:
  pipeline: iterating `data.train_dataset` (decode, augmentation, batching) with no model;
  cached:   the LLP (or supervised) train step on one batch held in memory: the model's consumption;
  fed:      the same step fed from the pipeline, as `fit` does.
pipeline / cached above 1 means the pipeline can keep up; fed / cached is what feeding costs (on a
CPU-only machine the pipeline and the model share the cores, so it is below 1 even then). The
peak resident memory (VmHWM) after each part is printed.
"""
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from llp_tf import data
import bench_common  # scripts/bench_common.py: these scripts run as files, not installed

flags.DEFINE_string("dataset", "idx:/usr/share/datasets/fashion-mnist", "idx:DIR | folder:DIR | npz:FILE | tfds:NAME")
flags.DEFINE_string("backbone", "small_cnn", "backbone")
flags.DEFINE_integer("image_size", None, "square image side; default: the dataset's own")
flags.DEFINE_integer("batch_size", 128, "batch")
flags.DEFINE_float("labelled_fraction", 0.01, "share of each class labelled")
flags.DEFINE_enum("phase", "llp", ["llp", "instance", "supervised"], "train step to feed")
flags.DEFINE_integer("steps", 40, "timed batches of each part (after 5 warm-up batches)")
flags.DEFINE_integer("rounds", 3, "interleaved rounds of the model parts (the median is reported)")
FLAGS = flags.FLAGS

WARM_UP = 5


def peak_mib():
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def images_per_second(next_batch, run_step, steps):
    for _ in range(WARM_UP):
        result = run_step(next_batch())
    np.asarray(result)
    started = time.perf_counter()
    for _ in range(steps):
        result = run_step(next_batch())
    np.asarray(result)  # wait for the last step
    return steps * FLAGS.batch_size / (time.perf_counter() - started)


def build_model(selection, num_classes, input_shape):
    model = bench_common.build_model(FLAGS.backbone, input_shape, num_classes, selection.is_labelled,
                                     np.asarray(selection.true_labels, np.int64))
    model.phase = FLAGS.phase  # a Python branch of train_step: trace while it holds
    return model


def main(argv):
    del argv
    print(bench_common.describe())
    started = time.perf_counter()
    source = data.load_source(FLAGS.dataset)
    selection = data.select_examples(source.labels("train"), FLAGS.labelled_fraction,
                                     class_names=source.class_names)
    image_size = FLAGS.image_size or source.image_shape[0]
    print(f"{FLAGS.dataset}: {len(selection.rows):,} training images, loaded and checked in "
          f"{time.perf_counter() - started:.1f} s; {FLAGS.backbone} {image_size}x{image_size}x"
          f"{source.channels}, batch {FLAGS.batch_size}, phase {FLAGS.phase}")
    dataset = data.train_dataset(source, selection, FLAGS.batch_size, image_size, seed=0,
                                 labelled_only=FLAGS.phase == "supervised")
    batches = iter(dataset)
    pipeline = images_per_second(lambda: next(batches), lambda batch: batch[0][0, 0, 0, 0], FLAGS.steps)
    print(f"pipeline alone: {pipeline:,.0f} images/s; peak memory {peak_mib():,.0f} MiB", flush=True)

    model = build_model(selection, source.num_classes, (image_size, image_size, source.channels))
    step = tf.function(model.train_step)
    held = next(batches)
    step.get_concrete_function(held)
    run_step = lambda batch: step(batch)["loss"]  # noqa: E731
    cached, fed = [], []
    for _ in range(FLAGS.rounds):
        cached.append(images_per_second(lambda: held, run_step, FLAGS.steps))
        fed.append(images_per_second(lambda: next(batches), run_step, FLAGS.steps))
    cached, fed = float(np.median(cached)), float(np.median(fed))
    print(f"model on a held batch: {cached:,.0f} images/s; fed by the pipeline: {fed:,.0f} images/s; "
          f"peak memory {peak_mib():,.0f} MiB")
    print(f"pipeline / model = {pipeline / cached:.2f}; fed / held = {fed / cached:.2f}")


if __name__ == "__main__":
    app.run(main)
