"""style.apply's picture step: one picture through a trained style network, with the content blend and the
colour option. Pure PyTorch; the executor (workers/engines.py) fetches the model and pictures and stores
the outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

import torch
from PIL import Image

from workers.style.images import to_png, to_tensor, with_chroma_of

PNG_SUFFIX = ".png"


Forward = Callable[[torch.Tensor], torch.Tensor]  # a picture (1 x 3 x H x W in [0, 1]) to its styled version


def style_picture(
    forward: Forward, picture: Image.Image, *, device: torch.device, size: int, strength: float, preserve_colors: bool
) -> bytes:
    """``picture`` resized to ``size`` (longer side) through ``forward``, blended and encoded as PNG."""
    content = to_tensor(picture, size).to(device)  # 1 x 3 x H x W in [0, 1]
    with torch.no_grad():
        styled = forward(content)
        if strength < 1.0:
            styled = torch.lerp(content, styled, strength)
        if preserve_colors:
            styled = with_chroma_of(styled, content)
    return to_png(styled)


def output_name(source: str, taken: set[str]) -> str:
    """A zip entry name for the output of the picture named ``source`` (a built-in or an upload's path):
    the same path with a .png suffix, numbered when that name is taken already. Adds it to ``taken``."""
    path = PurePosixPath(source)
    stem = path.with_suffix("") if path.suffix else path
    name = f"{stem}{PNG_SUFFIX}"
    index = 2
    while name in taken:
        name = f"{stem}-{index}{PNG_SUFFIX}"
        index += 1
    taken.add(name)
    return name
