"""Tests for llp_tf.backbones: shapes, gradients, parameter counts, weight decay, mixed precision."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from llp_tf.backbones import BACKBONES, build_backbone, feature_dim

# Small inputs keep the forward/backward passes cheap; the ImageNet-stem nets still end at 2x2.
TEST_INPUT_SHAPES = {
    "resnet18v2": (64, 64, 3),
    "resnet50v2": (64, 64, 3),
    "cifar_resnet20": (32, 32, 3),
    "cifar_resnet56": (32, 32, 3),
    "small_cnn": (28, 28, 1),
}
WEIGHT_DECAY = 1e-4


@pytest.fixture(scope="module")
def resnet50v2():
    """Built once: the largest model in the file."""
    return build_backbone("resnet50v2", TEST_INPUT_SHAPES["resnet50v2"], weight_decay=WEIGHT_DECAY)


def _model(name, resnet50v2_fixture, **kwargs):
    if name == "resnet50v2" and not kwargs:
        return resnet50v2_fixture
    return build_backbone(name, TEST_INPUT_SHAPES[name], **kwargs)


def _random_images(shape, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (batch, *shape)).astype("float32")


# ----------------------------------------------------------------------------- shapes and gradients

@pytest.mark.parametrize("name", BACKBONES)
def test_forward_shape_finite_and_gradients(name, resnet50v2):
    model = _model(name, resnet50v2)
    images = tf.constant(_random_images(TEST_INPUT_SHAPES[name]))
    # A random projection of the features, so no symmetry makes a gradient vanish exactly.
    projection = tf.constant(np.random.default_rng(1).normal(size=(feature_dim(name),)).astype("float32"))
    with tf.GradientTape() as tape:
        features = model(images, training=True)
        loss = tf.reduce_sum(tf.cast(features, tf.float32) * projection)
    assert tuple(features.shape) == (2, feature_dim(name))
    assert np.all(np.isfinite(features.numpy()))
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) == len(model.trainable_variables) > 0
    for variable, grad in zip(model.trainable_variables, grads):
        assert grad is not None, variable.path
        grad = grad.numpy()
        assert np.all(np.isfinite(grad)), variable.path
        assert np.any(grad != 0), variable.path


def test_width_multiplies_channels():
    model = build_backbone("cifar_resnet20", (32, 32, 3), width=2)
    assert feature_dim("cifar_resnet20", width=2) == 128
    assert tuple(model.output.shape) == (None, 128)
    small = build_backbone("small_cnn", (28, 28, 1), width=2)
    assert tuple(small.output.shape) == (None, feature_dim("small_cnn", width=2)) == (None, 256)


def test_feature_dims():
    assert feature_dim("resnet18v2") == 512
    assert feature_dim("resnet50v2") == 2048
    assert feature_dim("cifar_resnet20") == feature_dim("cifar_resnet56") == 64


def test_unknown_name_lists_valid_choices():
    with pytest.raises(ValueError) as error:
        build_backbone("resnet1000", (32, 32, 3))
    for name in BACKBONES:
        assert name in str(error.value)
    with pytest.raises(ValueError):
        feature_dim("vgg16")


# ----------------------------------------------------------------------------- parameter counts

def test_resnet50v2_matches_keras_applications():
    ours = build_backbone("resnet50v2", (224, 224, 3))
    reference = keras.applications.ResNet50V2(
        include_top=False, weights=None, pooling="avg", input_shape=(224, 224, 3))
    assert ours.count_params() == reference.count_params() == 23_564_800
    # Same multiset of weight shapes, not just the same total.
    shapes = lambda model: sorted(tuple(w.shape) for w in model.weights)  # noqa: E731
    assert shapes(ours) == shapes(reference)
    assert tuple(ours.output.shape) == tuple(reference.output.shape) == (None, 2048)


def _conv_params(kernel, c_in, c_out):
    return kernel * kernel * c_in * c_out


def _bn_params(channels):
    return 4 * channels  # gamma, beta, moving mean, moving variance


def _preact_basic_resnet_params(in_channels, stem_kernel, stage_channels, blocks_per_stage):
    """Bias-free pre-activation ResNet of basic blocks, 1x1 projection where the channel count changes."""
    total = _conv_params(stem_kernel, in_channels, stage_channels[0])
    c_in = stage_channels[0]
    for c_out in stage_channels:
        for _ in range(blocks_per_stage):
            total += _bn_params(c_in) + _conv_params(3, c_in, c_out)  # pre-activation, conv1
            total += _bn_params(c_out) + _conv_params(3, c_out, c_out)  # mid BN, conv2
            if c_in != c_out:
                total += _conv_params(1, c_in, c_out)  # projection shortcut
            c_in = c_out
    return total + _bn_params(c_in)  # final BN before pooling


def test_resnet18v2_param_count():
    expected = _preact_basic_resnet_params(3, 7, (64, 128, 256, 512), 2)
    assert 11_170_000 <= expected <= 11_190_000
    assert build_backbone("resnet18v2", (224, 224, 3)).count_params() == expected


def test_cifar_resnet_param_counts():
    expected_20 = _preact_basic_resnet_params(3, 3, (16, 32, 64), 3)
    assert 265_000 <= expected_20 <= 275_000  # He et al.: ResNet-20 has 0.27M parameters
    assert build_backbone("cifar_resnet20", (32, 32, 3)).count_params() == expected_20
    expected_56 = _preact_basic_resnet_params(3, 3, (16, 32, 64), 9)
    assert build_backbone("cifar_resnet56", (32, 32, 3)).count_params() == expected_56


def test_small_cnn_param_count():
    convs = [(1, 32), (32, 64), (64, 128)]
    expected = sum(_conv_params(3, a, b) + _bn_params(b) for a, b in convs)
    assert 80_000 <= expected <= 300_000
    assert build_backbone("small_cnn", (28, 28, 1)).count_params() == expected


# ----------------------------------------------------------------------------- weight decay

def _kernels(model):
    return [layer.kernel for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


@pytest.mark.parametrize("name", ["resnet50v2", "cifar_resnet20", "small_cnn"])
def test_weight_decay_is_l2_on_kernels_only(name, resnet50v2):
    # resnet50v2 carries biases (as Keras has them), so it also checks biases stay unregularised.
    model = _model(name, resnet50v2) if name == "resnet50v2" else build_backbone(
        name, TEST_INPUT_SHAPES[name], weight_decay=WEIGHT_DECAY)
    kernels = _kernels(model)
    assert len(model.losses) == len(kernels) > 0
    expected = WEIGHT_DECAY * sum(np.sum(np.asarray(k.numpy(), np.float64) ** 2) for k in kernels)
    actual = float(np.sum([float(loss) for loss in model.losses]))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.gamma_regularizer is None and layer.beta_regularizer is None
        if getattr(layer, "bias_regularizer", None) is not None:
            pytest.fail(f"{layer.name} regularises its bias")


def test_no_regularisation_without_weight_decay():
    model = build_backbone("cifar_resnet20", (32, 32, 3), weight_decay=0.0)
    assert model.losses == []
    assert all(layer.kernel_regularizer is None for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D))


# ----------------------------------------------------------------------------- mixed precision

@pytest.mark.parametrize("name", ["small_cnn", "cifar_resnet20"])
def test_mixed_bfloat16_policy(name):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_backbone(name, TEST_INPUT_SHAPES[name])
        features = model(_random_images(TEST_INPUT_SHAPES[name]), training=False)
        convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        assert convs
        for conv in convs:
            assert conv.compute_dtype == "bfloat16"
            assert conv.kernel.dtype == "float32"  # float32 master weights
            assert conv.output.dtype == "bfloat16"
        assert features.dtype == tf.bfloat16
        assert np.all(np.isfinite(tf.cast(features, tf.float32).numpy()))
        assert all(loss.dtype == tf.float32 for loss in model.losses)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
