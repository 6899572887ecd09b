"""llp-train: trains LLP (or the supervised baseline) from absl flags; reruns resume.

  llp-train --flagfile=flags/paper/fashion_mnist_1pct.cfg --workdir=/tmp/fmnist

A rerun with a finished run's workdir says so and exits 0 without touching its files (--reevaluate
computes its final metrics again). A workdir made for other data is refused before anything is
written. SIGTERM or SIGINT: a checkpoint of the current step, then exit status 128 + the signal (143,
130); the rerun continues with the next step. A non-finite loss or a failed checkpoint write (a full disk): exit
status 1 and a message naming the checkpoint that remains.
"""
import dataclasses
import json
import sys
import typing

from absl import flags

from llp_tf.config import TrainConfig
from llp_tf.tools import cli

FLAGS = flags.FLAGS
REEVALUATE_HELP = ("a finished run (its metrics.json and the checkpoint of its last epoch): compute "
                   "its final metrics again and rewrite metrics.json (without it such a rerun "
                   "changes nothing)")
# --help's groups; a TrainConfig field named in none of them is listed under "Other".
FLAG_GROUPS = [
    ("Data", ["dataset", "data_dir", "class_names", "on_bad_image", "image_size", "labelled_fraction",
              "kept_fraction", "split_seed", "augment", "random_flip", "color_jitter", "random_grayscale",
              "crop_area_min"]),
    ("Method", ["method", "backbone", "width", "embedding_dim", "tau", "bank_momentum", "bank_init", "k",
                "t", "use_density", "density_include_self", "use_confidence", "use_category_loss"]),
    ("Method, departures from the paper (off by default)", [
        "labelled_per_batch", "warmup_category_loss", "confidence_threshold", "consistency_weight",
        "consistency_threshold", "consistency_warmup", "refresh_bank",
        "init_from"]),
    ("Schedule", ["epochs", "warmup", "warmup_epochs", "instance_epochs", "steps_per_epoch", "batch_size",
                  "learning_rate", "lr_drop_epochs", "lr_drop_factor", "lr_values", "momentum",
                  "weight_decay", "seed", "deterministic"]),
    ("Outputs", ["workdir", "reevaluate", "verbose", "keep_checkpoints", "eval_knn_k", "state_dump"]),
    ("Hardware", ["strategy", "cpu_replicas", "mixed_precision", "jit_compile", "propagation_query_rows",
                  "propagation_key_rows"]),
]


def define_config_flags(flag_values=FLAGS):
    """One absl flag per TrainConfig field, with the field's default and help."""
    for field in dataclasses.fields(TrainConfig):
        kind = _base_type(field.type)
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                  str: flags.DEFINE_string, tuple: flags.DEFINE_list}[kind]
        default = list(field.default) if kind is tuple else field.default
        define(field.name, default, field.metadata["help"], flag_values=flag_values)


def _base_type(annotation):
    """int for `int | None`, and so on."""
    if isinstance(annotation, str):
        annotation = eval(annotation)  # noqa: S307 - annotations of our own dataclass
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return options[0]


def config_from_flags(flag_values=FLAGS) -> TrainConfig:
    values = {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(flag_values, field.name)
        if _base_type(field.type) is tuple:
            value = tuple(field.metadata["item"](v) for v in value)
        values[field.name] = value
    return TrainConfig(**values)


def main(argv):
    del argv
    config = config_from_flags()
    if config.cpu_replicas:
        from llp_tf import distribute
        distribute.split_cpu(config.cpu_replicas)
    from llp_tf import resume, train as training  # imports TensorFlow after the device split
    from llp_tf.workdir import Workdir

    try:
        metrics = training.train(config, reevaluate=FLAGS.reevaluate)
    except training.RunFinished as finished:
        print(f"llp-train: {finished}")
        return
    except resume.TrainingInterrupted as stop:  # SIGTERM / SIGINT, after a checkpoint
        print(f"llp-train: {stop}", file=sys.stderr)
        sys.exit(stop.exit_status)
    except (ValueError, FileNotFoundError, resume.TrainingFailed) as error:
        sys.exit(f"llp-train: {error}")
    print(json.dumps(metrics, indent=2))
    print(f"metrics written to {Workdir(config.workdir).metrics}")
    print(outcome(metrics, consistency_warmup=config.consistency_warmup))


def outcome(metrics, consistency_warmup=False) -> str:
    """The run's result in one line: after a supervised warm-up, the test top-1 the warm-up gave
    (the labels alone, unless --consistency_warmup) beside the final one."""
    final = f"test top-1 {100 * metrics['val_top1']:.2f}%"
    if metrics.get("warmup") == "supervised" and metrics.get("warmup_val_top1") is not None:
        alone = "with the consistency loss" if consistency_warmup else "labels alone"
        return (f"test top-1 after the supervised warm-up ({alone}): "
                f"{100 * metrics['warmup_val_top1']:.2f}%; after LLP: {100 * metrics['val_top1']:.2f}% "
                "(the fair baseline: the same flags with --method=supervised)")
    return final


def run():
    define_config_flags()
    flags.DEFINE_bool("reevaluate", False, REEVALUATE_HELP)
    cli.run(main, "llp-train", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
