"""Training-time augmentation of the LLP paper, as pure, stateless TensorFlow ops on one image.

Follows the authors' code (LocalLabelProp, model/resnet_th_preprocessing.py): random resized crop
(area 0.2-1, aspect 3/4-4/3), grayscale with p=0.2, colour jitter 0.4 (brightness, contrast,
saturation, hue in a random order) and a horizontal flip. Brightness, contrast and saturation are
multiplicative blends as in the authors' code (and torchvision), not TF's additive brightness.

Each part but the crop can be switched off alone (`augment_image`'s flip, jitter, grayscale): a
horizontal flip turns some digits and letters into others, and colour changes can erase what a
medical image's class depends on; README.md says which to turn off for which data.

Every random draw comes from a stateless op keyed by the per-example `seed`, so the result is a pure
function of (image, seed): parallel tf.data maps stay deterministic, and the caller decides how seeds
change between epochs.
"""

import tensorflow as tf

from llp_tf.config import CROP_AREA_MIN

CROP_AREA_RANGE = (CROP_AREA_MIN, 1.0)
CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
CROP_MAX_ATTEMPTS = 100  # the authors' value; after that the whole image is used
GRAYSCALE_PROBABILITY = 0.2
JITTER_STRENGTH = 0.4
FLIP_PROBABILITY = 0.5
# The weak view of the consistency departure (FixMatch's "flip and shift"): a crop of 80-100 % of the
# area and the flip, no colour change.
WEAK_CROP_AREA_MIN = 0.8

# Independent sub-seeds, one per random decision, split from the example's seed.
_CROP, _GRAY, _ORDER, _BRIGHTNESS, _CONTRAST, _SATURATION, _HUE, _FLIP = range(8)
_NUM_SUB_SEEDS = 8


def augment_image(image, seed, image_size: int, crop_area_min: float = CROP_AREA_RANGE[0],
                  flip: bool = True, jitter: bool = True, grayscale: bool = True) -> tf.Tensor:
    """Augments one image [H, W, C] (C = 1 or 3; uint8, or float in [0, 1]) with a stateless seed [2];
    the crop keeps crop_area_min to all of the image's area. flip, jitter and grayscale (all on in the
    paper) switch their part off alone: each part draws from its own sub-seed, so turning one off
    leaves every other part's draw as it was.

    Returns float32 [image_size, image_size, C] in [0, 1].
    """
    image = tf.image.convert_image_dtype(tf.convert_to_tensor(image), tf.float32)
    channels = image.shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"augment_image needs a static channel count of 1 or 3, got shape {image.shape}")
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=_NUM_SUB_SEEDS)

    image = random_resized_crop(image, seeds[_CROP], image_size, crop_area_min)
    if channels == 3 and grayscale:
        image = random_grayscale(image, seeds[_GRAY])
    if jitter:
        image = color_jitter(image, seeds)
    if flip:
        image = random_flip(image, seeds[_FLIP])
    return tf.clip_by_value(image, 0.0, 1.0)


def weak_view(image, seed, image_size: int, flip: bool = True) -> tf.Tensor:
    """The weakly augmented view of one image for the consistency departure: a random resized crop of
    WEAK_CROP_AREA_MIN to all of the area, mirrored half of the time if flip; float32
    [image_size, image_size, C] in [0, 1], a pure function of (image, seed)."""
    return augment_image(image, seed, image_size, crop_area_min=WEAK_CROP_AREA_MIN, flip=flip,
                         jitter=False, grayscale=False)


def random_resized_crop(image: tf.Tensor, seed, image_size: int,
                        crop_area_min: float = CROP_AREA_RANGE[0]) -> tf.Tensor:
    """Crops a random box of crop_area_min (paper: 20 %) to 100 % of the area and aspect 3/4-4/3,
    resized to image_size square."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=CROP_ASPECT_RANGE,
        area_range=(crop_area_min, CROP_AREA_RANGE[1]),
        max_attempts=CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, size)
    crop = tf.ensure_shape(crop, [None, None, image.shape[-1]])  # slice loses the static channel count
    return resize_square(crop, image_size)


def resize_square(images: tf.Tensor, image_size: int) -> tf.Tensor:
    """Bilinear resize of [..., H, W, C] to image_size square, antialiased when shrinking (as the
    authors' area resizing is); when enlarging antialiasing changes nothing but costs 3x, so skip it."""
    height, width = tf.shape(images)[-3], tf.shape(images)[-2]
    shrinking = tf.logical_or(height > image_size, width > image_size)
    size = [image_size, image_size]
    return tf.cond(shrinking,
                   lambda: tf.image.resize(images, size, method="bilinear", antialias=True),
                   lambda: tf.image.resize(images, size, method="bilinear"))


def random_grayscale(image: tf.Tensor, seed) -> tf.Tensor:
    """With probability 0.2 replaces an RGB image by its luma, kept as three channels."""
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    use_gray = tf.random.stateless_uniform([], seed) < GRAYSCALE_PROBABILITY
    return tf.where(use_gray, gray, image)


def color_jitter(image: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    """Applies brightness, contrast, saturation and hue jitter (only the first two for 1 channel)
    in a random order drawn from seeds[_ORDER]; each op draws its strength from its own sub-seed."""
    ops = [
        lambda x: _jitter_brightness(x, seeds[_BRIGHTNESS]),
        lambda x: _jitter_contrast(x, seeds[_CONTRAST]),
    ]
    if image.shape[-1] == 3:
        ops += [
            lambda x: _jitter_saturation(x, seeds[_SATURATION]),
            lambda x: _jitter_hue(x, seeds[_HUE]),
        ]
    # A stateless shuffle of the op indices; each step picks its op with a graph-mode switch_case.
    order = tf.argsort(tf.random.stateless_uniform([len(ops)], seeds[_ORDER]))
    for step in range(len(ops)):
        image = tf.switch_case(order[step], [lambda op=op, x=image: op(x) for op in ops])
    return image


def random_flip(image: tf.Tensor, seed) -> tf.Tensor:
    """Mirrors left-right with probability 0.5."""
    flip = tf.random.stateless_uniform([], seed) < FLIP_PROBABILITY
    return tf.where(flip, tf.image.flip_left_right(image), image)


def _jitter_factor(seed) -> tf.Tensor:
    return tf.random.stateless_uniform(
        [], seed, minval=1.0 - JITTER_STRENGTH, maxval=1.0 + JITTER_STRENGTH)


def _luma(image: tf.Tensor) -> tf.Tensor:
    return image if image.shape[-1] == 1 else tf.image.rgb_to_grayscale(image)


def _jitter_brightness(image, seed):
    return tf.clip_by_value(image * _jitter_factor(seed), 0.0, 1.0)


def _jitter_contrast(image, seed):
    # Blend with the mean luma, as the authors (and torchvision) do, rather than per-channel means.
    return _blend(image, tf.reduce_mean(_luma(image)), _jitter_factor(seed))


def _jitter_saturation(image, seed):
    return _blend(image, _luma(image), _jitter_factor(seed))


def _jitter_hue(image, seed):
    delta = tf.random.stateless_uniform([], seed, minval=-JITTER_STRENGTH, maxval=JITTER_STRENGTH)
    return tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)


def _blend(image, other, factor):
    """factor * image + (1 - factor) * other, clipped so the next op sees a valid image."""
    return tf.clip_by_value(other + factor * (image - other), 0.0, 1.0)
