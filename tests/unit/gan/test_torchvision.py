"""torchvision datasets by name (mnist, fashion-mnist, cifar10) through torchvision's own
loaders: found in the data cache, or a clear error saying where to put them. The cached files
are MNIST-format files the test writes from sklearn's digits (no network here).
Each test reads Given / When / Then."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.idx import digits_as_mnist, write_idx_dataset
from workers.gan.data import DatasetUnavailableError, load_torchvision


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_a_cached_dataset_loads_resized_with_its_labels(tmp_path: Path, name: str, folder: str) -> None:
    # Given torchvision's raw files for the dataset in the cache
    images, labels = digits_as_mnist(120)
    write_idx_dataset(tmp_path, folder, images, labels)
    # When it is loaded at 32 px, gray and RGB
    gray = load_torchvision(name, root=tmp_path, image_size=32, channels=1, allow_download=False)
    rgb = load_torchvision(name, root=tmp_path, image_size=32, channels=3, allow_download=False)
    # Then it is the training split, resized, in [-1, 1], with the file's labels and torchvision's class names
    assert gray.images.shape == (120, 1, 32, 32) and rgb.images.shape == (120, 3, 32, 32)
    assert gray.images.min().item() == -1.0 and gray.images.max().item() <= 1.0
    assert torch.equal(gray.labels, torch.from_numpy(labels.astype("int64")))
    assert len(gray.classes) == 10
    assert torch.equal(rgb.images[:, 1], gray.images[:, 0])
    # And a pixel the file has bright is bright after resizing (the images are the file's, not noise)
    brightest = int(images.reshape(120, -1).sum(axis=1).argmax())
    assert gray.images[brightest].mean() > gray.images.mean()


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_a_missing_dataset_with_downloads_off_names_the_cache_and_the_remedy(tmp_path: Path, name: str) -> None:
    # Given an empty cache and downloads disabled
    # When the dataset is asked for, Then the error says where it looked, why it stopped, and what to do
    with pytest.raises(DatasetUnavailableError) as caught:
        load_torchvision(name, root=tmp_path, image_size=32, channels=3, allow_download=False)
    message = str(caught.value)
    assert f"dataset {name!r} is not in the worker's data cache at {tmp_path}" in message
    assert "downloading is disabled (ATELIER_ALLOW_DATA_DOWNLOAD=false)" in message
    assert "download=True) on a machine with network access" in message


def test_an_unknown_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown torchvision dataset 'svhn'"):
        load_torchvision("svhn", root=tmp_path, image_size=32, channels=1, allow_download=False)
