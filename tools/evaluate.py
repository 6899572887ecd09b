"""llp-eval: evaluates a trained run's checkpoint on its test (or training) split.

  llp-eval --workdir=runs/my_run [--checkpoint=runs/my_run/checkpoints/ckpt-7] [--split=test|train]
           [--knn_k=K] [--output=FILE]

The run is rebuilt from WORKDIR/config.json (its dataset must still be readable) and restored from its
latest checkpoint, or from --checkpoint. Writes JSON (default WORKDIR/eval_<split>.json) with top1, top5
(null under 6 classes), knn_top1 (weighted kNN from the bank's labelled rows, k = the run's
eval_knn_k or --knn_k), per_class_accuracy, confusion_matrix (rows = true class), num_examples, checkpoint and
epoch, and prints a summary. See llp_tf/finished.py.
"""
import json
import os
import sys

from absl import flags, logging

from llp_tf.tools import cli

flags.DEFINE_string("workdir", None, "the --workdir of an llp-train run")
flags.DEFINE_string("checkpoint", None, "checkpoint prefix (or directory) to evaluate; default: the latest")
flags.DEFINE_string("split", "test", "test (held out) | train (every training example)")
flags.DEFINE_integer("knn_k", None, "neighbours of knn_top1; default: the run's --eval_knn_k (1: the "
                     "1-NN accuracy by which the paper compares ablations)")
flags.DEFINE_string("output", None, "JSON file to write; default: WORKDIR/eval_<split>.json")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS
FLAG_GROUPS = [
    ("Input", ["workdir", "checkpoint", "split"]),
    ("Evaluation", ["knn_k"]),
    ("Output", ["output"]),
]


def main(argv):
    if len(argv) > 1:
        sys.exit(f"llp-eval: unexpected arguments {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from llp_tf import finished  # imports TensorFlow
    from llp_tf.workdir import Workdir

    output = FLAGS.output or Workdir(FLAGS.workdir).eval_results(FLAGS.split)
    try:
        cli.check_output_file("output", FLAGS.output, ".json", creates_folder=True)
        results = finished.evaluate_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.split,
                                               FLAGS.knn_k)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"llp-eval: {error}")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(results, f, indent=2)
    print(summary(results))
    print(f"written to {output}")


def summary(results):
    def percent(value):
        return "n/a" if value is None else f"{100 * value:.2f}%"

    lines = [f"{results['checkpoint']} (epoch {results['epoch']}) on the {results['split']} split, "
             f"{results['num_examples']} examples:",
             f"  top1 {percent(results['top1'])}  top5 {percent(results['top5'])}  "
             f"knn_top1 {percent(results['knn_top1'])} (k={results['knn_k']})"]
    per_class = sorted(results["per_class_accuracy"], key=lambda c: (c["accuracy"] is None, c["accuracy"]))
    shown = ", ".join(f"{c['name']} {percent(c['accuracy'])}" for c in per_class[:5])
    lines.append(f"  lowest per-class accuracy: {shown}")
    return "\n".join(lines)


def run():
    cli.run(main, "llp-eval", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
