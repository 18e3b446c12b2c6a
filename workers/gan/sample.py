"""Draw samples from a trained generator; the PNG grid and scatter encoders shared with the training loop."""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from workers.gan.multiscale import MultiScaleGenerator, Stage
from workers.gan.nets import Generator, MLPGenerator

GENERATOR_FILE_VERSION = 1
GRID_PADDING = 2
GRID_MAX_IMAGES = 256  # a 16 x 16 grid; the .npy holds all n images
SAMPLE_CHUNK = 256  # images per forward pass, to bound memory for large n
PIXEL_MAX_VALUE = 255
PIXEL_ROUNDING = 0.5
IMAGE_VALUE_RANGE = (-1.0, 1.0)
MLP_NET = "mlp"
MULTISCALE_NET = "multiscale"  # progressive and MSG generators
POINT_DIM = 2
POINTS_NDIM = 2  # a batch of points is (N, 2); of images, (N, C, H, W)
SCATTER_SIZE = 512  # pixels per side of a point scatter plot
SCATTER_MARGIN = 0.15  # share of the data extent added on each side
SCATTER_MIN_EXTENT = 1.0
SCATTER_BACKGROUND = (255, 255, 255)
SCATTER_MODE = (200, 60, 60)
SCATTER_POINT = (30, 80, 200)
SCATTER_MODE_RADIUS = 6
SCATTER_POINT_RADIUS = 1
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


def grid_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """Encode images (N, C, H, W) in [-1, 1] as a PNG grid, ``nrow`` per row (default: near-square)."""
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    grid = make_grid(images.detach(), nrow=nrow, padding=GRID_PADDING, normalize=True, value_range=IMAGE_VALUE_RANGE)
    # As torchvision.utils.save_image: round to uint8, channels last.
    pixels = grid.mul(PIXEL_MAX_VALUE).add_(PIXEL_ROUNDING).clamp_(0, PIXEL_MAX_VALUE).to(torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def scatter_png(points: torch.Tensor, *, centers: torch.Tensor | None = None) -> bytes:
    """Plot 2-D points (N, 2) as a PNG scatter, over the mixture's mode centres when given."""
    if points.ndim != POINTS_NDIM or points.shape[1] != POINT_DIM:
        raise ValueError(f"points must have shape (N, 2), got {tuple(points.shape)}")
    pts = points.detach().float().cpu()
    pts = pts[torch.isfinite(pts).all(dim=1)]
    frame = centers.float().cpu() if centers is not None else pts
    extent = max(float(frame.abs().max()) if frame.numel() else 0.0, SCATTER_MIN_EXTENT) * (1 + SCATTER_MARGIN)
    image = Image.new("RGB", (SCATTER_SIZE, SCATTER_SIZE), SCATTER_BACKGROUND)
    draw = ImageDraw.Draw(image)

    def pixel(x: float, y: float) -> tuple[float, float]:
        return ((x / extent + 1) / 2 * SCATTER_SIZE, (1 - (y / extent + 1) / 2) * SCATTER_SIZE)

    for x, y in centers.tolist() if centers is not None else []:
        cx, cy = pixel(x, y)
        r = SCATTER_MODE_RADIUS
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=SCATTER_MODE)
    for x, y in pts.tolist():
        cx, cy = pixel(x, y)
        r = SCATTER_POINT_RADIUS
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=SCATTER_POINT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _arch(net: Generator | MLPGenerator | MultiScaleGenerator) -> dict[str, Any]:
    if isinstance(net, MultiScaleGenerator):
        return {
            "net": MULTISCALE_NET,
            "image_size": net.image_size,
            "nz": net.nz,
            "ngf": net.ngf,
            "channels": net.channels,
            "level": net.stage.level,
            "alpha": net.stage.alpha,
        }
    if isinstance(net, MLPGenerator):
        return {
            "net": MLP_NET,
            "nz": net.nz,
            "ngf": net.ngf,
            "out_shape": list(net.out_shape),
            "tanh": net.tanh,
            "batchnorm": net.batchnorm,
        }
    return {
        "image_size": net.image_size,
        "nz": net.nz,
        "ngf": net.ngf,
        "channels": net.channels,
        "num_classes": net.num_classes,
    }


def _build(arch: dict[str, Any]) -> Generator | MLPGenerator | MultiScaleGenerator:
    if arch.get("net") == MULTISCALE_NET:
        net = MultiScaleGenerator(
            image_size=int(arch["image_size"]), nz=int(arch["nz"]), ngf=int(arch["ngf"]), channels=int(arch["channels"])
        )
        net.set_stage(Stage(int(arch["level"]), float(arch["alpha"])))
        return net
    if arch.get("net") == MLP_NET:
        return MLPGenerator(
            nz=int(arch["nz"]),
            ngf=int(arch["ngf"]),
            out_shape=tuple(int(d) for d in arch["out_shape"]),
            tanh=bool(arch["tanh"]),
            batchnorm=bool(arch.get("batchnorm", True)),  # files written before the option had batch norm
        )
    return Generator(
        image_size=int(arch["image_size"]),
        nz=int(arch["nz"]),
        ngf=int(arch["ngf"]),
        channels=int(arch["channels"]),
        num_classes=int(arch.get("num_classes", 0)),
    )


def generator_file(net: Generator | MLPGenerator | MultiScaleGenerator, params: dict[str, Any]) -> bytes:
    """Serialise a generator as generator.pt: weights, the architecture to rebuild it, and the job params."""
    payload = {
        "version": GENERATOR_FILE_VERSION,
        "state_dict": {name: value.detach().cpu() for name, value in net.state_dict().items()},
        "arch": _arch(net),
        "params": params,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_generator(
    generator_bytes: bytes, *, device: torch.device | str = "cpu"
) -> Generator | MLPGenerator | MultiScaleGenerator:
    """Rebuild a generator from generator.pt bytes (loaded with weights_only=True), in eval mode."""
    try:
        payload = torch.load(io.BytesIO(generator_bytes), map_location="cpu", weights_only=True)
        net = _build(payload["arch"])
        net.load_state_dict(payload["state_dict"])
    except LOAD_ERRORS as exc:
        raise ValueError(f"not a usable generator.pt file: {exc}") from exc
    return net.to(device).eval()


def sample(generator_bytes: bytes, *, n: int, seed: int, device: torch.device | str = "cpu") -> tuple[bytes, bytes]:
    """Draw ``n`` samples: (PNG grid of the first 256 or a scatter of all points, .npy of float32 (n, C, H, W) or (n, 2))."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    net = load_generator(generator_bytes, device=device)
    z = latents(n, net.nz, seed=seed)
    classes = getattr(net, "num_classes", 0)
    # A conditional generator draws the classes in turn: image i is of class i % num_classes.
    labels = torch.arange(n) % classes if classes else torch.zeros(n, dtype=torch.int64)
    with torch.no_grad():
        images = torch.cat(
            [
                net(chunk.to(device), lab.to(device) if classes else None).cpu()
                for chunk, lab in zip(z.split(SAMPLE_CHUNK), labels.split(SAMPLE_CHUNK), strict=True)
            ]
        )
    buffer = io.BytesIO()
    np.save(buffer, images.numpy().astype(np.float32, copy=False))
    if images.ndim == POINTS_NDIM:
        picture = scatter_png(images)
    else:  # conditional: one class per column
        picture = grid_png(images[:GRID_MAX_IMAGES], nrow=classes or None)
    return picture, buffer.getvalue()
