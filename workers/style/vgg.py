"""VGG16/VGG19 feature encoder: one forward pass yields every layer the losses need.

Layers are named the Gatys/Caffe way (``conv1_1``, ``relu1_1``, ..., ``pool5``) and map one to
one onto ``torchvision.models.vgg16/vgg19().features`` indices (see
``shared.jobs.vgg_layers``). The encoder is cut after the deepest requested layer, frozen and
in eval mode. Pooling is max (torchvision's) or average (Gatys et al.'s choice); the ImageNet
weights are the same for both.

Three kinds of weights:
- ``uploaded``: a user's state_dict (``load_state_dict_file``, always ``weights_only=True``),
  with torchvision's keys (``features.<i>.weight``) or its features module's (``<i>.weight``);
  only the convolutions up to the deepest requested layer need to be present.
- ``imagenet``: torchvision's ``VGG16/VGG19_Weights.IMAGENET1K_V1``, read from the torch hub
  cache (or downloaded where allowed).
- ``random``: seeded Kaiming init, then normalised layer by layer: each conv's weights and
  bias are scaled so that the mean ReLU activation of that layer over a fixed, seeded
  uniform-noise image is 1. ReLU is positively homogeneous, so this only rescales the
  layer; every layer then has unit-ish activations (about 0.5-1 on natural images) and
  contributes comparable feature/Gram magnitudes, so style transfer still works offline.
  Gatys et al. normalised per filter instead; on random weights and a noise calibration
  image that blows up filters that are near-silent on noise (relu5_1 reached ~1e2-1e3 on
  natural images), so one scale per layer is used.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlparse

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
import torchvision
from torch import nn

from shared.jobs.vgg_layers import POOL, VGG_CONFIGS, layer_names
from workers.downloads import DOWNLOAD_TIMEOUT_S, socket_timeout

WEIGHTS_IMAGENET: Final = "imagenet"
WEIGHTS_RANDOM: Final = "random"
WEIGHTS_UPLOADED: Final = "uploaded"
WEIGHT_KINDS: Final = (WEIGHTS_IMAGENET, WEIGHTS_RANDOM, WEIGHTS_UPLOADED)
FEATURES_PREFIX: Final = "features."
WRAPPER_PREFIX: Final = "module."  # DataParallel/DDP checkpoints

POOLINGS: Final = ("max", "avg")
VGG19_CONFIG: Final[tuple[int | str, ...]] = VGG_CONFIGS["vgg19"]
IN_CHANNELS: Final = 3
KERNEL_SIZE: Final = 3
PADDING: Final = 1
POOL_SIZE: Final = 2

# Inputs are images in [0, 1]; the encoder normalises them with the ImageNet statistics.
IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)

# torch hub keeps downloaded weights in <hub dir>/checkpoints.
HUB_CHECKPOINTS_DIR: Final = "checkpoints"

# Random-weight calibration: a seeded uniform-noise image of this size (it reaches 4 x 4 at
# block 5); a layer whose mean activation is below DEAD_LAYER_MEAN is left unscaled.
CALIBRATION_SIZE: Final = 64
TARGET_MEAN_ACTIVATION: Final = 1.0
DEAD_LAYER_MEAN: Final = 1e-12


# VGG19_LAYERS[i] is the name of torchvision.models.vgg19().features[i].
VGG19_LAYERS: Final[tuple[str, ...]] = layer_names("vgg19")


class WeightsUnavailableError(RuntimeError):
    """The ImageNet VGG weights could not be loaded (not cached, no network, corrupt file)."""


class Encoder(nn.Module):
    """A frozen, trimmed VGG whose forward returns ``{layer: activation}`` for ``layers``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, body: nn.Sequential, layers: Sequence[str]) -> None:
        super().__init__()
        missing = set(layers) - {name for name, _ in body.named_children()}
        if missing:
            raise ValueError(f"layers {sorted(missing)} are not in the encoder body")
        self.body = body
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, IN_CHANNELS, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, IN_CHANNELS, 1, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every requested layer for ``image`` (B, 3, H, W) in [0, 1], in one pass."""
        x = (image - self.mean) / self.std
        wanted = set(self.layers)
        out: dict[str, torch.Tensor] = {}
        for name, module in self.body.named_children():
            x = module(x)
            if name in wanted:
                out[name] = x
        return out


def build_vgg19(
    weights: str,
    *,
    seed: int,
    layers: Sequence[str],
    weights_dir: Path | None = None,
    allow_download: bool = False,
) -> Encoder:
    """A frozen max-pooling VGG19 encoder for ``layers``, cut after the deepest one."""
    return build_vgg("vgg19", weights, seed=seed, layers=layers, weights_dir=weights_dir, allow_download=allow_download)


def build_vgg(
    network: str,
    weights: str,
    *,
    seed: int,
    layers: Sequence[str],
    pooling: str = "max",
    weights_dir: Path | None = None,
    allow_download: bool = False,
    state: Mapping[str, torch.Tensor] | None = None,
) -> Encoder:
    """A frozen VGG16/VGG19 encoder for ``layers``, cut after the deepest one.

    ``weights_dir`` is a torch hub directory (weights live in its ``checkpoints/``); None uses
    torch's default hub dir. ImageNet weights are only downloaded when ``allow_download``.
    ``state`` is the state dict of ``weights="uploaded"`` (see ``load_state_dict_file``).
    """
    names = layer_names(network)
    if weights not in WEIGHT_KINDS:
        raise ValueError(f"unknown weights {weights!r}: use one of {list(WEIGHT_KINDS)}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: use one of {list(POOLINGS)}")
    if not layers:
        raise ValueError("at least one layer is needed")
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(f"unknown {network.upper()} layers {unknown}: use names like conv4_2, relu1_1, pool3")
    depth = max(names.index(name) for name in layers) + 1

    body = _vgg_body(network, depth, pooling)  # uninitialised: every conv is filled below
    if weights == WEIGHTS_UPLOADED:
        if state is None:
            raise ValueError('weights="uploaded" needs the uploaded state dict')
        _copy_weights(network, body, state, source="uploaded state_dict", remedy=_UPLOAD_REMEDY.format(network))
    elif weights == WEIGHTS_IMAGENET:
        imagenet = _load_imagenet_state(network, weights_dir, allow_download=allow_download)
        _copy_weights(network, body, imagenet, source="ImageNet state dict", remedy=_IMAGENET_REMEDY)
    else:
        generator = torch.Generator().manual_seed(seed)
        _init_random(body, generator)
        _calibrate(body, generator)

    encoder = Encoder(body, layers)
    encoder.requires_grad_(False)
    return encoder.eval()


def _vgg_body(network: str, depth: int, pooling: str) -> nn.Sequential:
    """The first ``depth`` feature modules, named after the layer names, with uninitialised convs.

    Built on the meta device and then allocated, so no time is spent on (and no global RNG
    state consumed by) the default init that the caller overwrites anyway.
    """
    modules: list[nn.Module] = []
    channels = IN_CHANNELS
    for item in VGG_CONFIGS[network]:
        if item == POOL:
            pool_type = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d
            modules.append(pool_type(kernel_size=POOL_SIZE, stride=POOL_SIZE))
        else:
            width = int(item)
            # Not in place: a conv output may itself be a requested layer.
            conv = nn.Conv2d(channels, width, KERNEL_SIZE, padding=PADDING, device="meta")
            modules += [conv, nn.ReLU(inplace=False)]
            channels = width
    names = layer_names(network)
    body = nn.Sequential(OrderedDict(zip(names[:depth], modules[:depth], strict=True)))
    return body.to_empty(device="cpu")


def _convs(body: nn.Sequential) -> Iterator[tuple[str, nn.Conv2d]]:
    for name, module in body.named_children():
        if isinstance(module, nn.Conv2d):
            yield name, module


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:  # every VGG conv has one; this narrows the type
        raise TypeError("VGG convolutions are built with a bias")
    return conv.bias


_IMAGENET_WEIGHTS: Final = {
    "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
    "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1,
}


def _cached_weights_path(network: str, weights_dir: Path | None) -> tuple[str, Path]:
    url = str(_IMAGENET_WEIGHTS[network].url)
    hub_dir = weights_dir if weights_dir is not None else Path(torch.hub.get_dir())
    return url, hub_dir / HUB_CHECKPOINTS_DIR / Path(urlparse(url).path).name


def _unavailable(network: str, reason: str, url: str, path: Path) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"ImageNet {network.upper()} weights are unavailable: {reason}. Provide them by pre-fetching {url} "
        f"into the torch hub cache at {path} (set ATELIER_TORCH_HOME to the hub directory that "
        f'holds {HUB_CHECKPOINTS_DIR}/{path.name}), or submit the job with weights="random".'
    )


def _load_imagenet_state(network: str, weights_dir: Path | None, *, allow_download: bool) -> dict[str, torch.Tensor]:
    """The torchvision VGG ImageNet state dict from the hub cache (downloading if allowed)."""
    url, path = _cached_weights_path(network, weights_dir)
    if not path.is_file() and not allow_download:
        raise _unavailable(network, "they are not in the cache and downloading is disabled", url, path)
    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):  # torch.hub's urlopen takes no timeout
            state = _IMAGENET_WEIGHTS[network].get_state_dict(
                progress=False, model_dir=str(path.parent), check_hash=True, weights_only=True
            )
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # URLError is an OSError
        raise _unavailable(network, f"loading failed ({type(exc).__name__}: {exc})", url, path) from exc
    return dict(state)


_IMAGENET_REMEDY: Final = 'delete the cached file and fetch it again, or use weights="random"'
_UPLOAD_REMEDY: Final = (
    "upload torch.save(model.state_dict()) of a torchvision {0} (or of its .features), "
    "holding every convolution up to the deepest layer the job uses"
)


def load_state_dict_file(data: bytes) -> dict[str, torch.Tensor]:
    """An uploaded ``torch.save`` file as a flat name -> tensor mapping.

    Read with ``weights_only=True``: a pickle that would run code is refused, never executed.
    A ``{"state_dict": {...}}`` wrapper is unwrapped; ``module.`` prefixes (DataParallel) are
    dropped, and features-module keys (``<i>.weight``) become torchvision's ``features.<i>.weight``.
    """
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise WeightsUnavailableError(
            f"the uploaded weights file cannot be read by torch.load(weights_only=True) ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsUnavailableError(
            f"the uploaded weights file holds a {type(loaded).__name__}, not a state_dict (a mapping of names to tensors)"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsUnavailableError(
                f"the uploaded state_dict maps {key!r} to a {type(value).__name__}, not a tensor"
            )
        name = key.removeprefix(WRAPPER_PREFIX)
        state[name if not name[:1].isdigit() else FEATURES_PREFIX + name] = value
    return state


def _copy_weights(
    network: str, body: nn.Sequential, state: Mapping[str, torch.Tensor], *, source: str, remedy: str
) -> None:
    """Copy ``features.<index>.*`` tensors of a torchvision-keyed state dict into ``body``."""
    names = layer_names(network)
    with torch.no_grad():
        for name, conv in _convs(body):
            index = names.index(name)
            try:
                conv.weight.copy_(state[f"{FEATURES_PREFIX}{index}.weight"])
                _bias(conv).copy_(state[f"{FEATURES_PREFIX}{index}.bias"])
            except (KeyError, RuntimeError) as exc:
                raise WeightsUnavailableError(
                    f"the {source} does not fit {network.upper()} layer {name} ({FEATURES_PREFIX}{index}): {exc}; {remedy}"
                ) from exc


def _init_random(body: nn.Sequential, generator: torch.Generator) -> None:
    """torchvision's VGG init (Kaiming normal, fan-out, zero bias), drawn from ``generator``."""
    with torch.no_grad():
        for _, conv in _convs(body):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            nn.init.zeros_(_bias(conv))


def _calibrate(body: nn.Sequential, generator: torch.Generator) -> None:
    """Scale each conv so the mean ReLU activation of its layer on a seeded noise image is 1."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, IN_CHANNELS, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, IN_CHANNELS, 1, 1)
    noise = torch.rand(1, IN_CHANNELS, CALIBRATION_SIZE, CALIBRATION_SIZE, generator=generator)
    x = (noise - mean) / std
    with torch.no_grad():
        for module in body.children():
            x = module(x)
            if isinstance(module, nn.Conv2d):
                activation = float(F.relu(x).mean())
                if activation > DEAD_LAYER_MEAN:
                    scale = TARGET_MEAN_ACTIVATION / activation
                    module.weight.mul_(scale)
                    _bias(module).mul_(scale)
                    x = x * scale  # what the rescaled conv now outputs
