"""An upload of class folders made procedurally: five kinds of picture that a small classifier tells apart at a
glance (a disc, a square, a triangle, horizontal stripes, a ring), each in a random bright colour, size and place
on a dark ground. For the class-coverage tests: a GAN trained on them unconditionally should give back all five."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("disc", "ring", "square", "stripes", "triangle")
BACKGROUND = (12, 12, 24)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    base = rng.uniform(120, 255, size=3)
    base[rng.integers(3)] = rng.uniform(0, 60)  # one dim channel: saturated, never gray
    return tuple(int(c) for c in base)  # type: ignore[return-value]


def picture(kind: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """One picture of ``kind``."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    colour = _colour(rng)
    radius = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=max(2, size // 8))
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        angle = rng.uniform(0, 2 * math.pi)
        corners = [
            (cx + radius * math.cos(angle + 2 * math.pi * k / 3), cy + radius * math.sin(angle + 2 * math.pi * k / 3))
            for k in range(3)
        ]
        draw.polygon(corners, fill=colour)
    elif kind == "stripes":
        period = size // int(rng.integers(2, 4))  # two or three bands: still stripes when downscaled to 16 px
        for top in range(int(rng.integers(0, period)), size, period):
            draw.rectangle((0, top, size, top + period // 2 - 1), fill=colour)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return image


def class_folders(per_class: int = 60, *, size: int = 32, seed: int = 0) -> dict[str, bytes]:
    """``{"<kind>/<i>.png": PNG bytes}`` for every kind: an upload's zip entries."""
    rng = np.random.default_rng(seed)
    entries = {}
    for kind in KINDS:
        for index in range(per_class):
            buffer = io.BytesIO()
            picture(kind, rng, size).save(buffer, format="PNG")
            entries[f"{kind}/{index}.png"] = buffer.getvalue()
    return entries
