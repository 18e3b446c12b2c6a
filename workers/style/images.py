"""Images in and out of the style-transfer engine: built-ins, decoding, tensors and PNG."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Final

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

RGB_MAX = 255.0
RESAMPLE = Image.Resampling.LANCZOS


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return np.asarray(getattr(skimage.data, name)())

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(filename))

    return load


# Must cover shared.jobs.params.BUILTIN_IMAGES; all of these ship inside the wheels (offline).
_BUILTIN_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "rocket": _skimage("rocket"),
    "camera": _skimage("camera"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}


def load_builtin_image(name: str) -> Image.Image:
    """A built-in picture (scikit-image / scikit-learn sample) as an RGB PIL image."""
    try:
        loader = _BUILTIN_LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown built-in image {name!r}: use one of {sorted(_BUILTIN_LOADERS)}") from None
    return Image.fromarray(loader()).convert("RGB")


def decode_image(data: bytes) -> Image.Image:
    """Decode image file bytes (PNG, JPEG, ...) to an RGB PIL image; ValueError if not an image."""
    try:
        with Image.open(io.BytesIO(data)) as raw:
            raw.load()
            # Honour the EXIF orientation phone cameras write instead of rotating pixels.
            oriented = ImageOps.exif_transpose(raw)
            return oriented.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"could not decode image ({len(data)} bytes): {exc}") from exc


def scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the longer side equal to ``size``, keeping the aspect ratio."""
    longer = max(width, height)
    return max(1, round(width * size / longer)), max(1, round(height * size / longer))


def to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """Resize so the longer side is ``size`` and return a float tensor (1, 3, H, W) in [0, 1]."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    rgb = img.convert("RGB")
    target = scaled_size(rgb.width, rgb.height, size)
    if target != rgb.size:
        rgb = rgb.resize(target, RESAMPLE)
    array = np.asarray(rgb, dtype=np.float32) / RGB_MAX  # H x W x 3
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()  # 1 x 3 x H x W


def to_png(tensor: torch.Tensor) -> bytes:
    """Encode an image tensor (1, 3, H, W) or (3, H, W) with values in [0, 1] as PNG bytes."""
    image = tensor.detach().to("cpu", torch.float32)
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got shape {tuple(tensor.shape)}")
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image tensor (3, H, W), got shape {tuple(tensor.shape)}")
    pixels = (image.clamp(0.0, 1.0) * RGB_MAX).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# BT.601 RGB -> YUV (Y in [0, 1], U and V centred on 0), as skimage.color.rgb2yuv uses.
RGB_TO_YUV: Final = (
    (0.299, 0.587, 0.114),
    (-0.14714119, -0.28886916, 0.43601035),
    (0.61497538, -0.51496512, -0.10001026),
)
LUMA: Final = 0
CHROMA: Final = slice(1, 3)


def _yuv_matrix(like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(RGB_TO_YUV, dtype=like.dtype, device=like.device)


def rgb_to_yuv(image: torch.Tensor) -> torch.Tensor:
    """YUV planes (B, 3, H, W) of an RGB image batch (B, 3, H, W)."""
    return torch.einsum("yc,bchw->byhw", _yuv_matrix(image), image)


def yuv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """RGB image batch (B, 3, H, W) of YUV planes (B, 3, H, W); not clamped."""
    return torch.einsum("cy,byhw->bchw", torch.linalg.inv(_yuv_matrix(image)), image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """The image's Y plane repeated to three channels: a grey RGB image (B, 3, H, W)."""
    luma = rgb_to_yuv(image)[:, LUMA : LUMA + 1]
    return luma.expand(-1, 3, -1, -1).contiguous()


def with_chroma_of(image: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``image``'s luminance with the U and V of ``colours`` (same shape), clamped to [0, 1]."""
    yuv = rgb_to_yuv(colours)
    yuv = torch.cat([rgb_to_yuv(image)[:, LUMA : LUMA + 1], yuv[:, CHROMA]], dim=1)
    return yuv_to_rgb(yuv).clamp(0.0, 1.0)
