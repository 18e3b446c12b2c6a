"""Training data: the built-in digits and decoded image uploads, as tensors in [-1, 1]."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from workers.gan.data import (
    SHAPE_CLASSES,
    SHAPES_COUNT,
    Labelled,
    load_builtin,
    load_builtin_labelled,
    load_image_files,
    pack,
    unpack_packed,
)

DIGITS_COUNT = 1797  # sklearn's load_digits
SIZE = 16
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
RED = (255, 0, 0)


def _png(size: tuple[int, int], color: tuple[int, int, int], *, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_digits_are_resized_and_scaled_to_unit_range() -> None:
    images = load_builtin("digits", image_size=SIZE, channels=1)
    assert images.shape == (DIGITS_COUNT, 1, SIZE, SIZE)
    assert images.dtype == torch.float32
    # Background (0) maps to -1 and full ink (16) to +1.
    assert images.min().item() == -1.0
    assert images.max().item() == 1.0


def test_digits_in_rgb_repeat_the_gray_channel_and_are_cached() -> None:
    gray = load_builtin("digits", image_size=32, channels=1)
    rgb = load_builtin("digits", image_size=32, channels=3)
    assert rgb.shape == (DIGITS_COUNT, 3, 32, 32)
    assert torch.equal(rgb[:, 0], gray[:, 0]) and torch.equal(rgb[:, 2], gray[:, 0])
    assert load_builtin("digits", image_size=32, channels=3) is rgb


def test_unknown_builtin_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown built-in dataset 'mnist'"):
        load_builtin("mnist", image_size=SIZE, channels=1)


def test_class_folders_become_labels() -> None:
    # Given images in two class folders, in several formats and sizes
    files = [
        ("dogs/c.png", _png((20, 30), RED)),
        ("cats/a.png", _png((40, 40), WHITE)),
        ("cats/b.jpg", _jpeg((64, 48), BLACK)),
    ]
    # When they are decoded
    images, labels, classes = load_image_files(files, image_size=SIZE, channels=3)
    # Then each is a SIZE x SIZE RGB tensor in [-1, 1], labelled by its sorted folder
    assert images.shape == (3, 3, SIZE, SIZE)
    assert images.dtype == torch.float32
    assert classes == ["cats", "dogs"]
    assert labels.tolist() == [1, 0, 0]
    assert labels.dtype == torch.int64
    assert torch.equal(images[0, 0], torch.ones(SIZE, SIZE))  # red
    assert torch.equal(images[0, 1], -torch.ones(SIZE, SIZE))
    assert torch.equal(images[1], torch.ones(3, SIZE, SIZE))  # white
    assert images[2].max().item() < -0.95  # black, up to JPEG noise


def test_flat_files_have_no_classes_and_gray_conversion() -> None:
    files = [("a.png", _png((SIZE, SIZE), WHITE)), ("b.png", _png((SIZE, SIZE), BLACK, mode="L"))]
    images, labels, classes = load_image_files(files, image_size=SIZE, channels=1)
    assert images.shape == (2, 1, SIZE, SIZE)
    assert classes == []
    assert labels.tolist() == [0, 0]
    assert images[0].min().item() == 1.0 and images[1].max().item() == -1.0


def test_images_are_resized_on_the_shorter_side_and_centre_cropped() -> None:
    # Given a 4:1 strip, white in its central quarter only, already SIZE pixels high
    width = 4 * SIZE
    strip = Image.new("RGB", (width, SIZE), BLACK)
    strip.paste(Image.new("RGB", (SIZE, SIZE), WHITE), ((width - SIZE) // 2, 0))
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    # When it is decoded at SIZE
    images, _, _ = load_image_files([("strip.png", buffer.getvalue())], image_size=SIZE, channels=3)
    # Then only the white centre square is left
    assert torch.equal(images[0], torch.ones(3, SIZE, SIZE))


def test_undecodable_files_are_skipped() -> None:
    files = [("cats/junk.png", b"not an image"), ("cats/a.png", _png((8, 8), WHITE))]
    images, labels, classes = load_image_files(files, image_size=SIZE, channels=3)
    assert images.shape == (1, 3, SIZE, SIZE)
    assert classes == ["cats"]
    assert labels.tolist() == [0]


def test_no_decodable_file_is_a_clear_error() -> None:
    truncated = _png((32, 32), RED)[:40]
    with pytest.raises(ValueError, match="none of the 2 uploaded files could be decoded"):
        load_image_files([("a.png", b"\x00garbage"), ("b.png", truncated)], image_size=SIZE, channels=3)


def test_shapes_are_balanced_seeded_rgb_pictures_at_any_size() -> None:
    # Given the shapes dataset at two sizes
    small = load_builtin_labelled("shapes", image_size=16, channels=3)
    large = load_builtin_labelled("shapes", image_size=48, channels=3)
    # Then it holds SHAPES_COUNT RGB images in [-1, 1], a third of each class, at the asked size
    assert small.images.shape == (SHAPES_COUNT, 3, 16, 16) and large.images.shape == (SHAPES_COUNT, 3, 48, 48)
    assert small.classes == SHAPE_CLASSES == ("circle", "square", "triangle")
    assert torch.bincount(small.labels).tolist() == [SHAPES_COUNT // 3] * 3
    assert small.images.min().item() >= -1.0 and small.images.max().item() <= 1.0
    # And the same pictures every time (seeded), each a bright shape on a dark background
    load_builtin_labelled.cache_clear()
    assert torch.equal(load_builtin_labelled("shapes", image_size=16, channels=3).images, small.images)
    lit = (large.images.max(dim=1).values > 0).float().mean(dim=(1, 2))  # share of bright pixels per image
    assert lit.min().item() > 0.02 and lit.max().item() < 0.6
    # And the classes differ in a way a pixel count sees: at equal radius a circle fills more than a triangle
    fill = {name: lit[large.labels == i].mean().item() for i, name in enumerate(SHAPE_CLASSES)}
    assert fill["triangle"] < fill["square"] and fill["triangle"] < fill["circle"]


def test_gray_shapes_have_one_channel() -> None:
    gray = load_builtin_labelled("shapes", image_size=16, channels=1)
    assert gray.images.shape == (SHAPES_COUNT, 1, 16, 16)


def test_a_packed_image_set_unpacks_to_the_very_same_tensors() -> None:
    # Given a decoded upload with classes
    files = [
        ("dogs/c.png", _png((20, 30), RED)),
        ("cats/a.png", _png((40, 40), WHITE)),
        ("cats/b.jpg", _jpeg((64, 48), BLACK)),
    ]
    images, labels, classes = load_image_files(files, image_size=SIZE, channels=3)
    # When it is packed (uint8 pixels) and unpacked
    packed = pack(Labelled(images, labels, tuple(classes)))
    back = unpack_packed(packed)
    # Then nothing changed: same floats, labels and classes (training on it stays bit-identical)
    assert torch.equal(back.images, images) and torch.equal(back.labels, labels) and back.classes == ("cats", "dogs")
    assert len(packed) < images.numel() * 4  # a quarter of float32, plus the container
    with pytest.raises(ValueError, match="not a packed dataset"):
        unpack_packed(b"PK\x03\x04 junk")
