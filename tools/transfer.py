"""llp-transfer: a trained run's frozen backbone under a new linear readout on another dataset (paper
Table 4), with the same readout on a randomly initialised backbone as the baseline.

  llp-transfer --workdir=runs/my_run --dataset=folder:/data/places205 [--epochs=30 --learning_rate=0.01]
               [--checkpoint=runs/my_run/checkpoints/ckpt-7] [--output=FILE.json]

--dataset takes the forms of llp-train (tfds:NAME, idx:DIR, folder:DIR, npz:FILE); the readout is
trained on all of its train split and scored on its test (or val) split. The run is rebuilt from
WORKDIR/config.json, so its own training data must still be readable. See llp_tf/transfer.py.
"""
import json
import sys

from absl import flags, logging

from llp_tf.tools import cli

flags.DEFINE_string("workdir", None, "the --workdir of a trained llp-train run")
flags.DEFINE_string("checkpoint", None, "checkpoint prefix (or directory) to use; default: the latest")
flags.DEFINE_string("dataset", None, "target data: tfds:NAME | idx:DIR | folder:DIR | npz:FILE")
flags.DEFINE_string("data_dir", None, "TFDS data_dir of the target")
flags.DEFINE_integer("epochs", 30, "epochs of readout training over the target's train split")
flags.DEFINE_float("learning_rate", 0.01, "SGD learning rate of the readout (paper: 0.01)")
flags.DEFINE_integer("batch_size", 256, "batch of feature extraction and of readout training")
flags.DEFINE_float("weight_decay", 0.0, "lambda of lambda * ||W||^2 on the readout")
flags.DEFINE_bool("random_baseline", True, "also train the readout on a randomly initialised backbone")
flags.DEFINE_integer("seed", 0, "seed of the readout (and of the random backbone)")
flags.DEFINE_string("output", None, "also write the results as JSON here")
flags.mark_flags_as_required(["workdir", "dataset"])
FLAGS = flags.FLAGS
FLAG_GROUPS = [
    ("Input", ["workdir", "checkpoint", "dataset", "data_dir"]),
    ("Readout", ["epochs", "learning_rate", "batch_size", "weight_decay", "random_baseline", "seed"]),
    ("Output", ["output"]),
]


def summary(result):
    lines = [f"{result['workdir']} ({result['backbone']}, epoch {result['epoch']}) -> {result['dataset']}: "
             f"{result['num_train']} train / {result['num_test']} test images, {result['num_classes']} "
             f"classes, at {result['image_size']} px",
             f"  val top-1 of a linear readout, trained backbone frozen: {100 * result['top1']:.2f}%"]
    if "random_backbone_top1" in result:
        lines.append(f"  same readout on a randomly initialised backbone:      "
                     f"{100 * result['random_backbone_top1']:.2f}%")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"llp-transfer: unexpected arguments {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from llp_tf import transfer  # imports TensorFlow

    try:
        cli.check_output_file("output", FLAGS.output, ".json")
        result = transfer.transfer(
            FLAGS.workdir, FLAGS.dataset, data_dir=FLAGS.data_dir, checkpoint=FLAGS.checkpoint,
            epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
            weight_decay=FLAGS.weight_decay, random_baseline=FLAGS.random_baseline, seed=FLAGS.seed)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"llp-transfer: {error}")
    print(summary(result))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(result, f, indent=2)
        print(f"written to {FLAGS.output}")


def run():
    cli.run(main, "llp-transfer", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
