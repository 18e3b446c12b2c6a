"""A small MNIST-format (IDX) dataset built from sklearn's digits, written where torchvision's
MNIST/FashionMNIST look for their raw files, so tests exercise the real loading path offline."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
MNIST_SIDE = 28
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def digits_as_mnist(count: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """``count`` sklearn digits as 28 x 28 uint8 images (0..255) and their labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = []
    for small in bunch.images[:count]:
        picture = Image.fromarray((small / 16.0 * 255).astype(np.uint8)).resize((MNIST_SIDE, MNIST_SIDE))
        images.append(np.asarray(picture, dtype=np.uint8))
    return np.stack(images), bunch.target[:count].astype(np.uint8)


def write_idx_dataset(root: Path, folder: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``images``/``labels`` as both splits under ``root/folder/raw``; returns that folder."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    count, height, width = images.shape
    for image_file, label_file in FILES.values():
        (raw / image_file).write_bytes(struct.pack(">IIII", IMAGE_MAGIC, count, height, width) + images.tobytes())
        (raw / label_file).write_bytes(struct.pack(">II", LABEL_MAGIC, count) + labels.tobytes())
    return raw
