"""llp-compare-propagation: LLP's propagation against global methods on fixed features (paper Table 5),
then the time and memory each method takes as N grows.

  llp-compare-propagation --features=FEATURES.npz [--classes=50] [--output_json=OUT.json]
  llp-compare-propagation --workdir=runs/my_run --sweep_sizes=1000,5000,20000,60000,200000

Input: --features, a features file (llp_tf/features.py: `features` float [N, D], `labels` int [N]; here
every row's label must be known), or --workdir, the memory bank of a trained run's latest checkpoint
with the true labels of its training rows (the run's dataset must still be readable). Rows are
L2-normalised.

1. Table 5's protocol: --subsamples times, draw --classes classes (default 50, or all of them when the
   input has fewer) and --images_per_class images of each,
   label --labelled_per_class of each class, run every method and score it on the unlabelled rest.
   Prints accuracy (%) mean +- std over the subsamples, and the mean seconds per subsample.
2. Scale sweep (--sweep_sizes; empty skips it): N rows drawn from the features (drawn with replacement
   and jittered where N exceeds them), --sweep_labelled_fraction of each class labelled. Each method
   runs in a fresh process whose address space may grow by --memory_limit_gb beyond its start-up size
   (RLIMIT_AS, so an allocation that does not fit fails at once instead of swamping the machine), and
   is killed after --time_limit seconds. Prints seconds, peak resident memory above start-up and
   accuracy, or why the method stopped; a method that stopped at some N is not run at larger N.
   Linux only (/proc is read for resident memory).

Methods (--methods): llp (density-weighted votes, Eq. 5-8) and knn (weighted kNN) from
llp_tf/propagation.py; label_spreading_{knn,rbf} (Zhou et al. 2004) and label_propagation_{knn,rbf} (Zhu &
Ghahramani 2002) from scikit-learn with its defaults apart from the flags below; diffusion (Iscen et
al. 2019, llp_tf/diffusion.py). Needs scikit-learn and SciPy (pip install "llp_tf[analysis]").
The protocol is llp_tf/propagation_comparison.py, the sweep llp_tf/propagation_sweep.py; this file
holds the flags only.
"""
import dataclasses
import json
import sys

import numpy as np
from absl import flags, logging

from llp_tf import features as features_lib
from llp_tf.tools import cli

flags.DEFINE_string("features", None, "input features file: features [N, D] and labels [N] (true classes)")
flags.DEFINE_string("workdir", None, "or: a trained run whose memory bank and true labels are the input")
flags.DEFINE_list("methods", None, "methods to compare; default: all")
flags.DEFINE_integer("classes", None, "C: classes drawn per subsample; default: 50 (the paper's), or every "
                     "class of the input when it has fewer (Fashion-MNIST: 10)")
flags.DEFINE_integer("images_per_class", 50, "images drawn per class (paper: 50)")
flags.DEFINE_integer("labelled_per_class", 5, "labelled images per class (paper: 5)")
flags.DEFINE_integer("subsamples", 10, "random subsamples (paper: 10)")
flags.DEFINE_integer("seed", 0, "seed of the subsamples and of the sweep's samples")
flags.DEFINE_integer("k", 10, "llp, knn: K labelled neighbours that vote")
flags.DEFINE_integer("t", 25, "llp: T neighbours of the local density")
flags.DEFINE_float("tau", 0.07, "llp, knn: temperature")
flags.DEFINE_integer("sklearn_neighbors", 7, "label_spreading_knn, label_propagation_knn: n_neighbors")
flags.DEFINE_float("rbf_gamma", 20.0,
                   "label_spreading_rbf, label_propagation_rbf: gamma of exp(-gamma |x-y|^2)")
flags.DEFINE_integer("diffusion_k", 50, "diffusion: neighbours of the kNN graph")
flags.DEFINE_float("diffusion_alpha", 0.99, "diffusion: alpha of (I - alpha W) Z = Y")
flags.DEFINE_float("diffusion_gamma", 3.0, "diffusion: power of the similarities")
flags.DEFINE_list("sweep_sizes", [], "N of the scale sweep, e.g. 1000,5000,20000,60000,200000")
flags.DEFINE_float("sweep_labelled_fraction", 0.1, "share of each class labelled in the sweep")
flags.DEFINE_float("sweep_jitter", 0.1, "norm of the noise added to rows drawn with replacement")
flags.DEFINE_float("time_limit", 300.0, "seconds a method may run in the sweep")
flags.DEFINE_float("memory_limit_gb", 8.0, "GiB a method's address space may grow by in the sweep")
flags.DEFINE_string("output_json", None, "also write every result as JSON here")
flags.DEFINE_string("worker_job", None,
                    "internal, as python -m llp_tf.propagation_sweep JOB: run one sweep measurement")
