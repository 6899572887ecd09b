"""The tf.data pipelines LLP trains and evaluates on: `train_dataset` (endless shuffled, augmented
batches whose indices are bank rows), `eval_dataset`, and `preprocess_for_eval`, the one evaluation
preprocessing (shared with the exported SavedModel)."""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from llp_tf.augment import CROP_AREA_RANGE, augment_image, resize_square, weak_view
from llp_tf.data.base import AUTOTUNE, Source
from llp_tf.data.split import Selection


def train_dataset(source: Source, selection: Selection, batch_size: int, image_size: int,
                  augment: bool = True, seed: int = 0, labelled_only: bool = False,
                  shuffle_buffer: int | None = None, labelled_per_batch: int = 0,
                  crop_area_min: float = CROP_AREA_RANGE[0], random_flip: bool = True,
                  color_jitter: bool = True, random_grayscale: bool = True,
                  weak_views: bool = False) -> tf.data.Dataset:
    """Endless batches (images float32 [B, S, S, C] in [0, 1], labels int64 [B], indices int64 [B])
    of the selected training examples: pass after pass, each pass a new shuffle and new augmentations
    drawn from `seed`, the partial last batch of a pass dropped; indices are bank rows (positions in
    selection.rows). Every iteration of the returned dataset yields the same batches (Keras under a
    multi-replica strategy iterates a dataset once before the iterator it trains on), and the same seed
    gives the same batches in a freshly built dataset. labelled_only keeps the labelled examples only
    (the supervised baseline) with the same indices.

    labelled_per_batch > 0 (a departure from the paper, which draws batches uniformly): every batch
    is that many labelled examples, from passes over the labelled examples, followed by batch_size
    minus that many unlabelled ones, from passes over the unlabelled examples.

    crop_area_min: the smallest share of the image area that the random resized crop keeps (the
    paper's 0.2 unless changed, a departure); random_flip, color_jitter, random_grayscale switch those
    parts of the augmentation off alone (all on in the paper).

    weak_views (the consistency departure, with augment): each batch carries a fourth element, the
    weakly augmented view (augment.weak_view) of each image [B, S, S, C], drawn from its own seed;
    the first three elements are the same as without it.

    A set of rows smaller than its batch (fewer labelled images than labelled_per_batch, or than
    batch_size with labelled_only) is cycled: its passes run on into each other, each reshuffled, so a
    batch may hold an example twice."""
    all_rows = np.arange(len(selection.rows), dtype=np.int64)
    augmenter = (functools.partial(augment_image, image_size=image_size, crop_area_min=crop_area_min,
                                   flip=random_flip, jitter=color_jitter, grayscale=random_grayscale)
                 if augment else None)
    if weak_views:
        if not augment:
            raise ValueError("weak views need the augmentation on (--augment)")
        augmenter = _with_weak_view(augmenter, image_size, random_flip)
    if labelled_only:
        return _batches(source, selection, all_rows[selection.is_labelled], batch_size, image_size,
                        augmenter, seed, shuffle_buffer, "labelled ")
    if not labelled_per_batch:
        return _batches(source, selection, all_rows, batch_size, image_size, augmenter, seed, shuffle_buffer)
    if not 0 < labelled_per_batch < batch_size:
        raise ValueError(f"labelled_per_batch={labelled_per_batch} must be between 0 and "
                         f"batch_size={batch_size}")
    labelled_seed, unlabelled_seed = (int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(2))
    labelled = _batches(source, selection, all_rows[selection.is_labelled], labelled_per_batch,
                        image_size, augmenter, labelled_seed, shuffle_buffer, "labelled ")
    unlabelled = _batches(source, selection, all_rows[~selection.is_labelled],
                          batch_size - labelled_per_batch, image_size, augmenter, unlabelled_seed,
                          shuffle_buffer, "unlabelled ")
    mixed = tf.data.Dataset.zip(unlabelled, labelled).map(
        lambda first, second: tuple(tf.concat([a, b], 0) for a, b in zip(first, second)))
    return _deterministic(mixed.prefetch(AUTOTUNE))


