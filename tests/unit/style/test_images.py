"""Images in and out of the style engine: built-ins, decoding, resizing, PNG encoding."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from shared.jobs.params import BUILTIN_IMAGES
from workers.style.images import decode_image, load_builtin_image, to_png, to_tensor

SIZE = 64


@pytest.mark.parametrize("name", BUILTIN_IMAGES)
def test_every_builtin_image_loads_as_rgb(name: str) -> None:
    # When a built-in named in the job specs is loaded
    img = load_builtin_image(name)
    # Then it is an RGB picture of a real size (camera is grayscale at the source)
    assert img.mode == "RGB"
    assert min(img.size) >= SIZE


def test_unknown_builtin_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="lena"):
        load_builtin_image("lena")


def test_decode_image_round_trips_a_png_and_converts_to_rgb() -> None:
    # Given a grayscale PNG file
    buffer = io.BytesIO()
    Image.new("L", (5, 3), color=200).save(buffer, format="PNG")
    # When it is decoded
    img = decode_image(buffer.getvalue())
    # Then it is RGB with its size and pixel values kept
    assert img.mode == "RGB"
    assert img.size == (5, 3)
    assert img.getpixel((0, 0)) == (200, 200, 200)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32])
def test_decode_image_rejects_garbage_with_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="could not decode image"):
        decode_image(data)


@pytest.mark.parametrize(
    ("size_wh", "expected_hw"),
    [((512, 512), (64, 64)), ((600, 400), (43, 64)), ((300, 451), (64, 43))],
)
def test_to_tensor_scales_the_longer_side_to_size_keeping_aspect(
    size_wh: tuple[int, int], expected_hw: tuple[int, int]
) -> None:
    img = Image.new("RGB", size_wh, color=(255, 0, 128))
    tensor = to_tensor(img, SIZE)
    assert tensor.shape == (1, 3, *expected_hw)
    assert tensor.dtype == torch.float32
    # Values are in [0, 1]: 255 -> 1, 0 -> 0
    assert tensor[0, 0].eq(1.0).all()
    assert tensor[0, 1].eq(0.0).all()
    assert tensor[0, 2].sub(128 / 255).abs().max() < 1e-6


def test_to_png_encodes_a_decodable_image_of_the_same_size_and_values() -> None:
    # Given an image tensor with values outside [0, 1] in places
    tensor = torch.zeros(1, 3, 4, 6)
    tensor[0, 0] = 1.0
    tensor[0, 1] = 2.0  # clamped to 1
    tensor[0, 2] = 0.5
    # When it is encoded
    png = to_png(tensor)
    # Then it is a PNG of width 6 and height 4 holding the (clamped, rounded) values
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG"
    assert decoded.size == (6, 4)
    assert decoded.convert("RGB").getpixel((0, 0)) == (255, 255, 128)


def test_to_png_then_to_tensor_round_trips_to_8_bit_precision() -> None:
    tensor = to_tensor(load_builtin_image("chelsea"), SIZE)
    back = to_tensor(decode_image(to_png(tensor)), SIZE)
    assert back.shape == tensor.shape
    assert (back - tensor).abs().max() <= 0.5 / 255 + 1e-6


def test_to_png_rejects_a_batch_of_several_images() -> None:
    with pytest.raises(ValueError, match="batch of one"):
        to_png(torch.zeros(2, 3, 4, 4))
