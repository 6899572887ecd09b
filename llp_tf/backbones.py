"""Feature-extractor backbones for LLP: images in [0, 1] -> pooled feature vector [B, F].

The LLP heads (classifier and L2-normalised embedding) sit on top of the pooled feature, so every
backbone here ends in global average pooling. Backbones:

- ``resnet18v2`` / ``resnet50v2``: pre-activation ResNets (He et al. 2016, "Identity Mappings") with the
  ImageNet stem, as used in the paper. ``resnet50v2`` reproduces ``keras.applications.ResNet50V2``'s
  layout (and parameter count) exactly.
- ``cifar_resnet20`` / ``cifar_resnet56``: pre-activation CIFAR ResNets (depth 6n+2) for 32x32 images.
- ``small_cnn``: a fast conv net (93k parameters) for 28x28 images (Fashion-MNIST and the like), for CPU experiments.

All layers take their dtype from the global Keras dtype policy, so the backbones run under mixed
precision; the pooled output is then in the compute dtype and callers cast it as they need.
Weight decay is an L2 kernel regulariser (lambda * ||w||^2) on every conv/dense kernel, read back
through ``model.losses``; BatchNorm parameters and biases are not regularised.
"""
from __future__ import annotations

from typing import Callable

import keras
from keras import layers

# Keras's own ResNet epsilon, so resnet50v2 matches keras.applications numerically as well.
BN_EPSILON = 1.001e-5
# PyTorch's default (0.1 in its convention): running statistics follow the weights within a few
# dozen steps, which matters for short runs and for features read in inference mode.
BN_MOMENTUM = 0.9

# Fixed input centring: [0, 1] -> roughly [-2, 2] (mean 0.5, scale 1/0.25), so no caller normalises.
INPUT_MEAN = 0.5
INPUT_STD = 0.25

_BASE_FEATURE_DIMS = {
    "resnet18v2": 512,
    "resnet50v2": 2048,
    "cifar_resnet20": 64,
    "cifar_resnet56": 64,
    "small_cnn": 128,
}
BACKBONES = tuple(_BASE_FEATURE_DIMS)


# ----------------------------------------------------------------------------- building blocks

def _regulariser(weight_decay: float):
    return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


def _conv(x, filters: int, kernel_size: int, stride: int, weight_decay: float, name: str,
          use_bias: bool = False):
    """Conv with symmetric explicit padding for strided convs (TF's 'same' pads only bottom/right)."""
    if stride > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=use_bias,
                         kernel_regularizer=_regulariser(weight_decay), name=name)(x)


def _bn_relu(x, name: str):
    # synchronized: batch statistics over the global batch under a distribution strategy. Keras 3
    # keeps unsynchronized moving statistics per replica, so replicas (and checkpoints) would differ.
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True,
                                  name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _input_and_centring(input_shape):
    inputs = keras.Input(shape=tuple(input_shape), dtype="float32", name="images")
    x = layers.Rescaling(scale=1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="centring")(inputs)
    return inputs, x


def _head_pool(x):
    """Final pre-activation BN-ReLU, then global average pooling."""
    x = _bn_relu(x, "post")
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _imagenet_stem(x, filters: int, weight_decay: float, use_bias: bool):
    """7x7/2 conv then 3x3/2 max pool, padded like keras.applications.ResNet (no BN: pre-activation)."""
    x = _conv(x, filters, 7, 2, weight_decay, "stem_conv", use_bias=use_bias)
    x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)


