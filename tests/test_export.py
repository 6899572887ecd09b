"""llp-export end to end: a tiny trained run exported by the command line, reloaded with
tf.saved_model.load and compared with the Keras model restored from the same checkpoint; the SavedModel
holds no per-example training state; bad inputs are rejected or flagged."""
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from llp_tf import finished
from llp_tf.data import preprocess_for_eval
from tests.conftest import TINY, run_tool

pytestmark = pytest.mark.slow  # every test here starts a program or trains a run

NUM_TRAIN, SIZE, NUM_CLASSES = 480, 12, 4  # the session's tiny dataset (tests.datasets.write_npz)
ATOL = 1e-5


@pytest.fixture(scope="module")
def trained(tiny_npz, tiny_llp_run, tmp_path_factory):
    """(npz path, workdir, export dir, llp-export's stdout) of the session's tiny run exported by the CLI."""
    export_dir = str(tmp_path_factory.mktemp("export") / "exported")
    result = run_tool("llp_tf.tools.export", f"--workdir={tiny_llp_run}", f"--export_dir={export_dir}")
    return tiny_npz, str(tiny_llp_run), export_dir, result.stdout


@pytest.fixture(scope="module")
def keras_model(trained):
    _, workdir, _, _ = trained
    model, run = finished.restore_model(workdir)
    return model, run


@pytest.fixture(scope="module")
def loaded(trained):
    return tf.saved_model.load(trained[2])


@pytest.fixture(scope="module")
def test_images(trained):
    with np.load(trained[0]) as npz:
        return npz["x_test"][:6]  # uint8 [6, 12, 12, 1]


def expected(model, images):
    outputs = model(preprocess_for_eval(images, SIZE), training=False)
    return {"probabilities": tf.nn.softmax(outputs["logits"]).numpy(),
            "classes": np.argmax(outputs["logits"].numpy(), axis=-1),
            "embeddings": outputs["embeddings"].numpy()}


def assert_matches(outputs, reference):
    np.testing.assert_allclose(outputs["probabilities"].numpy(), reference["probabilities"], atol=ATOL)
    np.testing.assert_allclose(outputs["embeddings"].numpy(), reference["embeddings"], atol=ATOL)
    np.testing.assert_array_equal(outputs["classes"].numpy(), reference["classes"])


def test_cli_wrote_the_saved_model_and_class_names(trained, keras_model, loaded):
    _, workdir, export_dir, stdout = trained
    _, run = keras_model
    assert "ckpt-3" in stdout and export_dir in stdout  # the run's last checkpoint and "class_names.txt" in stdout
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
    with open(os.path.join(export_dir, "assets", "class_names.txt")) as f:
        assert f.read().splitlines() == run.source.class_names
    assert [n.decode() for n in loaded.class_names().numpy()] == run.source.class_names
    assert set(loaded.signatures) == {"serving_default", "serving_bytes"}


def test_serving_default_matches_the_keras_model(keras_model, loaded, test_images):
    model, _ = keras_model
    outputs = loaded.signatures["serving_default"](images=tf.constant(test_images))
    assert outputs["probabilities"].dtype == tf.float32 and outputs["classes"].dtype == tf.int64
    assert outputs["probabilities"].shape == (6, NUM_CLASSES) and outputs["embeddings"].shape == (6, 128)
    assert_matches(outputs, expected(model, test_images))
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)


def test_serving_default_resizes_other_sizes(keras_model, loaded):
    model, _ = keras_model
    images = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 1)).astype(np.uint8)
    outputs = loaded.signatures["serving_default"](images=tf.constant(images))
    assert_matches(outputs, expected(model, images))


def test_serving_bytes_matches_the_keras_model(keras_model, loaded, test_images):
    model, _ = keras_model
    encoded = tf.stack([tf.io.encode_png(image) for image in test_images])
    outputs = loaded.signatures["serving_bytes"](image_bytes=encoded)
    assert outputs["valid"].numpy().all()
    assert_matches(outputs, expected(model, test_images))


def test_undecodable_bytes_are_flagged_not_fatal(keras_model, loaded, test_images):
    model, _ = keras_model
    png = [tf.io.encode_png(image).numpy() for image in test_images[:2]]
    truncated = png[0][:40]  # a PNG signature and header, then nothing
    batch = tf.constant([png[0], b"not an image", truncated, png[1]])
    outputs = loaded.signatures["serving_bytes"](image_bytes=batch)
    np.testing.assert_array_equal(outputs["valid"].numpy(), [True, False, False, True])
    np.testing.assert_array_equal(outputs["classes"].numpy()[1:3], [-1, -1])
    assert not outputs["probabilities"].numpy()[1:3].any() and not outputs["embeddings"].numpy()[1:3].any()
    good = expected(model, test_images[:2])
    assert_matches({key: tf.gather(outputs[key], [0, 3]) for key in good}, good)
    alone = loaded.signatures["serving_bytes"](image_bytes=tf.constant(png))  # no bad neighbours
    assert_matches({key: tf.gather(outputs[key], [0, 3]) for key in good},
                   {key: alone[key].numpy() for key in good})
    empty = loaded.signatures["serving_bytes"](image_bytes=tf.constant([], tf.string))
    assert empty["probabilities"].shape == (0, NUM_CLASSES) and empty["valid"].shape == (0,)


