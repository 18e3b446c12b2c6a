"""Training data: images (N, C, H, W) in [-1, 1] from built-ins, torchvision datasets and uploaded files;
2-D Gaussian mixtures (N, 2)."""

from __future__ import annotations

import functools
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from PIL import Image, ImageDraw, ImageOps

from workers.downloads import socket_timeout

DIGITS = "digits"
DIGITS_MAX_VALUE = 16.0  # sklearn's digits are 8 x 8 counts in 0..16
SHAPES = "shapes"
SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
SHAPES_COUNT = 3000
SHAPES_SEED = 0
SHAPES_SUPERSAMPLE = 2
SHAPES_RADIUS = (0.15, 0.35)  # of the side
SHAPES_BACKGROUND = (20, 20, 28)
PIXEL_MAX_VALUE = 255.0
GRAY_CHANNELS = 1
RGB_CHANNELS = 3
BUILTIN_CACHE_SIZE = 8
# The 2-D mixtures of the VEEGAN (Srivastava et al. 2017) / PacGAN (Lin et al. 2018) protocol.
RING8 = "ring8"
RING_MODES = 8
RING_RADIUS = 2.0
RING_STD = 0.02
GRID25 = "grid25"
GRID_SIDE = 5
GRID_SPACING = 2.0
GRID_STD = 0.05
POINTS_COUNT = 100_000  # a fixed training set; the loop's data order walks it like any dataset
POINTS_SEED = 0  # the data is the same for every job; the job's seed drives the training
POINT_DIM = 2
_MODE_FOR_CHANNELS = {GRAY_CHANNELS: "L", RGB_CHANNELS: "RGB"}
# What Pillow raises for bytes that are not a readable image (or an oversized one).
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)


def _check_channels(channels: int) -> str:
    if channels not in _MODE_FOR_CHANNELS:
        raise ValueError(f"channels must be {GRAY_CHANNELS} or {RGB_CHANNELS}, got {channels}")
    return _MODE_FOR_CHANNELS[channels]


def _to_unit_range(x: torch.Tensor, max_value: float) -> torch.Tensor:
    """Map values in [0, max_value] to [-1, 1]."""
    return (x / max_value * 2.0 - 1.0).clamp_(-1.0, 1.0)


@dataclass(frozen=True)
class Labelled:
    """Images (N, C, H, W) in [-1, 1], their int64 class indices (N,), and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]


def load_builtin(name: str, *, image_size: int, channels: int) -> torch.Tensor:
    """A built-in dataset as float32 (N, channels, image_size, image_size) in [-1, 1]; cached, do not modify."""
    return load_builtin_labelled(name, image_size=image_size, channels=channels).images


@functools.lru_cache(maxsize=BUILTIN_CACHE_SIZE)
def load_builtin_labelled(name: str, *, image_size: int, channels: int) -> Labelled:
    """A built-in image dataset with its labels; cached, do not modify."""
    _check_channels(channels)
    if name == DIGITS:
        from sklearn.datasets import load_digits  # deferred: sklearn is slow to import

        bunch = load_digits()
        images = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
        images = _to_unit_range(images, DIGITS_MAX_VALUE).repeat(1, channels, 1, 1).contiguous()
        labels = torch.from_numpy(bunch.target.astype(np.int64))
        return Labelled(images, labels, tuple(str(d) for d in range(10)))
    if name == SHAPES:
        return _shapes(image_size, channels)
    raise ValueError(f"unknown built-in dataset {name!r}: use one of {[DIGITS, SHAPES]}")


def _shapes(image_size: int, channels: int) -> Labelled:
    """SHAPES_COUNT seeded pictures of one filled shape each (circle, square, triangle), any size.

    Each has a random size, position, rotation (squares, triangles) and bright colour on a dark
    background; drawn at SHAPES_SUPERSAMPLE x and downsampled, so edges are anti-aliased.
    """
    rng = np.random.default_rng(SHAPES_SEED)
    canvas = image_size * SHAPES_SUPERSAMPLE
    pictures, labels = [], []
    for index in range(SHAPES_COUNT):
        label = index % len(SHAPE_CLASSES)
        radius = rng.uniform(*SHAPES_RADIUS) * canvas
        cx, cy = rng.uniform(radius, canvas - radius, size=2)
        angle = rng.uniform(0, 2 * math.pi)
        hue = rng.uniform(0, 1)
        colour = tuple(round(255 * c) for c in _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.8, 1.0)))
        image = Image.new("RGB", (canvas, canvas), SHAPES_BACKGROUND)
        draw = ImageDraw.Draw(image)
        if SHAPE_CLASSES[label] == "circle":
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        else:
            corners = 4 if SHAPE_CLASSES[label] == "square" else 3
            points = [
                (cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                 cy + radius * math.sin(angle + 2 * math.pi * k / corners))
                for k in range(corners)
            ]  # fmt: skip
            draw.polygon(points, fill=colour)
        image = image.resize((image_size, image_size), Image.Resampling.BOX)
        if channels == GRAY_CHANNELS:
            image = image.convert("L")
        pixels = torch.from_numpy(np.array(image, dtype=np.float32)).reshape(image_size, image_size, -1)
        pictures.append(_to_unit_range(pixels.permute(2, 0, 1), PIXEL_MAX_VALUE))
        labels.append(label)
    return Labelled(torch.stack(pictures).contiguous(), torch.tensor(labels, dtype=torch.int64), SHAPE_CLASSES)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


def _decode(data: bytes, *, image_size: int, mode: str) -> torch.Tensor | None:
    """One image as (C, image_size, image_size) in [-1, 1], or None if it does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert(mode)
    except _DECODE_ERRORS:
        return None
    # Resize the shorter side to image_size, then crop the centre square.
    width, height = image.size
    scale = image_size / min(width, height)
    new_size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=None)
    left = (new_size[0] - image_size) // 2
    top = (new_size[1] - image_size) // 2
    image = image.crop((left, top, left + image_size, top + image_size))
    pixels = torch.from_numpy(np.array(image, dtype=np.float32)).reshape(image_size, image_size, -1)
    return _to_unit_range(pixels.permute(2, 0, 1), PIXEL_MAX_VALUE)