def _preact_basic_block(x, filters: int, stride: int, weight_decay: float, name: str):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 + shortcut.

    The shortcut is the identity when the shape is kept, else a 1x1 projection of the
    pre-activated input (He et al. 2016, Fig. 4e / option B).
    """
    preact = _bn_relu(x, f"{name}_preact")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(preact, filters, 1, stride, weight_decay, f"{name}_shortcut")
    else:
        shortcut = x
    y = _conv(preact, filters, 3, stride, weight_decay, f"{name}_conv1")
    y = _bn_relu(y, f"{name}_mid")
    y = _conv(y, filters, 3, 1, weight_decay, f"{name}_conv2")
    return layers.Add(name=f"{name}_out")([shortcut, y])


def _preact_basic_stages(x, stage_filters, blocks_per_stage: int, weight_decay: float):
    """Stages of basic blocks; the first block of every stage after the first halves the resolution."""
    for stage, filters in enumerate(stage_filters, start=1):
        for block in range(1, blocks_per_stage + 1):
            stride = 2 if (block == 1 and stage > 1) else 1
            x = _preact_basic_block(x, filters, stride, weight_decay, f"stage{stage}_block{block}")
    return x


def _keras_v2_bottleneck_block(x, filters: int, stride: int, projection: bool, weight_decay: float,
                               name: str):
    """keras.applications resnet ``residual_block_v2``: 1x1-3x3(stride)-1x1(x4), biases as Keras has them."""
    preact = _bn_relu(x, f"{name}_preact")
    if projection:
        shortcut = _conv(preact, 4 * filters, 1, stride, weight_decay, f"{name}_shortcut", use_bias=True)
    elif stride > 1:
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_subsample")(x)
    else:
        shortcut = x
    y = _conv(preact, filters, 1, 1, weight_decay, f"{name}_conv1")
    y = _bn_relu(y, f"{name}_mid1")
    y = _conv(y, filters, 3, stride, weight_decay, f"{name}_conv2")
    y = _bn_relu(y, f"{name}_mid2")
    y = _conv(y, 4 * filters, 1, 1, weight_decay, f"{name}_conv3", use_bias=True)
    return layers.Add(name=f"{name}_out")([shortcut, y])


# ----------------------------------------------------------------------------- backbones

def _resnet18v2(input_shape, weight_decay: float, width: int) -> keras.Model:
    # He et al.'s layout: stride on the first block of a stage. No conv biases: every residual sum
    # feeds a BatchNorm, so a bias would be a redundant, unregularised parameter.
    inputs, x = _input_and_centring(input_shape)
    x = _imagenet_stem(x, 64 * width, weight_decay, use_bias=False)
    x = _preact_basic_stages(x, [c * width for c in (64, 128, 256, 512)], 2, weight_decay)
    return keras.Model(inputs, _head_pool(x), name="resnet18v2")


def _resnet50v2(input_shape, weight_decay: float, width: int) -> keras.Model:
    # Follows keras.applications.ResNet50V2: projection on the first block of each stage, stride on
    # the *last* block of stages 2-4 (none in stage 5), biases on the stem, projection and 1x1-expand convs.
    inputs, x = _input_and_centring(input_shape)
    x = _imagenet_stem(x, 64 * width, weight_decay, use_bias=True)
    stages = [(64, 3, 2), (128, 4, 2), (256, 6, 2), (512, 3, 1)]
    for stage, (filters, blocks, last_stride) in enumerate(stages, start=1):
        for block in range(1, blocks + 1):
            x = _keras_v2_bottleneck_block(
                x, filters * width, stride=last_stride if block == blocks else 1,
                projection=block == 1, weight_decay=weight_decay, name=f"stage{stage}_block{block}")
    return keras.Model(inputs, _head_pool(x), name="resnet50v2")


def _cifar_resnet(blocks_per_stage: int, name: str) -> Callable[..., keras.Model]:
    def build(input_shape, weight_decay: float, width: int) -> keras.Model:
        inputs, x = _input_and_centring(input_shape)
        x = _conv(x, 16 * width, 3, 1, weight_decay, "stem_conv")
        x = _preact_basic_stages(x, [c * width for c in (16, 32, 64)], blocks_per_stage, weight_decay)
        return keras.Model(inputs, _head_pool(x), name=name)
    return build


def _small_cnn(input_shape, weight_decay: float, width: int) -> keras.Model:
    """conv32-pool-conv64-pool-conv128-GAP, each conv followed by BN-ReLU.

    Pooling early keeps it at 7.4M multiply-adds per 28x28 image (93k parameters), fast enough to
    train on Fashion-MNIST on 2 CPU cores in minutes.
    """
    inputs, x = _input_and_centring(input_shape)
    for group, filters_in_group in enumerate([(32,), (64,), (128,)], start=1):
        if group > 1:
            x = layers.MaxPooling2D(2, name=f"pool{group - 1}")(x)
        for index, filters in enumerate(filters_in_group, start=1):
            x = _conv(x, filters * width, 3, 1, weight_decay, f"group{group}_conv{index}")
            x = _bn_relu(x, f"group{group}_conv{index}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


_BUILDERS = {
    "resnet18v2": _resnet18v2,
    "resnet50v2": _resnet50v2,
    "cifar_resnet20": _cifar_resnet(3, "cifar_resnet20"),
    "cifar_resnet56": _cifar_resnet(9, "cifar_resnet56"),
    "small_cnn": _small_cnn,
}
assert tuple(_BUILDERS) == BACKBONES


# ----------------------------------------------------------------------------- public API

def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"Unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")


def _resolve_width(width: int | None) -> int:
    if width is None:
        return 1
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer or None, got {width!r}")
    return width


def feature_dim(name: str, width: int | None = None) -> int:
    """Size F of the pooled feature vector that ``build_backbone(name, ..., width=width)`` returns."""
    _check_name(name)
    return _BASE_FEATURE_DIMS[name] * _resolve_width(width)


def build_backbone(name: str, input_shape: tuple[int, int, int], weight_decay: float = 1e-4,
                   width: int | None = None) -> keras.Model:
    """Build backbone ``name`` as a functional model: float32 images [B, H, W, C] in [0, 1] -> [B, F].

    weight_decay: lambda of the L2 penalty lambda * ||w||^2 on every conv/dense kernel (0 disables it).
    width: integer channel multiplier (None = 1).
    """
    _check_name(name)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    return _BUILDERS[name](tuple(input_shape), float(weight_decay), _resolve_width(width))
