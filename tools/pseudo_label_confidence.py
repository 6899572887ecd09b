"""How right are a run's pseudo-labels at each confidence, on the unlabelled examples?

  python tools/pseudo_label_confidence.py --workdir=runs/fmnist_llp_from_sup12_s0 \
      [--checkpoint=runs/fmnist_llp_from_sup12_s0/checkpoints/ckpt-7]

Restores the run's state (its latest checkpoint, or --checkpoint) and prints, for each threshold, the
share of unlabelled examples whose pseudo-label confidence reaches it and how many of those labels are
right (the true labels of the unlabelled pool are read only here, as in metrics.json's
pseudo_label_accuracy). This is the evidence for choosing --confidence_threshold.
"""
import sys

import numpy as np
from absl import flags

from llp_tf.tools import cli

flags.DEFINE_string("workdir", None, "the --workdir of an llp-train run")
flags.DEFINE_string("checkpoint", None, "checkpoint prefix (or directory) to read; default: the latest")
flags.DEFINE_list("thresholds", ["0", "0.5", "0.6", "0.7", "0.8", "0.9", "0.95"], "confidence thresholds")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS
FLAG_GROUPS = [
    ("Input", ["workdir", "checkpoint"]),
    ("Table", ["thresholds"]),
]


def coverage_and_accuracy(labels, confidences, true_labels, thresholds):
    """[(threshold, share of rows with confidence >= threshold, accuracy of those rows)]; accuracy is
    NaN where no row reaches the threshold."""
    labels, confidences, true_labels = map(np.asarray, (labels, confidences, true_labels))
    rows = []
    for threshold in thresholds:
        kept = confidences >= threshold
        accuracy = float(np.mean(labels[kept] == true_labels[kept])) if kept.any() else float("nan")
        rows.append((threshold, float(np.mean(kept)), accuracy))
    return rows


def main(argv):
    if len(argv) > 1:
        sys.exit(f"pseudo_label_confidence: unexpected arguments {argv[1:]}")
    from llp_tf import finished

    try:
        model, experiment = finished.restore_model(FLAGS.workdir, FLAGS.checkpoint)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"pseudo_label_confidence: {error}")
    state = model.state
    unlabelled = ~state.is_labelled.numpy()
    labels, confidences = state.labels.numpy()[unlabelled], state.confidences.numpy()[unlabelled]
    true_labels = np.asarray(experiment.selection.true_labels)[unlabelled]
    print(f"{FLAGS.workdir} after epoch {int(state.completed_epochs.numpy())}: {unlabelled.sum()} unlabelled, "
          f"confidence quantiles 10/25/50%: {np.round(np.quantile(confidences, [0.1, 0.25, 0.5]), 3)}")
    print("| confidence at least | share of unlabelled | pseudo-label accuracy |\n|---|---|---|")
    for threshold, share, accuracy in coverage_and_accuracy(
            labels, confidences, true_labels, [float(t) for t in FLAGS.thresholds]):
        print(f"| {threshold:g} | {100 * share:.1f}% | {100 * accuracy:.2f}% |")


def run():
    cli.run(main, "tools/pseudo_label_confidence.py", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
