"""Tests of the sources, the paper's labelled/kept selection and the tf.data pipelines, on tiny data."""
import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from llp_tf import data
from llp_tf.data import pipelines

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


# ---------------------------------------------------------------------------------------------
# Helpers that write tiny datasets


def write_idx(path, array, gz=True):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    raw = header + array.tobytes()
    with (gzip.open(path + ".gz", "wb") if gz else open(path, "wb")) as file:
        file.write(raw)


def make_idx_dir(directory, num_train=12, num_test=5, gz=True):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(num_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(num_test) % 10}
    for name, array in arrays.items():
        write_idx(os.path.join(directory, name), array, gz=gz)
    return arrays


def save_image(path, size, mode="RGB", value=0):
    width, height = size
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.full((height, width, channels), value, np.uint8).squeeze()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels, mode).save(path)


def make_folder_dataset(root, eval_split="test", classes=("cat", "dog", "fish")):
    """Two train images per class (mixed sizes, one grayscale, mixed extensions), one eval each."""
    for c, name in enumerate(classes):
        save_image(f"{root}/train/{name}/a.png", (20 + c, 16), value=10 * c)
        save_image(f"{root}/train/{name}/b.JPG", (12, 12), value=10 * c)
        save_image(f"{root}/{eval_split}/{name}/x.jpeg", (9, 7), value=10 * c)
    save_image(f"{root}/train/dog/c_gray.png", (10, 14), mode="L", value=77)
    return root


def array_source(num_train=50, num_test=10, num_classes=5, shape=(8, 8, 3)):
    """Images whose every pixel is their row number, so pipelines can be checked by content."""
    def images(n):
        return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, *shape)).copy()
    return data.ArraySource(images(num_train), np.arange(num_train) % num_classes,
                            images(num_test), np.arange(num_test) % num_classes)


def collect(dataset):
    return [tuple(np.asarray(t) for t in element) for element in dataset.as_numpy_iterator()]


# ---------------------------------------------------------------------------------------------
# load_source


