"""llp-export: writes the serving SavedModel of a trained run (backbone and heads, no memory bank).

  llp-export --workdir=runs/my_run --export_dir=exported/my_run [--checkpoint=runs/my_run/checkpoints/ckpt-7]

The network is rebuilt from what the workdir records (config.json; dataset.json's image size, channels
and class names), so the training data need not be readable any more, and restored from its latest
checkpoint, or from --checkpoint.
Signatures: serving_default (uint8 images [B, h, w, C]) and serving_bytes (encoded JPEG/PNG strings
[B]); both give probabilities, classes and embeddings, serving_bytes also `valid`. See llp_tf/export.py.
"""
import os
import sys

from absl import flags, logging

from llp_tf.tools import cli

flags.DEFINE_string("workdir", None, "the --workdir of an llp-train run")
flags.DEFINE_string("export_dir", None, "where to write the SavedModel (must not exist, or be empty)")
flags.DEFINE_string("checkpoint", None, "checkpoint prefix (or directory) to export; default: the latest")
flags.mark_flags_as_required(["workdir", "export_dir"])
FLAGS = flags.FLAGS
FLAG_GROUPS = [("Input and output", ["workdir", "checkpoint", "export_dir"])]


def main(argv):
    if len(argv) > 1:
        sys.exit(f"llp-export: unexpected arguments {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines about saving are noise here
    from llp_tf import export, finished  # imports TensorFlow

    try:
        export.check_export_dir(FLAGS.export_dir)  # before the slow restore
        path = finished.checkpoint_path(FLAGS.workdir, FLAGS.checkpoint)  # resolved (and read through) once
        model, facts = finished.restore_network(FLAGS.workdir, path)
        image_shape = (facts.image_size, facts.image_size, facts.channels)
        module = export.export_saved_model(model, FLAGS.export_dir, image_shape, facts.class_names)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        sys.exit(f"llp-export: {error}")
    class_names = facts.class_names
    shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
    print(f"restored {path}")
    print(f"wrote SavedModel to {FLAGS.export_dir}")
    print(f"  serving_default: images uint8 [B, h, w, {module.channels}] "
          f"(resized to {module.image_size}x{module.image_size}) -> probabilities [B, {module.num_classes}], "
          f"classes [B], embeddings [B, {module.embedding_dim}]")
    print("  serving_bytes: image_bytes string [B] (JPEG/PNG) -> the same, and valid [B]")
    print(f"  {os.path.join(FLAGS.export_dir, 'assets', export.CLASS_NAMES_FILE)}: "
          f"{len(class_names)} classes ({shown})")


def run():
    cli.run(main, "llp-export", __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    run()