def load_image_files(
    files: list[tuple[str, bytes]], *, image_size: int, channels: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode (path, bytes) pairs into (images in [-1, 1], int64 labels, class names); skips undecodable files."""
    mode = _check_channels(channels)
    decoded: list[tuple[PurePosixPath, torch.Tensor]] = []
    for path, data in files:
        image = _decode(data, image_size=image_size, mode=mode)
        if image is not None:
            decoded.append((PurePosixPath(path), image))
    if not decoded:
        raise ValueError(f"none of the {len(files)} uploaded files could be decoded as an image")
    images = torch.stack([image for _, image in decoded])
    # Class folders ("cats/a.png" -> "cats") only when every image sits in a sub-folder.
    if all(len(path.parts) > 1 for path, _ in decoded):
        classes = sorted({path.parts[0] for path, _ in decoded})
        index = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor([index[path.parts[0]] for path, _ in decoded], dtype=torch.int64)
    else:
        classes = []
        labels = torch.zeros(len(decoded), dtype=torch.int64)
    return images, labels, classes


@dataclass(frozen=True)
class Mixture:
    """An equal-weight mixture of isotropic 2-D Gaussians."""

    centers: torch.Tensor  # (K, 2)
    std: float


def mixture(name: str) -> Mixture:
    """The mixture behind a point dataset: ring8 (8 modes on a circle of radius 2) or grid25 (5 x 5, spacing 2)."""
    if name == RING8:
        angles = torch.arange(RING_MODES, dtype=torch.float64) * (2 * math.pi / RING_MODES)
        centers = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * RING_RADIUS
        return Mixture(centers=centers.float(), std=RING_STD)
    if name == GRID25:
        half = (GRID_SIDE - 1) / 2
        axis = (torch.arange(GRID_SIDE, dtype=torch.float32) - half) * GRID_SPACING
        return Mixture(centers=torch.cartesian_prod(axis, axis), std=GRID_STD)
    raise ValueError(f"unknown point dataset {name!r}: use {RING8!r} or {GRID25!r}")


@functools.lru_cache(maxsize=BUILTIN_CACHE_SIZE)
def load_points(name: str) -> torch.Tensor:
    """A point dataset as float32 (100000, 2): equal draws from each mode of its mixture; cached, do not modify."""
    mix = mixture(name)
    generator = torch.Generator().manual_seed(POINTS_SEED)
    modes = torch.randint(mix.centers.shape[0], (POINTS_COUNT,), generator=generator)
    noise = torch.randn(POINTS_COUNT, POINT_DIM, generator=generator) * mix.std
    return (mix.centers[modes] + noise).contiguous()


# torchvision datasets by name: (the torchvision class name, its default channel count).
TORCHVISION_DATASETS: dict[str, tuple[str, int]] = {
    "mnist": ("MNIST", GRAY_CHANNELS),
    "fashion-mnist": ("FashionMNIST", GRAY_CHANNELS),
    "cifar10": ("CIFAR10", RGB_CHANNELS),
}


class DatasetUnavailableError(RuntimeError):
    """A torchvision dataset is neither in the worker's data cache nor downloadable."""


def load_torchvision(name: str, *, root: Path, image_size: int, channels: int, allow_download: bool) -> Labelled:
    """A torchvision dataset's training split from ``root`` (downloaded there when allowed).

    Images are resized (bilinear) to ``image_size`` and converted to ``channels``; labels and
    class names come from the dataset.
    """
    if name not in TORCHVISION_DATASETS:
        raise ValueError(f"unknown torchvision dataset {name!r}: use one of {list(TORCHVISION_DATASETS)}")
    _check_channels(channels)
    import torchvision.datasets  # deferred: only these jobs need it

    class_name, _default = TORCHVISION_DATASETS[name]
    dataset_class = getattr(torchvision.datasets, class_name)
    try:
        with socket_timeout():
            dataset = dataset_class(str(root), train=True, download=allow_download)
    except (RuntimeError, OSError, ValueError, EOFError) as exc:  # "Dataset not found", URLError, corrupt files
        how = (
            f"downloading it failed ({type(exc).__name__}: {exc})"
            if allow_download
            else "downloading is disabled (ATELIER_ALLOW_DATA_DOWNLOAD=false)"
        )
        raise DatasetUnavailableError(
            f"dataset {name!r} is not in the worker's data cache at {root} and {how}. Put torchvision's "
            f"{class_name} files there (torchvision.datasets.{class_name}({str(root)!r}, download=True) on a machine "
            "with network access, then copy the folder), or upload the images instead"
        ) from exc
    data = torch.as_tensor(np.asarray(dataset.data))
    images = (data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)).float()  # N x C x H x W, 0..255
    if images.shape[1] != channels:
        images = images.mean(dim=1, keepdim=True) if channels == GRAY_CHANNELS else images.repeat(1, RGB_CHANNELS, 1, 1)
    if images.shape[-1] != image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return Labelled(_to_unit_range(images, PIXEL_MAX_VALUE).contiguous(), labels, tuple(dataset.classes))