@pytest.mark.parametrize("gz", [True, False])
def test_idx_source_round_trip(tmp_path, gz):
    arrays = make_idx_dir(str(tmp_path), gz=gz)
    source = data.load_source(f"idx:{tmp_path}")
    assert source.num_classes == 10 and source.class_names == [str(c) for c in range(10)]
    assert source.image_shape == (28, 28, 1) and source.channels == 1
    np.testing.assert_array_equal(source.labels("train"), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(source.labels("test"), arrays["t10k-labels-idx1-ubyte"])
    examples = collect(source.examples("train", np.array([3, 0])))
    assert [(e[1], e[2]) for e in examples] == [(3, 0), (0, 1)]
    np.testing.assert_array_equal(examples[0][0][..., 0], arrays["train-images-idx3-ubyte"][3])
    assert examples[0][0].dtype == np.uint8


def test_idx_corrupt_header_is_named(tmp_path):
    make_idx_dir(str(tmp_path))
    path = os.path.join(tmp_path, "train-images-idx3-ubyte.gz")
    with gzip.open(path, "wb") as file:
        file.write(b"\x12\x34\x08\x03" + b"\x00" * 40)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*magic"):
        data.load_source(f"idx:{tmp_path}")


def test_idx_count_mismatch_and_truncation(tmp_path):
    make_idx_dir(str(tmp_path))
    write_idx(os.path.join(tmp_path, "train-labels-idx1-ubyte"), np.zeros(7))
    with pytest.raises(ValueError, match="12 train images but 7 train labels"):
        data.load_source(f"idx:{tmp_path}")
    path = os.path.join(tmp_path, "t10k-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as file:
        raw = file.read()
    with gzip.open(path, "wb") as file:
        file.write(raw[:-3])
    with pytest.raises(ValueError, match="t10k-images.*shape"):
        data.read_idx(path)


def test_idx_missing_file(tmp_path):
    make_idx_dir(str(tmp_path))
    os.remove(os.path.join(tmp_path, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_source(f"idx:{tmp_path}")


def test_folder_source(tmp_path):
    source = data.load_source(f"folder:{make_folder_dataset(str(tmp_path))}")
    assert source.class_names == ["cat", "dog", "fish"] and source.num_classes == 3
    assert source.channels == 3 and source.image_shape is None  # mixed sizes
    np.testing.assert_array_equal(source.labels("train"), [0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(source.labels("test"), [0, 1, 2])
    shapes = [(e[0].shape, e[1], e[2]) for e in collect(source.examples("train"))]
    assert shapes == [((16, 20, 3), 0, 0), ((12, 12, 3), 0, 1), ((16, 21, 3), 1, 2),
                      ((12, 12, 3), 1, 3), ((14, 10, 3), 1, 4), ((16, 22, 3), 2, 5), ((12, 12, 3), 2, 6)]
    gray = collect(source.examples("train", np.array([4])))[0][0]
    assert np.all(gray == 77)  # grayscale decoded to three equal channels


def test_folder_source_same_size_has_image_shape_and_accepts_val(tmp_path):
    for name in ("a", "b"):
        save_image(f"{tmp_path}/train/{name}/0.png", (6, 5))
        save_image(f"{tmp_path}/val/{name}/0.jpg", (6, 5))
    source = data.load_source(f"folder:{tmp_path}")
    assert source.image_shape == (5, 6, 3)
    assert len(source.labels("test")) == 2
    assert collect(source.examples("test"))[1][0].shape == (5, 6, 3)


def test_folder_errors(tmp_path):
    root = make_folder_dataset(str(tmp_path / "no_eval"), eval_split="elsewhere")
    with pytest.raises(FileNotFoundError, match="neither test/ nor val/"):
        data.load_source(f"folder:{root}")

    root = make_folder_dataset(str(tmp_path / "missing_class"))
    os.remove(f"{root}/test/dog/x.jpeg")
    os.rmdir(f"{root}/test/dog")
    with pytest.raises(ValueError, match="dog"):
        data.load_source(f"folder:{root}")

    root = make_folder_dataset(str(tmp_path / "broken"))
    with open(f"{root}/train/fish/broken.png", "wb") as file:
        file.write(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        data.load_source(f"folder:{root}")

    root = make_folder_dataset(str(tmp_path / "stray"))
    open(f"{root}/train/cat/notes.txt", "w").close()
    with pytest.raises(ValueError, match="notes.txt"):
        data.load_source(f"folder:{root}")


def test_unknown_scheme_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'csv:"):
        data.load_source("csv:/somewhere")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_source(str(tmp_path))
    with pytest.raises(ValueError, match="names no path"):
        data.load_source("folder:")
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        data.load_source(f"folder:{tmp_path}/does_not_exist")
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        data.load_source(f"npz:{tmp_path}/nothing.npz")


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8),
              "y_train": np.array([[0], [1], [2], [0], [1], [2]]),  # Keras-style [N, 1]
              "x_test": rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8), "y_test": np.array([2, 0])}
    np.savez(tmp_path / "d.npz", **arrays)
    source = data.load_source(f"npz:{tmp_path}/d.npz")
    assert source.num_classes == 3 and source.image_shape == (5, 4, 3) and source.channels == 3
    np.testing.assert_array_equal(source.labels("train"), arrays["y_train"][:, 0])
    test = collect(source.examples("test"))
    np.testing.assert_array_equal(test[1][0], arrays["x_test"][1])
    assert [(e[1], e[2]) for e in test] == [(2, 0), (0, 1)]

    np.savez(tmp_path / "gray.npz", x_train=arrays["x_train"][..., 0], y_train=[0] * 6,
             x_test=arrays["x_test"][..., 0], y_test=[0, 0])
    assert data.load_source(f"npz:{tmp_path}/gray.npz").image_shape == (5, 4, 1)
    np.savez(tmp_path / "float.npz", **{**arrays, "x_train": arrays["x_train"] / 255.0})
    with pytest.raises(ValueError, match="uint8"):
        data.load_source(f"npz:{tmp_path}/float.npz")


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        array_source().labels("validation")


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        source = data.load_source("tfds:mnist")
        assert source.num_classes == 10 and source.image_shape == (28, 28, 1) and source.channels == 1
        labels = source.labels("train")
        assert labels.shape == (20,) and labels.dtype == np.int64
        examples = collect(source.examples("train", np.array([2, 5, 11])))
        assert [(e[1], e[2]) for e in examples] == [(labels[2], 0), (labels[5], 1), (labels[11], 2)]
        assert examples[0][0].shape == (28, 28, 1) and examples[0][0].dtype == np.uint8
        assert len(collect(source.examples("test"))) == len(source.labels("test"))
        with pytest.raises(ValueError, match="strictly increasing"):
            source.examples("train", np.array([5, 2]))
        selection = data.select_examples(labels, 1.0)
        batch = next(iter(data.train_dataset(source, selection, 4, 24)))
        assert batch[0].shape == (4, 24, 24, 1)
        np.testing.assert_array_equal(batch[1], selection.true_labels[batch[2].numpy()])


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="Fashion-MNIST idx files not installed")
def test_real_fashion_mnist():
    source = data.load_source(f"idx:{FASHION_MNIST}")
    assert len(source.labels("train")) == 60000 and len(source.labels("test")) == 10000
    assert np.all(np.bincount(source.labels("train")) == 6000)
    assert source.image_shape == (28, 28, 1)
    assert source.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot"]


def labels_with(first, counts, seed=0):
    """Labels that start with `first` and hold counts[c] of each class c, the rest shuffled."""
    pool = np.repeat(np.arange(len(counts)), counts)
    for label in first:
        pool = np.delete(pool, np.flatnonzero(pool == label)[0])
    return np.concatenate([first, np.random.default_rng(seed).permutation(pool)]).astype(np.uint8)


def test_idx_label_files_are_recognised_by_content():
    """MNIST's label files (their class counts and first labels) get the digits as names, and
    Fashion-MNIST's its names (test_real_fashion_mnist); the same labels in another order, or other
    counts, are not recognised (the classes keep their numbers)."""
    train = labels_with([5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5],
                        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    test = labels_with([7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6], [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                             1009, 974])
    assert data.arrays.known_idx_class_names(train, test) == [str(d) for d in range(10)]
    assert data.arrays.known_idx_class_names(train[::-1], test) is None
    assert data.arrays.known_idx_class_names(train, test[:-1]) is None
    fashion = labels_with([9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9], [6000] * 10)
    fashion_test = labels_with([9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5], [1000] * 10)
    assert data.arrays.known_idx_class_names(fashion, fashion_test)[9] == "Ankle boot"
    assert data.arrays.known_idx_class_names(fashion, test) is None


def test_class_names_given_replace_the_sources_own(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 5, 5), np.uint8), y_train=[0, 1, 2, 0],
             x_test=np.zeros((2, 5, 5), np.uint8), y_test=[1, 2], class_names=["ant", "bee", "cow"])
    assert data.load_source(f"npz:{tmp_path}/d.npz").class_names == ["ant", "bee", "cow"]
    renamed = data.load_source(f"npz:{tmp_path}/d.npz", class_names=("fly", " gnu ", "yak"))
    assert renamed.class_names == ["fly", "gnu", "yak"]
    with pytest.raises(ValueError, match="--class_names gives 2 names but npz:.* has 3 classes: give 3"):
        data.load_source(f"npz:{tmp_path}/d.npz", class_names=("fly", "gnu"))
    with pytest.raises(ValueError, match="repeats fly"):
        data.load_source(f"npz:{tmp_path}/d.npz", class_names=("fly", "gnu", "fly"))
    with pytest.raises(ValueError, match="empty name at position 1"):
        data.load_source(f"npz:{tmp_path}/d.npz", class_names=("fly", "", "yak"))


# ---------------------------------------------------------------------------------------------
# select_examples


def unbalanced_labels():
    return np.repeat(np.arange(4), [100, 60, 30, 10])


def test_selection_is_class_balanced():
    labels = unbalanced_labels()
    selection = data.select_examples(labels, 0.1)
    counts = np.bincount(selection.true_labels[selection.is_labelled], minlength=4)
    np.testing.assert_array_equal(counts, [10, 6, 3, 1])
    assert len(selection.rows) == len(labels)  # q = 1 keeps everything
    np.testing.assert_array_equal(selection.true_labels, labels[selection.rows])


def test_selection_keeps_all_labelled_under_partial_q():
    labels = unbalanced_labels()
    full = data.select_examples(labels, 0.1, seed=3)
    partial = data.select_examples(labels, 0.1, kept_fraction=0.3, seed=3)
    assert len(partial.rows) == round(0.3 * len(labels))
    assert np.all(np.diff(partial.rows) > 0)
    np.testing.assert_array_equal(partial.rows[partial.is_labelled], full.rows[full.is_labelled])


def test_selection_is_a_function_of_its_seed():
    labels = unbalanced_labels()
    first = data.select_examples(labels, 0.1, 0.5, seed=1)
    again = data.select_examples(labels, 0.1, 0.5, seed=1)
    other = data.select_examples(labels, 0.1, 0.5, seed=2)
    np.testing.assert_array_equal(first.rows, again.rows)
    np.testing.assert_array_equal(first.is_labelled, again.is_labelled)
    assert not np.array_equal(first.rows[first.is_labelled], other.rows[other.is_labelled])


def test_selection_errors():
    labels = unbalanced_labels()
    with pytest.raises(ValueError, match="'bee'.*0.05"):
        data.select_examples(labels, 0.04, class_names=["ant", "fly", "moth", "bee"])
    with pytest.raises(ValueError, match="'wasp'.*no training examples"):
        data.select_examples(labels, 0.5, class_names=["ant", "fly", "moth", "bee", "wasp"])
    with pytest.raises(ValueError, match="label 3 but only 2 class names"):
        data.select_examples(labels, 0.5, class_names=["ant", "fly"])
    with pytest.raises(ValueError, match="labelled_fraction"):
        data.select_examples(labels, 0.0)
    with pytest.raises(ValueError, match="kept_fraction"):
        data.select_examples(labels, 0.1, kept_fraction=1.5)
    with pytest.raises(ValueError, match="fewer than the"):
        data.select_examples(labels, 0.5, kept_fraction=0.3)


# ---------------------------------------------------------------------------------------------
# train_dataset, eval_dataset, preprocess_for_eval


def pass_indices(dataset, num_batches, first_batch=0):
    """The indices of batches first_batch ... first_batch + num_batches - 1 (train_dataset is endless)."""
    batches = dataset.skip(first_batch).take(num_batches).as_numpy_iterator()
    return np.concatenate([indices for _, _, indices in batches])


def test_train_dataset_batches():
    source = array_source()
    selection = data.select_examples(source.labels("train"), 0.2, kept_fraction=0.8)
    dataset = data.train_dataset(source, selection, batch_size=8, image_size=6)
    batches = list(dataset.take(40 // 8).as_numpy_iterator())
    images, labels, indices = batches[0]
    assert images.shape == (8, 6, 6, 3) and images.dtype == np.float32
    assert labels.dtype == np.int64 and indices.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    all_indices = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(np.sort(all_indices), np.arange(40))  # each bank row once
    for _, labels, indices in batches:
        np.testing.assert_array_equal(labels, selection.true_labels[indices])


def test_train_dataset_drops_the_remainder_reshuffles_each_pass_and_repeats_on_each_iteration():
    source = array_source()
    selection = data.select_examples(source.labels("train"), 0.2)
    dataset = data.train_dataset(source, selection, batch_size=8, image_size=8)
    first, second = pass_indices(dataset, 6), pass_indices(dataset, 6, first_batch=6)
    for one_pass in first, second:
        assert len(one_pass) == 48 and len(set(one_pass)) == 48 and set(one_pass) <= set(range(50))
    assert not np.array_equal(first, second)
    # Iterating the dataset again (as Keras does under a multi-replica strategy) gives the same
    # batches, augmentations included.
    again = list(dataset.take(12).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b[2] for b in again]), np.concatenate([first, second]))
    np.testing.assert_array_equal(np.stack([b[0] for b in again]),
                                  np.stack([b[0] for b in dataset.take(12).as_numpy_iterator()]))


def test_train_dataset_without_augmentation_keeps_the_content():
    source = array_source()
    selection = data.select_examples(source.labels("train"), 0.2, kept_fraction=0.6)
    for images, _, indices in data.train_dataset(source, selection, 5, 8, augment=False).take(12):
        rows_seen = np.round(images.numpy()[:, 0, 0, 0] * 255)
        np.testing.assert_array_equal(rows_seen, selection.rows[indices.numpy()])


def test_train_dataset_labelled_only():
    source = array_source()
    selection = data.select_examples(source.labels("train"), 0.4, kept_fraction=0.5)
    dataset = data.train_dataset(source, selection, batch_size=4, image_size=8, labelled_only=True)
    labelled = np.flatnonzero(selection.is_labelled)
    batches_per_pass = len(labelled) // 4  # the remainder of each pass is dropped
    for first_batch in (0, batches_per_pass):
        indices = pass_indices(dataset, batches_per_pass, first_batch)
        assert set(indices) <= set(labelled) and len(set(indices)) == len(indices)
    # A batch larger than the labelled set: the labelled examples cycled (issue: very few labels).
    big = next(iter(data.train_dataset(source, selection, batch_size=64, image_size=8, labelled_only=True)))
    assert len(big[2]) == 64 and set(big[2].numpy()) == set(labelled)


def test_train_dataset_passes_crop_area_min_to_the_augmentation(monkeypatch):
    seen = []

    def recording_augment(image, seed, image_size, crop_area_min, **switches):
        seen.append(crop_area_min)
        return data.preprocess_for_eval(image, image_size)

    monkeypatch.setattr(pipelines, "augment_image", recording_augment)
    source = array_source(num_train=60)
    selection = data.select_examples(source.labels("train"), 0.2)
    for labelled_per_batch in (0, 3):
        next(iter(data.train_dataset(source, selection, batch_size=8, image_size=8, crop_area_min=0.55,
                                     labelled_per_batch=labelled_per_batch)))
    assert seen and set(seen) == {0.55}


@pytest.mark.parametrize("switches", [{}, {"random_flip": False}, {"color_jitter": False},
                                      {"random_grayscale": False}])
def test_train_dataset_passes_the_augmentation_switches(monkeypatch, switches):
    seen = []

    def recording_augment(image, seed, image_size, crop_area_min, flip, jitter, grayscale):
        seen.append((flip, jitter, grayscale))
        return data.preprocess_for_eval(image, image_size)

    monkeypatch.setattr(pipelines, "augment_image", recording_augment)
    source = array_source(num_train=60)
    selection = data.select_examples(source.labels("train"), 0.2)
    next(iter(data.train_dataset(source, selection, batch_size=8, image_size=8, **switches)))
    expected = tuple(switches.get(name, True) for name in ("random_flip", "color_jitter", "random_grayscale"))
    assert seen and set(seen) == {expected}


def test_train_dataset_with_labelled_examples_in_every_batch():
    source = array_source(num_train=60)
    selection = data.select_examples(source.labels("train"), 0.2)
    labelled = set(np.flatnonzero(selection.is_labelled))
    num_labelled, num_unlabelled = len(labelled), 60 - len(labelled)
    assert num_labelled >= 6
    dataset = data.train_dataset(source, selection, batch_size=8, image_size=8, augment=False,
                                 labelled_per_batch=3, seed=4)
    batches = list(dataset.take(num_unlabelled // 5).as_numpy_iterator())  # an unlabelled pass
    for images, labels, indices in batches:
        assert [i in labelled for i in indices] == [False] * 5 + [True] * 3
        assert len(set(indices)) == 8
        np.testing.assert_array_equal(np.round(images[:, 0, 0, 0] * 255), selection.rows[indices])
        np.testing.assert_array_equal(labels, source.labels("train")[selection.rows[indices]])
    unlabelled_seen = np.concatenate([indices[:5] for _, _, indices in batches])
    assert len(set(unlabelled_seen)) == len(unlabelled_seen) == num_unlabelled // 5 * 5
    labelled_seen = np.concatenate([indices[5:] for _, _, indices in batches])
    one_pass = num_labelled // 3 * 3  # a pass over the labelled examples, without repeats
    assert len(set(labelled_seen[:one_pass])) == one_pass
    assert set(labelled_seen) == labelled  # the passes cycle, reshuffled:
    assert not np.array_equal(labelled_seen[:one_pass], labelled_seen[one_pass:2 * one_pass])
    again = list(data.train_dataset(source, selection, batch_size=8, image_size=8, augment=False,
                                    labelled_per_batch=3, seed=4).take(len(batches)).as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([b[2] for b in again]), np.stack([b[2] for b in batches]))
    with pytest.raises(ValueError, match="labelled_per_batch=8"):
        data.train_dataset(source, selection, batch_size=8, image_size=8, labelled_per_batch=8)
    # Fewer labelled examples than labelled_per_batch: their passes are cycled to fill each batch.
    cycled = list(data.train_dataset(source, selection, batch_size=20, image_size=8, augment=False,
                                     labelled_per_batch=num_labelled + 1, seed=4)
                  .take(4).as_numpy_iterator())
    labelled_part = np.concatenate([indices[20 - num_labelled - 1:] for _, _, indices in cycled])
    assert set(labelled_part) == labelled
    counts = np.bincount(labelled_part, minlength=len(selection.rows))[sorted(labelled)]
    assert counts.max() - counts.min() <= 1  # passes one after another: every example equally often


@pytest.mark.parametrize("labelled_per_batch", [0, 3])
def test_train_dataset_weak_views_are_a_fourth_element_and_change_nothing_else(labelled_per_batch):
    """The consistency departure's batches: the same first three elements as without it, and the weak
    view of the same images (every pixel of these images is its row number, which the weak view's crop
    and flip keep and the training view's colour jitter changes)."""
    source = array_source(num_train=60)
    selection = data.select_examples(source.labels("train"), 0.2)
    plain = data.train_dataset(source, selection, 8, 8, seed=2, labelled_per_batch=labelled_per_batch)
    weak = data.train_dataset(source, selection, 8, 8, seed=2, labelled_per_batch=labelled_per_batch,
                              weak_views=True)
    jittered = 0
    for without, (images, labels, indices, weak_images) in zip(collect(plain.take(4)), collect(weak.take(4))):
        for a, b in zip(without, (images, labels, indices)):
            np.testing.assert_array_equal(a, b)
        assert weak_images.shape == images.shape and weak_images.dtype == np.float32
        np.testing.assert_allclose(weak_images * 255, np.broadcast_to(
            selection.rows[indices][:, None, None, None], weak_images.shape).astype(np.float32), atol=1e-3)
        jittered += not np.allclose(images * 255, weak_images * 255, atol=1e-3)
    assert jittered
    with pytest.raises(ValueError, match="weak views need the augmentation"):
        data.train_dataset(source, selection, 8, 8, augment=False, weak_views=True)


def test_train_dataset_is_reproducible_from_its_seed():
    source = array_source(shape=(12, 12, 3))
    selection = data.select_examples(source.labels("train"), 0.2)

    def first_batch(seed):
        return next(iter(data.train_dataset(source, selection, 8, 10, seed=seed)))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[2], c[2])


def test_train_dataset_augments_differently_each_pass():
    source = array_source(num_train=10, shape=(12, 12, 3))
    source._stored["train"] = np.random.default_rng(0).integers(0, 256, (10, 12, 12, 3), dtype=np.uint8)
    selection = data.select_examples(source.labels("train"), 0.5)
    dataset = data.train_dataset(source, selection, batch_size=10, image_size=10)
    epochs = []
    for images, _, indices in dataset.take(2):  # a pass is one batch
        epochs.append(images.numpy()[np.argsort(indices.numpy())])
    assert not np.allclose(epochs[0], epochs[1])


def test_train_dataset_on_a_folder_of_mixed_sizes(tmp_path):
    source = data.load_source(f"folder:{make_folder_dataset(str(tmp_path))}")
    selection = data.select_examples(source.labels("train"), 0.5, class_names=source.class_names)
    images, labels, indices = next(iter(data.train_dataset(source, selection, 4, 16)))
    assert images.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(labels, selection.true_labels[indices.numpy()])


def test_eval_dataset_keeps_order_and_remainder():
    source = array_source(num_test=10)
    batches = list(data.eval_dataset(source, "test", batch_size=4, image_size=8).as_numpy_iterator())
    assert [len(b[2]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), np.arange(10))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), source.labels("test"))
    np.testing.assert_allclose(batches[2][0][:, 0, 0, 0], np.array([8, 9]) / 255.0)


def test_eval_dataset_resizes_mixed_sizes(tmp_path):
    source = data.load_source(f"folder:{make_folder_dataset(str(tmp_path))}")
    images, labels, _ = next(iter(data.eval_dataset(source, "train", 16, 12)))
    assert images.shape == (7, 12, 12, 3)
    np.testing.assert_array_equal(labels, source.labels("train"))


def test_preprocess_for_eval_identity_and_central_crop():
    batch = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(data.preprocess_for_eval(batch, 8), batch / 255.0, atol=1e-6)

    wide = np.zeros((1, 4, 8, 1), np.uint8)
    wide[:, :, 2:6] = 255  # the central 4x4 square is white, the sides black
    out = data.preprocess_for_eval(wide, 4)
    assert out.shape == (1, 4, 4, 1)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)

    exported = tf.function(lambda images: data.preprocess_for_eval(images, 4),
                           input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    assert exported(tf.zeros([3, 9, 5, 3], tf.uint8)).shape == (3, 4, 4, 3)
    assert data.preprocess_for_eval(tf.zeros([9, 5, 3], tf.uint8), 4).shape == (4, 4, 3)


@pytest.mark.parametrize("num_per_class", [1, 3])
def test_labelled_only_with_fewer_labelled_examples_than_a_batch(num_per_class):
    """Supervised training on fewer labelled images than one batch: full batches of the labelled
    examples alone, cycled pass after pass (each reshuffled), replayed by every iteration."""
    source = array_source(shape=(8, 8, 1))
    labels = source.labels("train")
    fraction = num_per_class / np.bincount(labels).min()
    selection = data.select_examples(labels, fraction)
    labelled = set(np.flatnonzero(selection.is_labelled))
    assert len(labelled) < 16

    def batches():
        return list(data.train_dataset(source, selection, batch_size=16, image_size=8, augment=False,
                                       labelled_only=True, seed=2).take(3).as_numpy_iterator())

    first = batches()
    seen = np.concatenate([indices for _, _, indices in first])
    assert all(len(indices) == 16 for _, _, indices in first)
    assert set(seen) == labelled
    np.testing.assert_array_equal(labels[selection.rows[seen]], np.concatenate([b[1] for b in first]))
    passes = [seen[i:i + len(labelled)] for i in range(0, len(seen) - len(labelled) + 1, len(labelled))]
    assert all(set(p) == labelled for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled from pass to pass
    np.testing.assert_array_equal(seen, np.concatenate([b[2] for b in batches()]))
