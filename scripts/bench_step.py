"""Benchmark: one LLP (and instance-recognition) training step against one supervised step of the same
network and batch, in the same process, as the memory bank grows; and the parts of the LLP step.

  python scripts/bench_step.py --bank_rows=10000,60000,200000,1000000 --backbone=small_cnn --image_size=28

Phases are timed in interleaved rounds and the median round is reported, so that load from other
processes hits every phase alike. Parts, each alone in its own tf.function:
  supervised: the whole supervised step (network forward, backward, SGD update; bank update);
  scoring:  the aggregation loss of a batch of embeddings against the bank, forward and backward (the
            O(B N D) part that grows with the bank);
  update:   blending the batch into its bank rows (gather, normalise, scatter).
And the LLP step with the consistency departure (--consistency_weight: one more forward pass, of the
weak views, per step), on a second model of the same shape, against the plain LLP step.
"""
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from llp_tf import bank as bank_lib
from llp_tf import losses
import bench_common  # scripts/bench_common.py: these scripts run as files, not installed

flags.DEFINE_list("bank_rows", ["10000", "60000", "200000"], "bank sizes N to measure")
flags.DEFINE_string("backbone", "small_cnn", "backbone")
flags.DEFINE_integer("width", None, "backbone width multiplier")
flags.DEFINE_integer("image_size", 28, "square image side")
flags.DEFINE_integer("channels", 1, "image channels")
flags.DEFINE_integer("batch_size", 128, "batch")
flags.DEFINE_integer("num_classes", 10, "classes")
flags.DEFINE_integer("rounds", 7, "interleaved timing rounds (the median is reported)")
flags.DEFINE_integer("steps", 5, "steps per phase per round (after 3 warm-up steps)")
FLAGS = flags.FLAGS

PHASES = ("supervised", "instance", "llp")


def build_model(num_rows, **departures):
    rng = np.random.default_rng(0)
    shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
    return bench_common.build_model(FLAGS.backbone, shape, FLAGS.num_classes, rng.random(num_rows) < 0.01,
                                    rng.integers(0, FLAGS.num_classes, num_rows), width=FLAGS.width,
                                    **departures)


def consistency_step(num_rows, batch):
    """One traced, warmed-up LLP step of a model with the consistency departure, on batch and its
    weak views (the same images flipped: the step's cost does not depend on their content)."""
    model = build_model(num_rows, consistency_weight=1.0)
    model.phase = "llp"
    function = traced_step(model, batch + (tf.image.flip_left_right(batch[0]),))
    for _ in range(3):
        function()
    return function


def step_functions(model, batch):
    """{name: zero-argument callable running one step or part}, each traced once and warmed up."""
    functions = {}
    for phase in PHASES:
        model.phase = phase  # a Python branch of train_step: trace now, while it holds
        functions[phase] = traced_step(model, batch)
    state = model.state
    embeddings = tf.math.l2_normalize(tf.random.stateless_normal((FLAGS.batch_size, 128), (1, 2)), axis=1)
    images, _, indices = batch
    labels = tf.gather(state.labels, indices)

    @tf.function
    def scoring():
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = tf.reduce_sum(losses.aggregation_loss(
                embeddings, tf.convert_to_tensor(state.bank), state.labels, labels, model.tau))
        return tape.gradient(loss, embeddings)

    @tf.function
    def update():
        bank_lib.update_bank(state.bank, indices, embeddings, model.bank_momentum)
        return state.bank[0, 0]

    functions["scoring"], functions["update"] = scoring, update
    for function in functions.values():
        for _ in range(3):
            function()
    return functions


def traced_step(model, batch):
    """model's train_step on batch, traced now (its phase is a Python branch), as a callable."""
    step = tf.function(model.train_step)
    step.get_concrete_function(batch)
    return lambda: step(batch)["loss"]


def median_ms(functions):
    """{name: median over rounds of milliseconds per call}."""
    times = {name: [] for name in functions}
    for _ in range(FLAGS.rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            for _ in range(FLAGS.steps):
                result = function()
            np.asarray(result)  # wait for the last call
            times[name].append(1000 * (time.perf_counter() - started) / FLAGS.steps)
    return {name: float(np.median(t)) for name, t in times.items()}




def main(argv):
    del argv
    print(bench_common.describe())
    print(f"{FLAGS.backbone} {FLAGS.image_size}x{FLAGS.image_size}x{FLAGS.channels}, batch {FLAGS.batch_size}, "
          f"median of {FLAGS.rounds} interleaved rounds of {FLAGS.steps} steps")
    print("| N | supervised ms | instance ms | LLP ms | instance / sup | LLP / sup | scoring ms | update ms "
          "| LLP + consistency ms | LLP + consistency / LLP |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(1)
    for num_rows in [int(n) for n in FLAGS.bank_rows]:
        model = build_model(num_rows)
        shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
        batch = (tf.constant(rng.random(shape), tf.float32),
                 tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), tf.int64),
                 tf.constant(rng.permutation(num_rows)[:FLAGS.batch_size], tf.int64))
        functions = step_functions(model, batch)
        functions["consistency"] = consistency_step(num_rows, batch)
        ms = median_ms(functions)
        sup = ms["supervised"]
        print(f"| {num_rows:,} | {sup:.1f} | {ms['instance']:.1f} | {ms['llp']:.1f} | "
              f"{ms['instance'] / sup:.2f} | {ms['llp'] / sup:.2f} | {ms['scoring']:.1f} | "
              f"{ms['update']:.1f} | {ms['consistency']:.1f} | {ms['consistency'] / ms['llp']:.2f} |",
              flush=True)


if __name__ == "__main__":
    app.run(main)