PACKED_VERSION = 1


def pack(labelled: Labelled) -> bytes:
    """A decoded image set as one file: uint8 pixels (lossless: decoding yields k/255 levels), labels, classes."""
    pixels = ((labelled.images + 1.0) / 2.0 * PIXEL_MAX_VALUE).round().clamp(0, PIXEL_MAX_VALUE).to(torch.uint8)
    buffer = io.BytesIO()
    torch.save(
        {"version": PACKED_VERSION, "pixels": pixels, "labels": labelled.labels, "classes": list(labelled.classes)},
        buffer,
    )
    return buffer.getvalue()


def unpack_packed(data: bytes) -> Labelled:
    """The image set of ``pack``'s bytes (weights_only load); ValueError if they are not one."""
    what = "not a packed dataset"
    payload = load_versioned(data, version=PACKED_VERSION, what=what)
    try:
        pixels, labels, classes = payload["pixels"], payload["labels"], payload["classes"]
    except KeyError as exc:
        raise ValueError(f"{what}: no {exc}") from exc
    return Labelled(_to_unit_range(pixels.float(), PIXEL_MAX_VALUE), labels, tuple(str(c) for c in classes))


# What torch.load(weights_only=True) raises for bytes that are not a torch.save file of ours.
PAYLOAD_ERRORS: tuple[type[Exception], ...] = (RuntimeError, KeyError, AttributeError, EOFError, pickle.UnpicklingError)


def load_versioned(data: bytes, *, version: int, what: str) -> dict[str, Any]:
    """A dict that Atelier torch.save'd with ``"version": version``, loaded with weights_only=True;
    ValueError starting with ``what`` for anything else (unreadable, not a dict, another version)."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except PAYLOAD_ERRORS as exc:
        raise ValueError(f"{what}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("version") != version:
        found = payload.get("version") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{what}: version {found!r} is not {version}")
    return payload