def test_wrong_dtype_rank_and_channel_count_are_rejected(loaded, test_images):
    serve = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        serve(images=tf.constant(test_images.astype(np.float32) / 255))
    expected_shape = re.escape(" is not compatible with expected shape [?,?,?,1]")
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("images [6,12,12,3]") + expected_shape):
        serve(images=tf.constant(np.repeat(test_images, 3, axis=-1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("images [12,12,1]") + expected_shape):
        serve(images=tf.constant(test_images[0]))  # one image without its batch axis
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=re.escape("image_bytes [2,1] is not compatible with expected shape [?]")):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([[b"x"], [b"y"]]))
    # The restored tf.function checks its TensorSpec before running anything.
    with pytest.raises(TypeError, match="TensorSpec"):
        loaded.serve(tf.constant(np.repeat(test_images, 3, axis=-1)))
    with pytest.raises(TypeError, match="TensorSpec"):
        loaded.serve(tf.constant(test_images.astype(np.float32)))


def test_saved_model_cli_lists_both_signatures(trained):
    result = run_tool("tensorflow.python.tools.saved_model_cli", "show", "--dir", trained[2], "--all")
    listing = result.stdout
    for name in ("signature_def['serving_default']", "signature_def['serving_bytes']",
                 "inputs['images']", "inputs['image_bytes']", "outputs['probabilities']",
                 "outputs['classes']", "outputs['embeddings']", "outputs['valid']"):
        assert name in listing, name
    assert "DT_UINT8" in listing and "shape: (-1, -1, -1, 1)" in listing
    assert f"shape: (-1, {NUM_CLASSES})" in listing and "shape: (-1, 128)" in listing


def test_export_holds_no_training_state(trained, keras_model):
    _, _, export_dir, _ = trained
    model, run = keras_model
    assert model.state.bank.shape[0] == NUM_TRAIN  # what must not be exported
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    shapes = reader.get_variable_to_shape_map()
    exported = {name: shape for name, shape in shapes.items() if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert exported
    for name, shape in exported.items():
        assert not (shape and shape[0] == NUM_TRAIN), (name, shape)
        assert not re.search(r"bank|labels|confidence|density|state|optimizer|iteration", name), name
    # Exactly the backbone's and the heads' weights, nothing else.
    weights = model.backbone.weights + model.embedding_head.weights + model.classifier.weights
    assert len(exported) == len(weights)
    assert sorted(tuple(s) for s in exported.values()) == sorted(tuple(w.shape) for w in weights)


def test_clear_errors(trained, tmp_path):
    _, workdir, export_dir, _ = trained
    with pytest.raises(FileNotFoundError, match="does not exist"):
        finished.restore_model(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        finished.restore_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ckpt-9"):
        finished.restore_model(workdir, os.path.join(workdir, "checkpoints", "ckpt-9"))
    # A config that builds another network than the checkpoint holds.
    other = tmp_path / "other"
    shutil.copytree(os.path.join(workdir, "checkpoints"), other / "checkpoints")
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    (other / "config.json").write_text(json.dumps({**config, "width": 2}))
    with pytest.raises(ValueError, match="does not fit"):
        finished.restore_model(str(other))
    without_checkpoints = tmp_path / "fresh"
    without_checkpoints.mkdir()
    (without_checkpoints / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        finished.restore_model(str(without_checkpoints))
    # The command line refuses to write over an existing export.
    result = run_tool("llp_tf.tools.export", f"--workdir={workdir}", f"--export_dir={export_dir}",
                      check=False)
    assert result.returncode != 0
    assert "llp-export:" in result.stderr and "not an empty directory" in result.stderr


def test_a_mixed_float16_run_is_restored_whole_and_exported(tiny_npz, tmp_path):
    """Its checkpoint holds a LossScaleOptimizer; the float32 rebuild has the same optimizer, so the
    whole checkpoint is restored (before: all but the optimizer, which was left at zero)."""
    workdir, export_dir = tmp_path / "mixed", tmp_path / "exported"
    run_tool("llp_tf.tools.train", f"--dataset=npz:{tiny_npz}", f"--workdir={workdir}", *TINY,
             "--epochs=1", "--instance_epochs=0", "--steps_per_epoch=2", "--mixed_precision=mixed_float16")
    result = run_tool("llp_tf.tools.export", f"--workdir={workdir}", f"--export_dir={export_dir}")
    assert "restored " in result.stdout and "ckpt-1" in result.stdout
    model, run = finished.restore_model(str(workdir))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.backbone.compute_dtype == "float32"  # served in float32
    assert int(model.optimizer.iterations.numpy()) == 2
    # Written back, the restored objects are the checkpoint, value for value.
    original = tf.train.load_checkpoint(finished.checkpoint_path(str(workdir)))
    rewritten = tf.train.load_checkpoint(run.checkpoint.write(str(tmp_path / "rewritten")))
    names = set(original.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert names == set(rewritten.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert any(name.startswith("optimizer/inner_optimizer/") for name in names)
    for name in names:
        np.testing.assert_array_equal(rewritten.get_tensor(name), original.get_tensor(name), err_msg=name)
    images = np.load(tiny_npz)["x_test"][:4]
    assert_matches(tf.saved_model.load(str(export_dir)).signatures["serving_default"](
        images=tf.constant(images)), expected(model, images))
