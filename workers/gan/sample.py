"""Draw images from a trained generator; the PNG grid encoder shared with the training loop."""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from workers.gan.nets import Generator

GENERATOR_FILE_VERSION = 1
GRID_PADDING = 2
GRID_MAX_IMAGES = 256  # a 16 x 16 grid; the .npy holds all n images
SAMPLE_CHUNK = 256  # images per forward pass, to bound memory for large n
PIXEL_MAX_VALUE = 255
PIXEL_ROUNDING = 0.5
IMAGE_VALUE_RANGE = (-1.0, 1.0)
# What loading raises for bytes that are not a generator.pt: not a torch.save file, disallowed
# objects (weights_only), missing keys, or weights that do not fit the architecture.
LOAD_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
)


def latents(n: int, nz: int, *, seed: int) -> torch.Tensor:
    """``n`` standard-normal latents (n, nz, 1, 1) on the CPU, from a generator seeded by ``seed`` only."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, nz, 1, 1, generator=generator)


def grid_png(images: torch.Tensor) -> bytes:
    """Encode images (N, C, H, W) in [-1, 1] as a near-square PNG grid."""
    nrow = math.ceil(math.sqrt(images.shape[0]))
    grid = make_grid(images.detach(), nrow=nrow, padding=GRID_PADDING, normalize=True, value_range=IMAGE_VALUE_RANGE)
    # As torchvision.utils.save_image: round to uint8, channels last.
    pixels = grid.mul(PIXEL_MAX_VALUE).add_(PIXEL_ROUNDING).clamp_(0, PIXEL_MAX_VALUE).to(torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def generator_file(net: Generator, params: dict[str, Any]) -> bytes:
    """Serialise a generator as generator.pt: weights, the architecture to rebuild it, and the job params."""
    payload = {
        "version": GENERATOR_FILE_VERSION,
        "state_dict": {name: value.detach().cpu() for name, value in net.state_dict().items()},
        "arch": {"image_size": net.image_size, "nz": net.nz, "ngf": net.ngf, "channels": net.channels},
        "params": params,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_generator(generator_bytes: bytes, *, device: torch.device | str = "cpu") -> Generator:
    """Rebuild a generator from generator.pt bytes (loaded with weights_only=True), in eval mode."""
    try:
        payload = torch.load(io.BytesIO(generator_bytes), map_location="cpu", weights_only=True)
        arch = payload["arch"]
        net = Generator(
            image_size=int(arch["image_size"]), nz=int(arch["nz"]), ngf=int(arch["ngf"]), channels=int(arch["channels"])
        )
        net.load_state_dict(payload["state_dict"])
    except LOAD_ERRORS as exc:
        raise ValueError(f"not a usable generator.pt file: {exc}") from exc
    return net.to(device).eval()


def sample(generator_bytes: bytes, *, n: int, seed: int, device: torch.device | str = "cpu") -> tuple[bytes, bytes]:
    """Draw ``n`` images: (PNG grid of the first 256, .npy of float32 (n, C, H, W) in [-1, 1])."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    net = load_generator(generator_bytes, device=device)
    z = latents(n, net.nz, seed=seed)
    with torch.no_grad():
        images = torch.cat([net(chunk.to(device)).cpu() for chunk in z.split(SAMPLE_CHUNK)])
    buffer = io.BytesIO()
    np.save(buffer, images.numpy().astype(np.float32, copy=False))
    return grid_png(images[:GRID_MAX_IMAGES]), buffer.getvalue()
