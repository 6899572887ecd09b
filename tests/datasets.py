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
