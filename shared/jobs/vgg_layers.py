"""VGG16/VGG19 layer names, torch-free, so the API can validate layer params at submit time.

Layers are named the Gatys/Caffe way (``conv1_1``, ``relu1_1``, ..., ``pool5``) and map one to
one onto ``torchvision.models.vgg16/vgg19().features`` indices: ``layer_names(net)[i]`` names
``features[i]``.
"""

from __future__ import annotations

from typing import Final, Literal

VggNetwork = Literal["vgg16", "vgg19"]

POOL: Final = "M"  # a 2x2 pooling layer in a feature configuration
# torchvision's feature configurations: conv widths, POOL for a 2x2 pool ("D" and "E").
VGG_CONFIGS: Final[dict[str, tuple[int | str, ...]]] = {
    "vgg16": (
        64, 64, POOL,
        128, 128, POOL,
        256, 256, 256, POOL,
        512, 512, 512, POOL,
        512, 512, 512, POOL,
    ),
    "vgg19": (
        64, 64, POOL,
        128, 128, POOL,
        256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL,
        512, 512, 512, 512, POOL,
    ),
}  # fmt: skip
NETWORKS: Final[tuple[str, ...]] = tuple(VGG_CONFIGS)


def _names(config: tuple[int | str, ...]) -> tuple[str, ...]:
    names: list[str] = []
    block, conv = 1, 0
    for item in config:
        if item == POOL:
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return tuple(names)


_LAYER_NAMES: Final[dict[str, tuple[str, ...]]] = {net: _names(cfg) for net, cfg in VGG_CONFIGS.items()}


def layer_names(network: str) -> tuple[str, ...]:
    """Every layer name of ``network`` in forward order (index i is ``features[i]``)."""
    try:
        return _LAYER_NAMES[network]
    except KeyError:
        raise ValueError(f"unknown network {network!r}: use one of {list(NETWORKS)}") from None
