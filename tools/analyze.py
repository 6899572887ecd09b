"""llp-analyze: the paper's analysis of a trained run's embedding (Sec. 5, Fig. 2).

  llp-analyze --workdir=runs/my_run --output_dir=analysis/my_run [--compare_workdir=runs/other]
              [--classes=0,1,2] [--max_points_per_class=300]

Reads the final memory bank from WORKDIR's latest checkpoint (the run's dataset must still be readable:
it gives the true labels and class names) and the aggregation scalars from WORKDIR/tensorboard, and
writes into OUTPUT_DIR: aggregation_curve.png (Fig. 2b), class_norm_histogram.png (Fig. 2c),
class_norm_scatter.png (Fig. 2d, with --compare_workdir only: a run on the same training examples),
mds_classes.png (Fig. 2a, e-g: the --classes, default the easiest, the hardest and the most multi-modal
class), summary.txt (also printed) and summary.json. Needs matplotlib and scikit-learn
(pip install ".[analysis]"). See llp_tf/analysis/.
"""
import os
import sys

from absl import flags, logging

from llp_tf.tools import cli

flags.DEFINE_string("workdir", None, "the --workdir of an llp-train run")
flags.DEFINE_string("compare_workdir", None, "a second run on the same training examples (e.g. another "
                    "backbone or the supervised baseline): adds the per-class scatter plot")
flags.DEFINE_string("output_dir", None, "where to write the figures and summary.txt / summary.json")
flags.DEFINE_list("classes", None, "class indices for the MDS figure; default: the easiest, the hardest "
                  "and the most multi-modal class")
flags.DEFINE_integer("max_points_per_class", 300, "at most this many random rows per class in the MDS")
flags.mark_flags_as_required(["workdir", "output_dir"])
FLAGS = flags.FLAGS
FLAG_GROUPS = [
    ("Input", ["workdir", "compare_workdir"]),
    ("Figures", ["classes", "max_points_per_class"]),
    ("Output", ["output_dir"]),
]


def parse_classes(values):
    if values is None:
        return None
    classes = []
    for value in values:
        try:
            classes.append(int(value))
        except ValueError:
            sys.exit(f"llp-analyze: --classes takes class indices such as 0,3,7, got {value!r}")
    if not classes:
        sys.exit("llp-analyze: --classes is empty")
    return classes


def main(argv):
    if len(argv) > 1:
        sys.exit(f"llp-analyze: unexpected arguments {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    classes = parse_classes(FLAGS.classes)
    if FLAGS.max_points_per_class < 2:
        sys.exit(f"llp-analyze: --max_points_per_class must be at least 2, got {FLAGS.max_points_per_class}")
    for flag in ("workdir", "compare_workdir"):
        if FLAGS[flag].value is not None and not os.path.isdir(FLAGS[flag].value):
            sys.exit(f"llp-analyze: --{flag} {FLAGS[flag].value} is not a directory")
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as error:
        sys.exit(f"llp-analyze: {error.name} is missing: pip install \"llp_tf[analysis]\"")
    from llp_tf import analysis

    try:
        result = analysis.analyze(FLAGS.workdir, FLAGS.output_dir, compare_workdir=FLAGS.compare_workdir,
                                  classes=classes, max_points_per_class=FLAGS.max_points_per_class)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"llp-analyze: {error}")
    print(result["text"])


def run():
    cli.run(main, "llp-analyze", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
