"""llp-train: trains LLP (or the supervised baseline) from absl flags; reruns resume.

  llp-train --flagfile=flags/fashion_mnist_1pct.cfg --workdir=/tmp/fmnist

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

from absl import app, flags

from llp_tf.config import TrainConfig

FLAGS = flags.FLAGS
REEVALUATE_HELP = ("a finished run (its metrics.json and the checkpoint of its last epoch): compute "
                   "its final metrics again and rewrite metrics.json (without it such a rerun "
                   "changes nothing)")


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


def run():
    define_config_flags()
    flags.DEFINE_bool("reevaluate", False, REEVALUATE_HELP)
    app.run(main)


if __name__ == "__main__":
    run()
