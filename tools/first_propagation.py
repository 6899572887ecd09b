"""How well would a trained run's network label the unlabelled examples, by which features it uses?

  python tools/first_propagation.py --workdir=runs/cifar_sup_s0 [--k=10,50] [--output_json=FILE]

Restores the run (its latest checkpoint), embeds its training images unaugmented in bank order, and
prints the accuracy on the unlabelled rows of: the classifier's own predictions, and LLP propagation
(with and without density weighting, for each K) from four kinds of features: the embedding head (what
--init_from fills the first bank with), the pooled backbone features, the same centred, and the class
probabilities. This is the first propagation of an LLP run started from this network, and how much of
it the features decide.
"""
import json
import sys

import numpy as np
from absl import flags

from llp_tf.tools import cli

flags.DEFINE_string("workdir", None, "the --workdir of a finished llp-train run")
flags.DEFINE_list("k", ["10", "50"], "K values of the propagation")
flags.DEFINE_string("output_json", None, "also write the accuracies here")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS
FLAG_GROUPS = [
    ("Input", ["workdir"]),
    ("Propagation", ["k"]),
    ("Output", ["output_json"]),
]


def network_outputs(model, experiment):
    """(pooled features, embeddings, class probabilities, true labels) of the kept training examples,
    unaugmented, in bank order, as NumPy arrays."""
    import tensorflow as tf

    @tf.function
    def outputs(images):
        features = model.backbone(images, training=False)  # once: the heads take it from here
        heads = model.heads(features)
        return features, heads["embeddings"], tf.nn.softmax(heads["logits"])

    columns = [[], [], [], [], []]
    for images, labels, indices in experiment.ordered_train_dataset():
        for column, value in zip(columns, [*outputs(images), labels, indices]):
            column.append(value.numpy())
    *values, indices = (np.concatenate(column) for column in columns)
    order = np.argsort(indices)  # bank order, whatever order the dataset gave
    features, embeddings, probabilities, labels = (value[order] for value in values)
    return features, embeddings, probabilities, labels.astype(np.int64)


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def accuracies(workdir, ks):
    from llp_tf import finished, propagation

    model, experiment = finished.restore_model(workdir)
    features, embeddings, probabilities, labels = network_outputs(model, experiment)
    is_labelled = model.state.is_labelled.numpy()
    unlabelled = ~is_labelled
    results = {"classifier": float(np.mean(probabilities.argmax(1)[unlabelled] == labels[unlabelled]))}
    kinds = {"embedding head": embeddings, "pooled features": features,
             "centred pooled features": features - features.mean(axis=0),
             "class probabilities": probabilities}
    for kind, values in kinds.items():
        for k in ks:
            for use_density in (True, False):
                pseudo = propagation.propagate(
                    unit_rows(values), is_labelled, np.where(is_labelled, labels, -1),
                    experiment.num_classes, k=k, t=experiment.config.t, tau=experiment.config.tau,
                    use_density=use_density).labels
                name = f"{kind}, K={k}, {'LLP (density)' if use_density else 'weighted kNN'}"
                results[name] = float(np.mean(pseudo[unlabelled] == labels[unlabelled]))
    return results


def main(argv):
    if len(argv) > 1:
        sys.exit(f"first_propagation: unexpected arguments {argv[1:]}")
    try:
        cli.check_output_file("output_json", FLAGS.output_json, ".json")
        results = accuracies(FLAGS.workdir, [int(k) for k in FLAGS.k])
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"first_propagation: {error}")
    print("| labels of the unlabelled rows from | accuracy |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {100 * value:.2f}% |")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(results, f, indent=2)


def run():
    cli.run(main, "tools/first_propagation.py", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