def _with_weak_view(augmenter, image_size, flip):
    """(image, seed) -> (augmenter's view, weak view), the weak one drawn from a seed folded from the
    example's, so the first view is the one augmenter alone would give."""
    def both(image, seed):
        weak_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 1)
        return augmenter(image, seed), weak_view(image, weak_seed, image_size, flip)
    return both


def _batches(source, selection, bank_rows, batch_size, image_size, augmenter, seed, shuffle_buffer,
             kind=""):
    """train_dataset's endless batches of the given bank rows (see there); augmenter: (image, seed) ->
    image, or None for the evaluation preprocessing."""
    if len(bank_rows) == 0:
        raise ValueError(f"there are no {kind}training examples to make batches of")
    cycled = len(bank_rows) < batch_size  # passes run into each other to fill a batch
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    if shuffle_buffer is None:
        shuffle_buffer = min(len(bank_rows), source.default_shuffle_buffer_limit or len(bank_rows))
    stored = source.encoded_examples("train", selection.rows[bank_rows])
    bank_row_of_position = tf.constant(bank_rows)

    def prepare(stored_example, example_seed):
        image, label, position = source.decode(*stored_example)
        if augmenter is None:
            return preprocess_for_eval(image, image_size), label, tf.gather(bank_row_of_position, position)
        views = augmenter(image, example_seed)
        if isinstance(views, tuple):  # (training view, weak view): the weak one goes last
            return views[0], label, tf.gather(bank_row_of_position, position), views[1]
        return views, label, tf.gather(bank_row_of_position, position)

    def endless_passes(_):
        # Built inside flat_map, so every iteration of the returned dataset builds these afresh and
        # replays the same passes; the shuffle and the example seeds still change from pass to pass.
        shuffled = stored.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        # One stateless seed [2] per example: deterministic under parallel map.
        example_seeds = tf.data.Dataset.random(seed=augment_seed, rerandomize_each_iteration=True)
        if cycled:
            return (tf.data.Dataset.zip(shuffled.repeat(), example_seeds.batch(2))
                    .map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
                    .batch(batch_size, drop_remainder=True))
        return (tf.data.Dataset.zip(shuffled, example_seeds.batch(2))
                .map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
                .batch(batch_size, drop_remainder=True)
                .repeat())

    return _deterministic(tf.data.Dataset.range(1).flat_map(endless_passes).prefetch(AUTOTUNE))


def eval_dataset(source: Source, split: str, batch_size: int, image_size: int) -> tf.data.Dataset:
    """Batches (images float32 [B, S, S, C] in [0, 1], labels int64, indices int64) of every example of
    `split` in source order, preprocessed by `preprocess_for_eval`; the last batch may be smaller."""
    dataset = (source.examples(split)
               .map(lambda image, label, index: (preprocess_for_eval(image, image_size), label, index),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
               .batch(batch_size)
               .prefetch(AUTOTUNE))
    return _deterministic(dataset)


def preprocess_for_eval(images, image_size: int) -> tf.Tensor:
    """The one evaluation preprocessing, for an image [H, W, C] or a batch [B, H, W, C] (uint8, or
    float in [0, 1]): the central square crop resized to image_size (no-op when the images already
    are image_size square), as float32 in [0, 1]. Pure TF ops, so it can live in a SavedModel."""
    images = tf.image.convert_image_dtype(tf.convert_to_tensor(images), tf.float32)
    height, width = tf.shape(images)[-3], tf.shape(images)[-2]

    def crop_and_resize():
        side = tf.minimum(height, width)
        square = tf.image.crop_to_bounding_box(
            images, (height - side) // 2, (width - side) // 2, side, side)
        return resize_square(square, image_size)

    already_sized = tf.logical_and(tf.equal(height, image_size), tf.equal(width, image_size))
    resized = tf.cond(already_sized, lambda: images, crop_and_resize)
    return tf.ensure_shape(resized, images.shape[:-3] + (image_size, image_size, images.shape[-1]))


def _deterministic(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)
