"""Writes a features file for llp-propagate: Gaussian classes in D dimensions, M rows labelled.

  python scripts/synthetic_features.py --n=200000 --d=128 --m=20000 --output=/tmp/feat200k.npz

The file (the format of llp_tf/features.py) holds features [N, D] float32, labels [N] (-1 =
unlabelled) and truth [N] (every row's class, for scoring the propagation).
"""
import numpy as np
from absl import app, flags

flags.DEFINE_integer("n", 200_000, "rows")
flags.DEFINE_integer("d", 128, "dimensions")
flags.DEFINE_integer("m", 20_000, "labelled rows")
flags.DEFINE_integer("classes", 100, "classes")
flags.DEFINE_float("noise", 1.5, "standard deviation around the class centres (centres ~ N(0, 1))")
flags.DEFINE_integer("seed", 0, "seed")
flags.DEFINE_string("output", None, "output .npz")
flags.mark_flag_as_required("output")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    centres = rng.normal(size=(FLAGS.classes, FLAGS.d)).astype(np.float32)
    truth = rng.integers(0, FLAGS.classes, FLAGS.n)
    features = centres[truth] + FLAGS.noise * rng.normal(size=(FLAGS.n, FLAGS.d)).astype(np.float32)
    labels = np.full(FLAGS.n, -1)
    labelled = rng.permutation(FLAGS.n)[:FLAGS.m]
    labels[labelled] = truth[labelled]
    np.savez(FLAGS.output, features=features, labels=labels, truth=truth)
    print(f"wrote {FLAGS.output}: {FLAGS.n} x {FLAGS.d}, {FLAGS.m} labelled, {FLAGS.classes} classes")


if __name__ == "__main__":
    app.run(main)
