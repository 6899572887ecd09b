"""Tests of the paper's stateless augmentation, eagerly and inside tf.data."""
import numpy as np
import pytest
import tensorflow as tf

from llp_tf import augment
from llp_tf.augment import augment_image, random_resized_crop, resize_square

SHAPES = [(28, 28, 1), (32, 32, 3), (50, 70, 3)]


def random_image(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("image_size", [24, 32])
def test_eager_shape_dtype_range(shape, image_size):
    out = augment_image(random_image(shape), tf.constant([1, 2]), image_size)
    assert out.shape == (image_size, image_size, shape[-1])
    assert out.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


@pytest.mark.parametrize("shape", SHAPES)
def test_same_seed_same_output_other_seed_other_output(shape):
    image = random_image(shape)
    first = augment_image(image, [3, 4], 24)
    np.testing.assert_array_equal(first, augment_image(image, [3, 4], 24))
    np.testing.assert_array_equal(first, augment_image(image, tf.constant([3, 4], tf.int64), 24))
    assert not np.array_equal(first, augment_image(image, [3, 5], 24))


def test_crop_area_min_bounds_the_crop():
    """A crop of at least area a (aspect <= 4/3) is at least sqrt(3a/4) of the side tall: seen as the
    value span of a vertical ramp image after the crop."""
    side = 32
    ramp = tf.constant(np.tile(np.linspace(0, 1, side, dtype=np.float32)[:, None, None], (1, side, 1)))
    spans = {area_min: [float(tf.reduce_max(crop) - tf.reduce_min(crop))
                        for crop in (random_resized_crop(ramp, [seed, 0], side, area_min)
                                     for seed in range(60))]
             for area_min in (0.2, 0.6)}
    bound = np.sqrt(0.6 * 3 / 4) - 2 / side  # less two pixels for the resampled edges
    assert min(spans[0.6]) >= bound
    assert min(spans[0.2]) < bound  # the paper's range reaches smaller crops


def test_float_input_matches_uint8_input():
    image = random_image((32, 32, 3))
    from_uint8 = augment_image(image, [7, 7], 32)
    from_float = augment_image(tf.cast(image, tf.float32) / 255.0, [7, 7], 32)
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_inside_tf_data_parallel_map_is_deterministic_and_varied(shape):
    def build():
        images = tf.data.Dataset.from_tensors(random_image(shape)).repeat(8)
        seeds = tf.data.Dataset.random(seed=5).batch(2)
        return (tf.data.Dataset.zip(images, seeds)
                .map(lambda image, seed: augment_image(image, seed, 24),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(8))

    batch = next(iter(build())).numpy()
    assert batch.shape == (8, 24, 24, shape[-1]) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    assert len({b.tobytes() for b in batch}) == 8  # every example augmented differently
    np.testing.assert_array_equal(batch, next(iter(build())).numpy())


def test_graph_mode_with_unknown_spatial_size():
    augment = tf.function(lambda image, seed: augment_image(image, seed, 16),
                          input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                           tf.TensorSpec([2], tf.int64)])
    for shape in [(20, 30, 3), (64, 48, 3)]:
        out = augment(random_image(shape), tf.constant([1, 1], tf.int64))
        assert out.shape == (16, 16, 3)


def test_grayscale_rate_is_about_one_in_five():
    # A colourful image: only grayscale outputs have equal channels.
    rows, columns = np.meshgrid(np.arange(32) * 8, np.arange(32) * 8, indexing="ij")
    image = tf.constant(np.stack([rows, columns, np.full((32, 32), 200)], axis=-1).astype(np.uint8))
    seeds = tf.data.Dataset.random(seed=11).batch(2).take(300)
    outputs = np.stack(list(seeds.map(lambda seed: augment_image(image, seed, 32)).as_numpy_iterator()))
    gray = np.all(np.abs(outputs[..., 0] - outputs[..., 1]) < 1e-6, axis=(1, 2))
    assert 0.1 < gray.mean() < 0.3


def test_rejects_other_channel_counts():
    with pytest.raises(ValueError, match="channel"):
        augment_image(random_image((8, 8, 4)), [0, 0], 8)


def test_resize_square_antialiases_only_when_shrinking():
    image = tf.random.stateless_uniform([20, 24, 3], [0, 1])
    np.testing.assert_allclose(resize_square(image, 32), tf.image.resize(image, [32, 32]), atol=1e-6)
    shrunk = resize_square(image[None], 8)
    assert shrunk.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(shrunk, tf.image.resize(image[None], [8, 8], antialias=True), atol=1e-6)


def _composed(image, seed, image_size, crop_area_min, parts):
    """augment_image rebuilt from its public parts with the same sub-seeds, keeping only `parts`."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.constant(seed, tf.int64), num=augment._NUM_SUB_SEEDS)
    image = augment.random_resized_crop(image, seeds[augment._CROP], image_size, crop_area_min)
    if "grayscale" in parts and image.shape[-1] == 3:
        image = augment.random_grayscale(image, seeds[augment._GRAY])
    if "jitter" in parts:
        image = augment.color_jitter(image, seeds)
    if "flip" in parts:
        image = augment.random_flip(image, seeds[augment._FLIP])
    return tf.clip_by_value(image, 0.0, 1.0)


PARTS = ("flip", "jitter", "grayscale")


@pytest.mark.parametrize("off", PARTS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_each_switch_removes_its_part_and_nothing_else(off, shape):
    """Turning one part off gives exactly the paper's pipeline without that part (every other part's
    random draw unchanged), and over a few seeds it does change the output."""
    image = random_image(shape, seed=3)
    changed = 0
    for seed in range(12):
        switched = augment_image(image, [seed, 1], 24, 0.2, **{off: False})
        expected = _composed(image, [seed, 1], 24, 0.2, [p for p in PARTS if p != off])
        np.testing.assert_allclose(switched, expected, atol=1e-6)
        np.testing.assert_allclose(augment_image(image, [seed, 1], 24, 0.2),
                                   _composed(image, [seed, 1], 24, 0.2, PARTS), atol=1e-6)
        changed += not np.allclose(switched, augment_image(image, [seed, 1], 24, 0.2), atol=1e-6)
    if off == "grayscale" and shape[-1] == 1:
        assert changed == 0  # one channel: grayscale never applies
    else:
        assert changed >= 2


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_weak_view_is_a_mild_crop_and_the_flip_alone(shape):
    """The consistency departure's weak view: the crop keeps at least WEAK_CROP_AREA_MIN of the area,
    the flip as configured, and no colour part (the paper's pipeline with only those two parts)."""
    image = random_image(shape, seed=4)
    for seed in range(6):
        for flip in (True, False):
            parts = ["flip"] if flip else []
            np.testing.assert_allclose(
                augment.weak_view(image, [seed, 2], 24, flip=flip),
                _composed(image, [seed, 2], 24, augment.WEAK_CROP_AREA_MIN, parts), atol=1e-6)
    views = [augment.weak_view(image, [seed, 2], 24).numpy() for seed in range(6)]
    assert len({v.tobytes() for v in views}) > 1  # it is random
