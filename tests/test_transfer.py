"""llp-transfer: the frozen backbone of the tiny LLP run under a new linear readout on another dataset
(scikit-learn's 8x8 digits), against the same readout on a randomly initialised backbone."""
import json

import numpy as np
import pytest
import tensorflow as tf

from llp_tf import transfer
from tests.conftest import run_tool

NUM_DIGITS = 10


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """load_digits as uint8 8x8 images: 1400 train, 397 test, 10 classes."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=images[:1400], y_train=digits.target[:1400], x_test=images[1400:],
             y_test=digits.target[1400:])
    return path


@pytest.mark.slow
def test_readout_on_the_frozen_backbone_beats_chance(tiny_llp_run, digits_npz, tmp_path):
    output = tmp_path / "transfer.json"
    result = run_tool("llp_tf.tools.transfer", f"--workdir={tiny_llp_run}", f"--dataset=npz:{digits_npz}",
                      "--epochs=20", "--learning_rate=0.05", f"--output={output}")
    report = json.loads(output.read_text())
    assert (report["num_train"], report["num_test"], report["num_classes"]) == (1400, 397, NUM_DIGITS)
    assert report["image_size"] == 12  # the run's size: the digits are resized to it
    assert report["top1"] > 3 / NUM_DIGITS  # chance is 10 %
    assert 0 <= report["random_backbone_top1"] <= 1
    assert f"{100 * report['top1']:.2f}%" in result.stdout
    assert f"{100 * report['random_backbone_top1']:.2f}%" in result.stdout


@pytest.mark.slow
def test_bad_target_is_named(tiny_llp_run, tmp_path):
    result = run_tool("llp_tf.tools.transfer", f"--workdir={tiny_llp_run}",
                      f"--dataset=npz:{tmp_path / 'missing.npz'}", check=False)
    assert result.returncode != 0 and "does not exist" in result.stderr


def test_match_channels_converts_grey_and_colour():
    colour = tf.random.uniform([2, 5, 5, 3], seed=1)
    grey = transfer.match_channels(colour, 1)
    np.testing.assert_allclose(grey.numpy(), tf.image.rgb_to_grayscale(colour).numpy())
    back = transfer.match_channels(grey, 3)
    assert back.shape == (2, 5, 5, 3)
    np.testing.assert_array_equal(back.numpy()[..., 2], grey.numpy()[..., 0])
    assert transfer.match_channels(colour, 3) is colour


def test_readout_learns_separable_features():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = (rng.normal(size=(3, 8))[labels] * 5 + rng.normal(size=(300, 8)) + 100).astype(np.float32)
    readout = transfer.train_readout(features, labels, 3, epochs=10, learning_rate=0.05, batch_size=32)
    accuracy = np.mean(np.argmax(readout.predict(features, verbose=0), axis=1) == labels)
    assert accuracy > 0.95  # the +100 offset is undone by the standardisation
