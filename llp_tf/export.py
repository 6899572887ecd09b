"""Serving export: a SavedModel with the trained backbone and heads only, preprocessing inside.

    model, facts = finished.restore_network("runs/my_run")     # latest checkpoint of the workdir
    export_saved_model(model, "exported/my_run", (facts.image_size, facts.image_size, facts.channels),
                       facts.class_names)

The SavedModel holds the backbone, the embedding head and the classifier; the memory bank, the current
labels, confidences, log-density and the optimizer stay in the training checkpoint. Signatures:

  serving_default   images      uint8  [B, h, w, C]  (any h, w: centre square crop, resized to H x W)
  serving_bytes     image_bytes string [B]           (encoded JPEG / PNG / GIF / BMP)

both returning probabilities float32 [B, Q] (softmax of the logits), classes int64 [B] and
embeddings float32 [B, D] (L2-normalised). serving_bytes also returns valid bool [B]: a string that
does not decode gives valid=False, probabilities and embeddings of zeros and class -1 in its row, and
the rest of the batch is served normally. Another dtype, rank or channel count is refused with an
InvalidArgumentError that gives the expected dtype or shape. The class names are in
assets/class_names.txt (line i is class i) and, from Python, `tf.saved_model.load(dir).class_names()`.
Serving only: opening the trained run is llp_tf/finished.py. No flags here: `tools/export.py` is the
command line.
"""
from __future__ import annotations

import os
import tempfile

import tensorflow as tf

from llp_tf.data import preprocess_for_eval

CLASS_NAMES_FILE = "class_names.txt"


class ServingModule(tf.Module):
    """The backbone and the two heads of an LLPModel (nothing else), with serving signatures."""

    def __init__(self, model, image_shape, class_names):
        super().__init__(name="llp_serving")
        height, width, channels = (int(d) for d in image_shape)
        if height != width:
            raise ValueError(f"image_shape {tuple(image_shape)}: the model takes square images")
        if channels not in (1, 3):
            raise ValueError(f"image_shape {tuple(image_shape)}: channels must be 1 or 3")
        self.image_size, self.channels = height, channels
        self.backbone = model.backbone
        self.embedding_head = model.embedding_head
        self.classifier = model.classifier
        self.num_classes = int(model.classifier.units)
        self.embedding_dim = int(model.embedding_head.units)
        class_names = [str(name) for name in class_names]
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for a classifier of "
                             f"{self.num_classes} classes")
        for name in class_names:
            if "\n" in name or "\r" in name:
                raise ValueError(f"class name {name!r} holds a line break")
        self._class_names = class_names
        images_spec = tf.TensorSpec([None, None, None, channels], tf.uint8, name="images")
        self.serve = tf.function(self._serve, input_signature=[images_spec])
        self.serve_bytes = tf.function(
            self._serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.class_names = tf.function(lambda: tf.constant(class_names, tf.string), input_signature=[])

    def attach_class_names_asset(self, directory):
        """Writes class_names.txt into `directory` and tracks it as an asset (copied on save)."""
        path = os.path.join(directory, CLASS_NAMES_FILE)
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(name + "\n" for name in self._class_names))
        self.class_names_file = tf.saved_model.Asset(path)

    def outputs(self, images):
        """LLPModel.call in inference mode on float32 [B, H, W, C] in [0, 1], as serving outputs."""

        def compute():
            features = self.backbone(images, training=False)
            embeddings = tf.math.l2_normalize(self.embedding_head(features), axis=1)
            logits = self.classifier(features)
            return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1),
                    "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
                    "embeddings": tf.cast(embeddings, tf.float32)}

        def empty():  # the convolutions fail on a batch of 0 images (oneDNN), so skip them
            return {"probabilities": tf.zeros([0, self.num_classes], tf.float32),
                    "classes": tf.zeros([0], tf.int64),
                    "embeddings": tf.zeros([0, self.embedding_dim], tf.float32)}

        return tf.cond(tf.shape(images)[0] > 0, compute, empty)

    def _serve(self, images):
        # The input signature fixes dtype, rank and channels for tf.function callers; signature
        # callers (a loaded .signatures[...], TF Serving) are only checked for the dtype. EnsureShape
        # checks the rest at run time ("Shape of tensor images [..] is not compatible with expected
        # shape [?,?,?,C]"); an assert on tf.rank would be folded away, the rank being static here.
        images = tf.ensure_shape(images, [None, None, None, self.channels])
        return self.outputs(preprocess_for_eval(images, self.image_size))

    def _decode(self, index, encoded):
        image = tf.io.decode_image(encoded, channels=self.channels, expand_animations=False)
        return index, preprocess_for_eval(image, self.image_size)

    def _serve_bytes(self, image_bytes):
        image_bytes = tf.ensure_shape(image_bytes, [None])  # a run-time check, as in _serve
        count = tf.shape(image_bytes, out_type=tf.int64)[0]
        shape = [self.image_size, self.image_size, self.channels]
        # Decode inside tf.data, whose ignore_errors drops a string that fails to decode instead of
        # failing the call; the surviving rows are scattered back into place by their index.
        decoded = (tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
                   .map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)
                   .ignore_errors()
                   .batch(tf.maximum(count, 1)))  # one batch, or none when nothing decodes

        def place(state, batch):
            images, valid = state
            indices, batch_images = batch
            return (tf.tensor_scatter_nd_update(images, indices[:, None], batch_images),
                    tf.tensor_scatter_nd_update(valid, indices[:, None], tf.ones_like(indices, tf.bool)))

        blank = tf.zeros(tf.concat([[count], tf.constant(shape, tf.int64)], 0), tf.float32)
        images, valid = decoded.reduce((blank, tf.zeros([count], tf.bool)), place)
        outputs = self.outputs(tf.ensure_shape(images, [None] + shape))
        rows = valid[:, None]
        return {"probabilities": tf.where(rows, outputs["probabilities"], 0.0),
                "classes": tf.where(valid, outputs["classes"], tf.constant(-1, tf.int64)),
                "embeddings": tf.where(rows, outputs["embeddings"], 0.0),
                "valid": valid}


def check_export_dir(export_dir: str):
    """Refuses an export_dir that exists and is not an empty directory (nothing is overwritten)."""
    if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
        raise FileExistsError(f"{export_dir} exists and is not an empty directory: choose another")


def export_saved_model(model, export_dir: str, image_shape, class_names) -> ServingModule:
    """Writes the serving SavedModel of `model` (an LLPModel) to `export_dir`, which must not exist or
    be empty. image_shape is the (H, W, C) the model was trained on; class_names its Q class names."""
    check_export_dir(export_dir)
    module = ServingModule(model, image_shape, class_names)
    with tempfile.TemporaryDirectory() as scratch:
        module.attach_class_names_asset(scratch)
        signatures = {
            "serving_default": module.serve.get_concrete_function(),
            "serving_bytes": module.serve_bytes.get_concrete_function(),
        }
        tf.saved_model.save(module, export_dir, signatures=signatures)
    return module
