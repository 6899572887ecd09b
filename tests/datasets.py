"""Tiny learnable image datasets written to tmp_path for end-to-end tests (never real data)."""
import numpy as np


def class_pattern_images(num, size, num_classes, rng, channels=1):
    """uint8 images whose class decides a bright square's position, plus noise: learnable fast."""
    labels = rng.integers(0, num_classes, num)
    images = rng.integers(0, 60, (num, size, size, channels)).astype(np.uint8)
    cell = size // 2
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 4, 2)
        images[i, row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] += 150
    return images, labels.astype(np.int64)


def write_npz(path, num_train=480, num_test=120, size=12, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x_train, y_train = class_pattern_images(num_train, size, num_classes, rng)
    x_test, y_test = class_pattern_images(num_test, size, num_classes, rng)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def write_image_folder(root, per_class=16, per_class_test=4, size=12, num_classes=4, seed=0):
    """A folder dataset root/{train,test}/c<k>/<i>.png of class_pattern_images (3 channels)."""
    import os

    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", per_class_test)):
        for label in range(num_classes):
            images, _ = class_pattern_images(count, size, num_classes, rng, channels=3)
            images = np.array([_pattern_of(image, label, size) for image in images])
            os.makedirs(os.path.join(root, split, f"c{label}"), exist_ok=True)
            for i, image in enumerate(images):
                Image.fromarray(image).save(os.path.join(root, split, f"c{label}", f"{i:03d}.png"))
    return str(root)


def _pattern_of(image, label, size):
    """image with its bright square moved to label's place."""
    image = np.minimum(image, 59)
    cell = size // 2
    row, col = divmod(label % 4, 2)
    image[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] += 150
    return image