FLAGS = flags.FLAGS
FLAG_GROUPS = [
    ("Input", ["features", "workdir"]),
    ("Table 5 protocol", ["methods", "classes", "images_per_class", "labelled_per_class", "subsamples",
                          "seed"]),
    ("Method settings", ["k", "t", "tau", "sklearn_neighbors", "rbf_gamma", "diffusion_k",
                         "diffusion_alpha", "diffusion_gamma"]),
    ("Scale sweep", ["sweep_sizes", "sweep_labelled_fraction", "sweep_jitter", "time_limit",
                     "memory_limit_gb"]),
    ("Output", ["output_json"]),
]


def read_features_file(path):
    """(float32 unit rows [N, D], int64 true labels [N]) of a features file whose every label is known."""
    features, labels = features_lib.load_features(path)
    features_lib.check_all_known(labels, path)
    return features, labels


def read_workdir(workdir):
    """(bank rows float32 [N, D], true labels [N]) of the run in `workdir`."""
    from llp_tf import analysis  # TensorFlow: see main
    state = analysis.load_run_state(workdir)
    return features_lib.checked_unit_rows(state.bank, workdir), state.true_labels


def main(argv):
    if len(argv) > 1:
        sys.exit(f"llp-compare-propagation: unexpected arguments {argv[1:]}")
    # Not at the top: these import TensorFlow, which loads only once the flags are parsed and the
    # console is quiet (tools/cli.py).
    from llp_tf import propagation_comparison, propagation_sweep
    if FLAGS.worker_job:
        return propagation_sweep.run_worker(FLAGS.worker_job)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        if bool(FLAGS.features) == bool(FLAGS.workdir):
            raise ValueError("give exactly one of --features and --workdir")
        cli.check_output_file("output_json", FLAGS.output_json, ".json", inputs=[FLAGS.features])
        methods = propagation_comparison.check_methods(FLAGS.methods)
        sizes = propagation_sweep.parse_sizes(FLAGS.sweep_sizes)
        features, labels = (read_features_file(FLAGS.features) if FLAGS.features
                            else read_workdir(FLAGS.workdir))
        settings = propagation_comparison.Settings(
            FLAGS.k, FLAGS.t, FLAGS.tau, FLAGS.sklearn_neighbors, FLAGS.rbf_gamma, FLAGS.diffusion_k,
            FLAGS.diffusion_alpha, FLAGS.diffusion_gamma)
        print(f"{FLAGS.features or FLAGS.workdir}: {len(features):,} rows of {features.shape[1]} dimensions, "
              f"{len(np.unique(labels))} classes")
        classes = (FLAGS.classes
                   or propagation_comparison.default_class_count(labels, FLAGS.images_per_class))
        subsamples = propagation_comparison.compare_on_subsamples(
            features, labels, methods, settings, classes, FLAGS.images_per_class,
            FLAGS.labelled_per_class, FLAGS.subsamples, FLAGS.seed)
        print(f"\n{FLAGS.subsamples} subsamples of {classes} classes x {FLAGS.images_per_class} "
              f"images, {FLAGS.labelled_per_class} labelled per class; accuracy on the unlabelled rest:\n")
        print(propagation_comparison.subsample_table(subsamples))
        report = {"input": FLAGS.features or FLAGS.workdir, "settings": dataclasses.asdict(settings),
                  "subsamples": subsamples}
        if sizes:
            sweep = propagation_sweep.scale_sweep(
                features, labels, methods, settings, sizes, FLAGS.sweep_labelled_fraction, FLAGS.sweep_jitter,
                FLAGS.time_limit, FLAGS.memory_limit_gb, FLAGS.seed)
            print(f"\nScale sweep, {100 * FLAGS.sweep_labelled_fraction:g}% of each class labelled; each "
                  f"cell: seconds, peak resident memory above start-up, accuracy on the unlabelled rows "
                  f"(limits {FLAGS.time_limit:g} s, {FLAGS.memory_limit_gb:g} GiB of address space):\n")
            print(propagation_sweep.sweep_table(sweep, FLAGS.time_limit, FLAGS.memory_limit_gb))
            report["sweep"] = sweep
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"llp-compare-propagation: {error}")
    except ImportError as error:
        sys.exit(f"llp-compare-propagation: {error.name} is missing: pip install \"llp_tf[analysis]\"")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwritten to {FLAGS.output_json}")


def run():
    cli.run(main, "llp-compare-propagation", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
