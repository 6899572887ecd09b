"""llp-propagate: LLP (or weighted-kNN) label propagation on a user's own features.

  llp-propagate --features=IN.npz --output=OUT.npz [--k=10 --t=25 --tau=0.07 --method=llp]

IN.npz is a features file (llp_tf/features.py): `features` (float [N, D]; rows are L2-normalised) and
`labels` (int [N], -1 marks unlabelled: those rows are propagated to; the old key `embeddings` is still
read). OUT.npz holds `pseudo_labels` (int64 [N]) and `confidences` (float32 [N]); labelled rows keep
their label with confidence 1.
"""
import os
import sys
import time

import numpy as np
from absl import flags

from llp_tf import config
from llp_tf.features import load_features
from llp_tf.tools import cli

flags.DEFINE_string("features", None,
                    "input features file: features [N, D] and labels [N] (-1 = unlabelled)")
flags.DEFINE_string("output", None, "output .npz with pseudo_labels and confidences")
flags.DEFINE_integer("k", 10, "K: labelled neighbours that vote (paper: 10)")
flags.DEFINE_integer("t", 25, "T: neighbours of the local density (llp only; paper: 25)")
flags.DEFINE_float("tau", 0.07, "temperature of the votes (paper: 0.07)")
flags.DEFINE_enum("method", "llp", ["llp", "knn"], "llp: density-weighted (paper Eq. 8); knn: weighted kNN")
flags.DEFINE_bool("density_include_self", False,
                  "llp: count a labelled row among its own density neighbours (released code; paper: no)")
flags.DEFINE_integer("num_classes", None, "default: largest label + 1")
flags.DEFINE_integer("query_rows", config.PROPAGATION_QUERY_ROWS, "query rows per block")
flags.DEFINE_integer("key_rows", config.PROPAGATION_KEY_ROWS, "key rows per block")
flags.mark_flags_as_required(["features", "output"])
FLAGS = flags.FLAGS
FLAG_GROUPS = [
    ("Input and output", ["features", "output", "num_classes"]),
    ("Method", ["method", "k", "t", "tau", "density_include_self"]),
    ("Hardware (block sizes of the propagation)", ["query_rows", "key_rows"]),
]


def main(argv):
    del argv
    started = time.perf_counter()
    try:
        # Where the result goes, then the input, before the propagation: a bad path loses no work.
        cli.check_output_file("output", FLAGS.output, ".npz", inputs=[FLAGS.features])
        features, labels = load_features(FLAGS.features)
        num_classes = FLAGS.num_classes or int(labels.max()) + 1
        if labels.max() >= num_classes or labels.min() < -1:
            raise ValueError(f"{FLAGS.features}: labels must lie in [-1, {num_classes - 1}] (--num_classes="
                             f"{num_classes}), got [{labels.min()}, {labels.max()}]")
        # Not at the top: TensorFlow loads only once the flags and the input are checked (their
        # errors stay fast). The time reported leaves out TensorFlow's start-up, as it did before.
        importing = time.perf_counter()
        from llp_tf import propagation
        from llp_tf.checkpoints import replace_atomically
        started += time.perf_counter() - importing
        result = propagation.propagate(
            features, labels >= 0, labels, num_classes, k=FLAGS.k, t=FLAGS.t, tau=FLAGS.tau,
            use_density=FLAGS.method == "llp", include_self=FLAGS.density_include_self,
            block_sizes=propagation.BlockSizes(FLAGS.query_rows, FLAGS.key_rows))
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"llp-propagate: {error}")
    # Written beside the output, then renamed: a failure leaves no half file (and np.savez given a
    # file object adds no .npz to its name).
    try:
        replace_atomically(FLAGS.output, lambda file: np.savez(
            file, pseudo_labels=result.labels.astype(np.int64),
            confidences=result.confidences.astype(np.float32)))
    except OSError as error:
        if os.path.exists(f"{FLAGS.output}.partial"):
            os.remove(f"{FLAGS.output}.partial")
        sys.exit(f"llp-propagate: writing --output={FLAGS.output} failed: {error.strerror}")
    seconds = time.perf_counter() - started
    settings = f"K={FLAGS.k}, T={FLAGS.t}" if FLAGS.method == "llp" else f"K={FLAGS.k}"  # kNN has no T
    print(f"propagated {int((labels < 0).sum())} unlabelled rows from {int((labels >= 0).sum())} labelled "
          f"({FLAGS.method}, {settings}, tau={FLAGS.tau:g}) in {seconds:.1f} s -> {FLAGS.output}")


def run():
    cli.run(main, "llp-propagate", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
