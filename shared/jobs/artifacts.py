"""How many artifacts a job will store and an upper bound on their bytes, known from its params
alone (no torch), so the API can refuse a job over the per-job caps before it runs. The worker
enforces the same caps as it saves (workers/limits.py).

PNG sizes are bounded by the raw RGB pixels times PNG_BOUND (row filter bytes, deflate's stored
blocks and the padding between grid cells fit in that), so a job the API admits never reaches
the caps at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from shared.jobs.gan_train import GanTrainParams
from shared.jobs.memory import DEFAULT_CONDITIONAL_CLASSES, FLOAT_BYTES, gan_networks, style_model_params
from shared.jobs.style_apply import StyleApplyParams
from shared.jobs.style_train import PREVIEW_PICTURES, StyleTrainParams
from shared.jobs.style_transfer import StyleTransferParams

RGB_BYTES: Final = 3  # grids and pictures are saved as 8-bit RGB
PNG_BOUND: Final = 1.25
PNG_HEADER_BYTES: Final = 64 * 1024
GRID_PADDING: Final = 2  # as workers/gan/sample.py
FIXED_NOISE_COUNT: Final = 64  # images in a gan.train sample grid (conditional: at least one per class)
SCATTER_SIDE: Final = 512  # point datasets' scatter plots
LOSS_PLOT_PIXELS: Final = 800 * 400
INTERPOLATION_IMAGES: Final = 8 * 10  # rows x steps of samples/interpolation.png
GAN_FINAL_ARTIFACTS: Final = 3  # samples/final.png, plots/losses.png, generator.pt (+ interpolation on images)
WEIGHTS_FILE_BOUND: Final = 2.2  # generator.pt: weights, batch-norm buffers and pickle framing per parameter
FILE_HEADER_BYTES: Final = 1024 * 1024
GRID_MAX_IMAGES: Final = 256  # gan.sample's PNG shows at most this many (workers/gan/sample.py)
NPY_HEADER_BYTES: Final = 128
ZIP_ENTRY_BYTES: Final = 1024  # a zip entry's local header, central directory record and name
STYLE_TRAIN_FINAL_ARTIFACTS: Final = 3  # preview.png, model.safetensors, model.json


@dataclass(frozen=True)
class ArtifactPlan:
    """What a job will store: the artifact count, an upper bound on its bytes, the field that drives them
    and what to change."""

    count: int
    max_bytes: int
    field: str
    remedy: str


def _png_bytes(pixels: int) -> int:
    return int(pixels * RGB_BYTES * PNG_BOUND) + PNG_HEADER_BYTES


def _grid_pixels(images: int, side: int) -> int:
    """Pixels of a grid of ``images`` cells of ``side`` px, padding included (any row length)."""
    cell = side + GRID_PADDING
    return images * cell * cell + 2 * (images + 1) * cell + GRID_PADDING**2


def gan_generator_file_bytes(params: GanTrainParams, *, num_classes: int = DEFAULT_CONDITIONAL_CLASSES) -> int:
    """Upper bound on generator.pt's size for ``params``."""
    net_g, _net_d = gan_networks(params, num_classes)
    return int(WEIGHTS_FILE_BOUND * net_g.params * FLOAT_BYTES) + FILE_HEADER_BYTES


def gan_train_plan(params: GanTrainParams, *, num_classes: int = DEFAULT_CONDITIONAL_CLASSES) -> ArtifactPlan:
    """Sample grids every sample_every steps and at the end, the final grid, loss plot, interpolation strip
    and generator.pt."""
    grids = math.ceil(params.steps / params.sample_every)
    if params.points:
        grid, extras = _png_bytes(SCATTER_SIDE**2), 0
    else:
        cells = max(FIXED_NOISE_COUNT, num_classes) if params.conditional else FIXED_NOISE_COUNT
        grid = _png_bytes(_grid_pixels(cells, params.image_size))
        extras = 1  # samples/interpolation.png
    total = (
        (grids + 1) * grid
        + _png_bytes(LOSS_PLOT_PIXELS)
        + extras * _png_bytes(_grid_pixels(INTERPOLATION_IMAGES, params.image_size))
        + gan_generator_file_bytes(params, num_classes=num_classes)
    )
    return ArtifactPlan(grids + GAN_FINAL_ARTIFACTS + extras, total, "params.sample_every", "raise sample_every")


def style_plan(params: StyleTransferParams) -> ArtifactPlan:
    """Snapshots, one picture per scale when there are several, and output.png (square: the worst case)."""
    snapshots = params.total_steps() // params.snapshot_every if params.snapshot_every is not None else 0
    sizes = params.scale_sizes()
    per_scale = sizes if len(sizes) > 1 else []
    total = (snapshots + 1) * _png_bytes(params.size**2) + sum(_png_bytes(s**2) for s in per_scale)
    if snapshots:
        return ArtifactPlan(snapshots + len(per_scale) + 1, total, "params.snapshot_every", "raise snapshot_every")
    return ArtifactPlan(len(per_scale) + 1, total, "params.size", "lower size")


def style_train_plan(params: StyleTrainParams) -> ArtifactPlan:
    """Preview grids every preview_every steps and the final one, model.safetensors and model.json."""
    previews = params.steps // params.preview_every if params.preview_every is not None else 0
    grid = _png_bytes(_grid_pixels(PREVIEW_PICTURES, params.size))
    model = int(WEIGHTS_FILE_BOUND * style_model_params(params) * FLOAT_BYTES) + FILE_HEADER_BYTES
    total = (previews + 1) * grid + model + FILE_HEADER_BYTES  # + the card
    return ArtifactPlan(previews + STYLE_TRAIN_FINAL_ARTIFACTS, total, "params.preview_every", "raise preview_every")


def style_apply_plan(params: StyleApplyParams, *, pictures: int) -> ArtifactPlan:
    """output.png for one picture, else outputs.zip of a PNG per picture (square: the worst case)."""
    png = _png_bytes(params.size**2)
    if pictures <= 1:
        return ArtifactPlan(1, png, "params.size", "lower size")
    return ArtifactPlan(1, pictures * (png + ZIP_ENTRY_BYTES), "params.images", "send fewer pictures or lower size")


def gan_sample_plan(source: GanTrainParams, n: int) -> ArtifactPlan:
    """samples.png (a grid of at most GRID_MAX_IMAGES, or a scatter) and samples.npy (float32)."""
    if source.points:
        picture = _png_bytes(SCATTER_SIDE**2)
        raw = n * 2 * FLOAT_BYTES
    else:
        picture = _png_bytes(_grid_pixels(min(n, GRID_MAX_IMAGES), source.image_size))
        raw = n * source.resolved_channels() * source.image_size**2 * FLOAT_BYTES
    return ArtifactPlan(2, picture + raw + NPY_HEADER_BYTES, "params.n", "lower n")
