"""Bad input before training: folders holding corrupt, odd and stray files (through llp-train and through
load_source + tf.data), and settings that cannot work, each refused with a message that names the
problem before any training time is spent; or, with --on_bad_image=skip, a counted, listed skip."""
import io
import json
import os
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from llp_tf import data, train
from llp_tf.config import TrainConfig
from llp_tf.workdir import Workdir
from tests.conftest import TINY, run_tool

SIZE = 12
CLASSES = ("bird", "cat", "dog", "fish")
PER_CLASS, PER_CLASS_TEST = 16, 4
CMYK_COLOUR = (200, 40, 90)  # decoded with CMYK inverted, it would come out (55, 215, 165)


# ---------------------------------------------------------------------------------------------
# Folders written with PIL


def write_image(path, pixels, **save_options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    image.save(path, **save_options)


def noise(rng):
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def write_plain_folder(root, per_class=PER_CLASS, per_class_test=PER_CLASS_TEST):
    """RGB PNGs of noise: per_class train and per_class_test test images for each class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", per_class_test)):
        for name in CLASSES:
            for i in range(count):
                write_image(f"{root}/{split}/{name}/{i:02d}.png", noise(rng))
    return root


def truncated_jpeg(rng):
    """A JPEG whose headers are whole (PIL reads its size) but whose image data stops halfway."""
    encoded = io.BytesIO()
    Image.fromarray(noise(rng)).save(encoded, "JPEG", quality=95)
    raw = encoded.getvalue()
    start_of_scan = raw.index(b"\xff\xda")
    return raw[:(start_of_scan + len(raw)) // 2]


def write_odd_but_usable_files(root):
    """Files that must train as 3-channel images: RGBA, grayscale and CMYK images, GIF, BMP and WebP,
    a nested folder, non-ASCII names (UTF-8 and Latin-1 bytes). Returns {path: expected pixels}."""
    rng = np.random.default_rng(1)
    rgb, bmp, webp = noise(rng), noise(rng), noise(rng)
    flat = np.full((SIZE, SIZE, 3), (30, 160, 250), np.uint8)  # one colour: GIF's palette keeps it
    write_image(f"{root}/train/dog/flat.gif", flat)
    write_image(f"{root}/train/dog/noise.bmp", bmp)
    write_image(f"{root}/train/dog/noise.webp", webp, lossless=True)
    write_image(f"{root}/train/fish/alpha.png", np.dstack([rgb, np.full((SIZE, SIZE), 128, np.uint8)]))
    write_image(f"{root}/train/fish/gray.jpg", np.full((SIZE, SIZE), 77, np.uint8), quality=95)
    cmyk = Image.fromarray(np.full((SIZE, SIZE, 3), CMYK_COLOUR, np.uint8)).convert("CMYK")
    write_image(f"{root}/train/bird/cmyk.jpg", cmyk, quality=95)
    nested = noise(rng)
    write_image(f"{root}/train/bird/nested/deeper/inner.png", nested)
    utf8 = noise(rng)
    write_image(f"{root}/train/cat/chat_été.png", utf8)
    latin1 = noise(rng)
    Image.fromarray(latin1).save(os.path.join(os.fsencode(root), b"train/cat/caf\xe9.png"), "PNG")
    return {f"{root}/train/fish/alpha.png": rgb,
            f"{root}/train/dog/flat.gif": flat,
            f"{root}/train/dog/noise.bmp": bmp,
            f"{root}/train/dog/noise.webp": webp,
            f"{root}/train/fish/gray.jpg": np.full((SIZE, SIZE, 3), 77, np.uint8),
            f"{root}/train/bird/cmyk.jpg": np.full((SIZE, SIZE, 3), CMYK_COLOUR, np.uint8),
            f"{root}/train/bird/nested/deeper/inner.png": nested,
            f"{root}/train/cat/chat_été.png": utf8,
            os.fsdecode(os.path.join(os.fsencode(root), b"train/cat/caf\xe9.png")): latin1}


def write_bad_files(root):
    """One file of each kind that cannot be used, and a hidden one that is ignored (a macOS
    AppleDouble file). Returns {path: a word of the reason given}."""
    rng = np.random.default_rng(2)
    with open(f"{root}/train/cat/._00.png", "wb") as file:
        file.write(b"\x00\x05\x16\x07 resource fork")
    bad = {f"{root}/train/README.txt": "not inside a class folder",
           f"{root}/train/cat/truncated.jpg": "JPEG",
           f"{root}/train/dog/notes.txt": "not a .jpg/",
           f"{root}/train/dog/text.png": "Unknown image file format",
           f"{root}/test/fish/cut.png": "PNG"}
    contents = {"truncated.jpg": truncated_jpeg(rng), "text.png": b"not an image at all"}
    cut_png = io.BytesIO()
    Image.fromarray(noise(rng)).save(cut_png, "PNG")
    contents["cut.png"] = cut_png.getvalue()[:200]
    for path in bad:
        with open(path, "wb") as file:
            file.write(contents.get(os.path.basename(path), b"some notes"))
    return bad


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    """(root, odd-but-usable files, bad files) of a folder dataset holding both."""
    root = write_plain_folder(str(tmp_path_factory.mktemp("messy")))
    return root, write_odd_but_usable_files(root), write_bad_files(root)


def source_rows(source, split="train"):
    """{path: row} of a folder source."""
    stored_paths = source._stored[split]  # pylint: disable=protected-access
    return {os.fsdecode(path): row for row, path in enumerate(stored_paths)}


# ---------------------------------------------------------------------------------------------
# Folder data through llp-train


@pytest.mark.slow
def test_llp_train_refuses_bad_files_listing_all_of_them(messy_folder, tmp_path):
    root, _, bad = messy_folder
    workdir = tmp_path / "run"
    result = run_tool("llp_tf.tools.train", f"--dataset=folder:{root}", f"--workdir={workdir}", *TINY,
                      "--epochs=1", "--instance_epochs=0", check=False)
    assert result.returncode != 0
    assert f"llp-train: folder source {root}: 5 files are not usable images" in result.stderr
    assert "--on_bad_image=skip" in result.stderr
    reasons = dict(re.findall(r"^  (.+?): (.+)$", result.stderr, re.MULTILINE))
    assert set(reasons) == set(bad)
    for path, reason in bad.items():
        assert reason in reasons[path], (path, reasons[path])
    assert not (workdir / "checkpoints").exists() and not (workdir / "dataset.json").exists()


@pytest.mark.slow
def test_llp_train_skips_bad_files_and_lists_them(messy_folder, tmp_path):
    root, usable, bad = messy_folder
    workdir = tmp_path / "run"
    result = run_tool("llp_tf.tools.train", f"--dataset=folder:{root}", f"--workdir={workdir}", *TINY,
                      "--epochs=1", "--instance_epochs=0", "--on_bad_image=skip")
    assert "skipping 5 files that are not usable images" in result.stderr
    listed = dict(line.split("\t") for line in
                  pathlib.Path(Workdir(workdir).skipped_files).read_text(encoding="utf-8").splitlines())
    assert set(listed) == set(bad)
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["num_examples"] == len(CLASSES) * PER_CLASS + len(usable)
    assert metrics["epochs"] == 1


# ---------------------------------------------------------------------------------------------
# Folder data through load_source and the tf.data pipelines


def test_odd_images_come_out_as_three_channel_images(messy_folder):
    root, usable, bad = messy_folder
    source = data.load_source(f"folder:{root}", on_bad_image="skip")
    assert source.channels == 3 and source.image_shape == (SIZE, SIZE, 3)
    rows = source_rows(source)
    assert set(usable) <= set(rows) and not set(bad) & set(rows)
    assert source.labels("train")[rows[f"{root}/train/bird/nested/deeper/inner.png"]] == 0  # bird
    wanted = np.array([rows[path] for path in usable])
    images = {int(index): image for image, _, index in source.examples("train", wanted).as_numpy_iterator()}
    for position, (path, expected) in enumerate(usable.items()):
        tolerance = 3 if path.endswith(".jpg") else 0  # JPEG is lossy, a little even on flat colour
        np.testing.assert_allclose(images[position], expected, atol=tolerance, err_msg=path)
    # Every kept image through the augmenting training pipeline: nothing fails mid-epoch.
    selection = data.select_examples(source.labels("train"), 1.0)
    batch = next(iter(data.train_dataset(source, selection, len(selection.rows), SIZE)))
    assert batch[0].shape == (len(selection.rows), SIZE, SIZE, 3)


def test_truncated_jpeg_has_a_readable_header_but_is_refused(tmp_path):
    root = write_plain_folder(str(tmp_path), per_class=2, per_class_test=1)
    path = f"{root}/train/dog/truncated.jpg"
    with open(path, "wb") as file:
        file.write(truncated_jpeg(np.random.default_rng(0)))
    with Image.open(path) as image:
        assert image.size == (SIZE, SIZE)  # a header scan alone would let it through
    with pytest.raises(ValueError, match=re.escape(path) + ": .*Invalid JPEG data"):
        data.load_source(f"folder:{root}")
    source = data.load_source(f"folder:{root}", on_bad_image="skip")
    assert [skipped for skipped, _ in source.skipped_files] == [path]
    np.testing.assert_array_equal(source.labels("train"), np.repeat(np.arange(4), [2, 2, 2, 2]))


def test_an_undecodable_latin1_file_name_is_shown(tmp_path):
    root = write_plain_folder(str(tmp_path), per_class=2, per_class_test=1)
    with open(os.path.join(os.fsencode(root), b"train/cat/d\xe9j\xe0.jpg"), "wb") as file:
        file.write(b"text")
    with pytest.raises(ValueError, match=re.escape(r"train/cat/d\xe9j\xe0.jpg: Unknown image")):
        data.load_source(f"folder:{root}")


def test_class_folder_names_must_be_text(tmp_path):
    root = write_plain_folder(str(tmp_path / "utf8"), per_class=2, per_class_test=1)
    for split in ("train", "test"):
        write_image(f"{root}/{split}/café/0.png", noise(np.random.default_rng(0)))
    assert data.load_source(f"folder:{root}").class_names == sorted([*CLASSES, "café"])

    root = write_plain_folder(str(tmp_path / "latin1"), per_class=2, per_class_test=1)
    os.makedirs(os.path.join(os.fsencode(root), b"train/caf\xe9"))
    with pytest.raises(ValueError, match=re.escape(r"train/caf\xe9: a class folder's name must be")):
        data.load_source(f"folder:{root}")


def test_the_error_lists_twenty_bad_files_and_counts_the_rest(tmp_path):
    root = write_plain_folder(str(tmp_path), per_class=2, per_class_test=1)
    for i in range(23):
        open(f"{root}/train/fish/empty{i:02d}.png", "wb").close()
    with pytest.raises(ValueError, match="23 files are not usable") as error:
        data.load_source(f"folder:{root}")
    lines = str(error.value).splitlines()
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 3 more"
    assert lines[1] == f"  {root}/train/fish/empty00.png: Input is empty."


def test_a_class_without_images_is_named(tmp_path):
    root = write_plain_folder(str(tmp_path / "empty_train"), per_class=2, per_class_test=1)
    os.makedirs(f"{root}/train/eel")
    os.makedirs(f"{root}/test/eel")
    with pytest.raises(ValueError, match=re.escape(f"{root}/train/eel: class 'eel' has no images")):
        data.load_source(f"folder:{root}")

    root = write_plain_folder(str(tmp_path / "empty_test"), per_class=2, per_class_test=1)
    os.remove(f"{root}/test/cat/00.png")
    with pytest.raises(ValueError, match=re.escape(f"{root}/test/cat: class 'cat' has no images")):
        data.load_source(f"folder:{root}")

    root = write_plain_folder(str(tmp_path / "all_bad"), per_class=2, per_class_test=1)
    for i in range(2):
        with open(f"{root}/train/dog/{i:02d}.png", "wb") as file:
            file.write(b"not a png")
    with pytest.raises(ValueError, match="class 'dog' has no images \\(all 2 of its files were skipped\\)"):
        data.load_source(f"folder:{root}", on_bad_image="skip")


def test_a_class_missing_in_val_is_named(tmp_path):
    root = write_plain_folder(str(tmp_path), per_class=2, per_class_test=1)
    os.rename(f"{root}/test", f"{root}/val")
    os.remove(f"{root}/val/fish/00.png")
    os.rmdir(f"{root}/val/fish")
    with pytest.raises(ValueError, match=re.escape("no folder for classes present in train: ['fish']")):
        data.load_source(f"folder:{root}")


# ---------------------------------------------------------------------------------------------
# Settings that cannot work: refused by train() before any training time is spent


def tiny_config(tiny_npz, workdir, **overrides):
    settings = dict(dataset=f"npz:{tiny_npz}", workdir=str(workdir), backbone="small_cnn", width=1,
                    batch_size=32, labelled_fraction=0.1, k=5, t=10, epochs=1, instance_epochs=0,
                    verbose=0)
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (dict(labelled_fraction=0.001), "labelled_fraction=0.001 leaves class '0' (label 0) with no labelled"),
    (dict(k=49), "K=49 neighbours need 1 <= K <= the 48 labelled examples"),
    (dict(t=480), "T=480 density neighbours need 1 <= T < N=480"),
    (dict(tau=0.0), "--tau must be positive, got 0.0"),
    (dict(dataset="csv:/data"), "unknown dataset 'csv:/data'"),
    (dict(dataset="npz:/nonexistent/tiny.npz"), "/nonexistent/tiny.npz does not exist"),
    (dict(on_bad_image="ignore"), "--on_bad_image must be one of ('error', 'skip'), got 'ignore'"),
    (dict(jit_compile=True, cpu_replicas=2), "--jit_compile cannot run under --cpu_replicas=2"),
], ids=["no_labelled_example", "k_above_labelled", "t_not_below_n", "tau_zero", "unknown_scheme",
        "missing_path", "unknown_bad_image_policy", "jit_on_logical_cpus"])
def test_bad_settings_are_refused_before_training(tiny_npz, tmp_path, overrides, message):
    workdir = tmp_path / "run"
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        train.train(tiny_config(tiny_npz, workdir, **overrides))
    assert not (workdir / "checkpoints").exists() and not (workdir / "dataset.json").exists()


@pytest.mark.slow
def test_llp_train_refuses_a_batch_not_divisible_by_the_replicas(tiny_npz, tmp_path):
    workdir = tmp_path / "run"
    result = run_tool("llp_tf.tools.train", f"--dataset=npz:{tiny_npz}", f"--workdir={workdir}", *TINY,
                      "--batch_size=33", "--strategy=mirrored", "--cpu_replicas=2", check=False)
    assert result.returncode != 0
    assert "llp-train: --batch_size=33 is not divisible by the 2 replicas" in result.stderr
    assert not (workdir / "checkpoints").exists()
