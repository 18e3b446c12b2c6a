"""How much device memory a style.transfer job needs, estimated without torch, so the API can
refuse a size that won't fit and a worker can refuse it before it starts allocating.

The estimate is for the largest scale, on a square image of the longer side (the worst case
for that side), in fp32:
- activations kept for the backward pass: the normalised input and every module's output up
  to the deepest layer used (conv and ReLU outputs, pooled maps and, for max pooling, their
  int64 indices), times ACTIVATION_FACTOR for the gradients and workspace of the backward pass;
- the no-grad forward of the (style_scale times larger) style images, one module at a time;
- the optimiser: Adam's two moments, or L-BFGS's history of 2 x 100 image-sized vectors;
- the image, its gradient, the targets (content features, style Grams) and the weights.
tests/unit/test_style_memory.py checks it against the peak memory of real runs on CPU.
"""

from __future__ import annotations

from typing import Final

from shared.jobs.specs import StyleTransferParams
from shared.jobs.vgg_layers import POOL, VGG_CONFIGS, layer_names

FLOAT_BYTES: Final = 4
INDEX_BYTES: Final = 8  # max pooling keeps int64 argmax indices for its backward
CHANNELS: Final = 3
KERNEL_AREA: Final = 9
LBFGS_HISTORY: Final = 100  # the engine's history_size: two image-sized vectors each
LBFGS_WORK_VECTORS: Final = 6  # direction, previous gradient, flat gradient, ...
ADAM_VECTORS: Final = 2  # exp_avg, exp_avg_sq
IMAGE_VECTORS: Final = 3  # the variable, its gradient, the displayed pixels
ACTIVATION_FACTOR: Final = 2.0  # backward: a gradient per saved activation at the peak, and workspace
FORWARD_ONLY_FACTOR: Final = 3.0  # a no-grad pass holds a module's input and output (+ workspace)
OVERHEAD_BYTES: Final = 256 * 1024 * 1024  # allocator slack, kernels' scratch, small tensors
GIB: Final = 1024**3


def _module_shapes(network: str, depth: int, size: int) -> list[tuple[str, int, int]]:
    """(kind, channels, side) of the output of each of the first ``depth`` feature modules."""
    shapes: list[tuple[str, int, int]] = []
    channels, side = CHANNELS, size
    for item in VGG_CONFIGS[network]:
        if item == POOL:
            side = max(1, side // 2)
            shapes.append(("pool", channels, side))
        else:
            channels = int(item)
            shapes += [("conv", channels, side), ("relu", channels, side)]
    return shapes[:depth]


def _weights_bytes(network: str, depth: int) -> int:
    total, channels = 0, CHANNELS
    for kind, out_channels, _side in _module_shapes(network, depth, 1):
        if kind == "conv":
            total += (channels * out_channels * KERNEL_AREA + out_channels) * FLOAT_BYTES
        channels = out_channels
    return total


def style_memory_bytes(params: StyleTransferParams) -> int:
    """Estimated peak device memory of ``params``'s largest scale, in bytes."""
    names = layer_names(params.network)
    used = params.content_layers + params.style_layers
    depth = max(names.index(layer) for layer in used) + 1
    size = params.size
    image = CHANNELS * size * size * FLOAT_BYTES

    shapes = _module_shapes(params.network, depth, size)
    saved = image  # the normalised input
    for kind, channels, side in shapes:
        saved += channels * side * side * FLOAT_BYTES
        if kind == "pool" and params.pooling == "max":
            saved += channels * side * side * INDEX_BYTES
    activations = ACTIVATION_FACTOR * saved

    style_shapes = _module_shapes(params.network, depth, params.largest_style_size())
    style_pass = FORWARD_ONLY_FACTOR * max(c * s * s for _k, c, s in style_shapes) * FLOAT_BYTES

    by_name = dict(zip(names, shapes, strict=False))
    content_targets = sum(by_name[layer][1] * by_name[layer][2] ** 2 for layer in params.content_layers)
    grams = len(params.styles) * sum(by_name[layer][1] ** 2 for layer in params.style_layers)
    targets = (content_targets + grams) * FLOAT_BYTES

    vectors = 2 * LBFGS_HISTORY + LBFGS_WORK_VECTORS if params.optimizer == "lbfgs" else ADAM_VECTORS
    optimiser = (vectors + IMAGE_VECTORS) * image

    loop = activations + optimiser + targets
    return int(max(loop, style_pass + targets) + _weights_bytes(params.network, depth) + OVERHEAD_BYTES)


def describe_bytes(count: float) -> str:
    """``count`` bytes as GiB with one decimal (MiB below 1 GiB)."""
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / 1024**2:.0f} MiB"
