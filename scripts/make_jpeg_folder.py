"""Writes a synthetic folder dataset of many small JPEGs, for timing the folder decode check and its
record in the workdir (BUILD.md, "Starts on a big folder").

  python scripts/make_jpeg_folder.py --output=/tmp/jpeg200k --train=200000 --test=1000 --size=8

OUTPUT/{train,test}/class<k>/<i>.jpg, --classes classes, each image noise plus a class-coloured
square, so that every file has its own content. Refuses an OUTPUT that exists.
"""
import os
import sys
import time

import numpy as np
from absl import app, flags
from PIL import Image

flags.DEFINE_string("output", None, "folder to create")
flags.DEFINE_integer("train", 200_000, "training images in all")
flags.DEFINE_integer("test", 1_000, "test images in all")
flags.DEFINE_integer("classes", 10, "class folders")
flags.DEFINE_integer("size", 8, "side of the square images")
flags.DEFINE_integer("seed", 0, "random seed")
flags.mark_flags_as_required(["output"])
FLAGS = flags.FLAGS


def write_split(directory, count, classes, size, rng):
    colours = rng.integers(0, 256, (classes, 3))
    for label in range(classes):
        os.makedirs(os.path.join(directory, f"class{label}"))
    for i in range(count):
        label = i % classes
        image = rng.integers(0, 64, (size, size, 3), dtype=np.uint8)
        image[: size // 2, : size // 2] = colours[label]
        Image.fromarray(image).save(os.path.join(directory, f"class{label}", f"{i:07d}.jpg"), quality=90)


def main(argv):
    del argv
    if os.path.exists(FLAGS.output):
        sys.exit(f"make_jpeg_folder: {FLAGS.output} exists: choose another --output")
    rng = np.random.default_rng(FLAGS.seed)
    started = time.perf_counter()
    for split, count in (("train", FLAGS.train), ("test", FLAGS.test)):
        write_split(os.path.join(FLAGS.output, split), count, FLAGS.classes, FLAGS.size, rng)
    print(f"wrote {FLAGS.train} + {FLAGS.test} JPEGs of {FLAGS.size}x{FLAGS.size} in {FLAGS.classes} "
          f"classes to {FLAGS.output} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    app.run(main)
