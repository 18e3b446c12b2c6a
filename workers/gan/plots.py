"""Pictures of a run for people to look at: the loss curves, and a latent-interpolation strip.

Drawn with PIL (no plotting library in the worker image). The curves keep a bounded history:
every logged step until MAX_POINTS, then every second one, and so on (``LossHistory``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Final

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from workers.gan.sample import GRID_PADDING, IMAGE_VALUE_RANGE, PIXEL_MAX_VALUE, PIXEL_ROUNDING

MAX_POINTS: Final = 4096  # per series kept in the history (and in checkpoints)
WIDTH, HEIGHT = 800, 400
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 30, 40
BACKGROUND: Final = (255, 255, 255)
AXIS: Final = (60, 60, 60)
GRIDLINE: Final = (225, 225, 225)
COLOURS: Final = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))
CLIP_QUANTILES: Final = (0.01, 0.99)  # the y range ignores the most extreme 1 % at each end
Y_TICKS: Final = 5
INTERPOLATION_ROWS: Final = 8
INTERPOLATION_STEPS: Final = 10
SLERP_EPS: Final = 1e-6


@dataclass
class LossHistory:
    """(step, value) per series, thinned by powers of two to stay under MAX_POINTS."""

    names: tuple[str, ...]
    stride: int = 1
    steps: list[int] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)

    def add(self, step: int, row: list[float]) -> None:
        """Record one logged step (kept when it falls on the current stride)."""
        if step % self.stride:
            return
        self.steps.append(step)
        self.values.append(row)
        if len(self.steps) > MAX_POINTS:
            self.stride *= 2
            kept = [i for i, s in enumerate(self.steps) if s % self.stride == 0]
            self.steps = [self.steps[i] for i in kept]
            self.values = [self.values[i] for i in kept]

    def state(self) -> dict[str, object]:
        """Checkpointable form (tensors and primitives only)."""
        return {
            "names": list(self.names),
            "stride": self.stride,
            "steps": torch.tensor(self.steps, dtype=torch.int64),
            "values": torch.tensor(self.values, dtype=torch.float64).reshape(len(self.steps), len(self.names)),
        }

    @classmethod
    def from_state(cls, names: tuple[str, ...], state: dict[str, object] | None) -> LossHistory:
        """Rebuild from ``state``; a fresh history when there is none (an older checkpoint)."""
        if not state:
            return cls(names)
        steps, values = state["steps"], state["values"]
        assert isinstance(steps, torch.Tensor) and isinstance(values, torch.Tensor)
        stride = state["stride"]
        return cls(names, int(stride) if isinstance(stride, int) else 1, steps.tolist(), values.tolist())


def _ticks(low: float, high: float) -> list[float]:
    return [low + (high - low) * i / (Y_TICKS - 1) for i in range(Y_TICKS)]


def loss_curve_png(history: LossHistory, *, title: str = "losses") -> bytes:
    """A line chart of every series against the step, with a legend and labelled axes."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN_LEFT, MARGIN_TOP, WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM
    finite = sorted(v for row in history.values for v in row if math.isfinite(v))
    if not finite or not history.steps:
        draw.text((left, top), f"{title}: nothing logged", fill=AXIS)
        return _png(image)
    low = finite[int(CLIP_QUANTILES[0] * (len(finite) - 1))]
    high = finite[int(CLIP_QUANTILES[1] * (len(finite) - 1))]
    if high - low < SLERP_EPS:
        low, high = low - 1.0, high + 1.0
    first, last = history.steps[0], max(history.steps[-1], history.steps[0] + 1)

    def x(step: int) -> float:
        return left + (step - first) / (last - first) * (right - left)

    def y(value: float) -> float:
        clipped = min(max(value, low), high)
        return bottom - (clipped - low) / (high - low) * (bottom - top)

    for tick in _ticks(low, high):
        draw.line((left, y(tick), right, y(tick)), fill=GRIDLINE)
        draw.text((4, y(tick) - 6), f"{tick:.3g}", fill=AXIS)
    draw.rectangle((left, top, right, bottom), outline=AXIS)
    draw.text((left, bottom + 8), f"step {first}", fill=AXIS)
    draw.text((right - 80, bottom + 8), f"step {history.steps[-1]}", fill=AXIS)
    draw.text((left, 8), title, fill=AXIS)
    for index, name in enumerate(history.names):
        colour = COLOURS[index % len(COLOURS)]
        points = [(x(s), y(row[index])) for s, row in zip(history.steps, history.values, strict=True)]
        points = [p for p, row in zip(points, history.values, strict=True) if math.isfinite(row[index])]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((left + 120 + 110 * index, 8), f"- {name}", fill=colour)
    return _png(image)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` (N, D) at fractions ``t`` (T,): (N, T, D)."""
    a_n, b_n = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(dim=1, keepdim=True).clamp(-1 + SLERP_EPS, 1 - SLERP_EPS))  # (N, 1)
    so = torch.sin(omega).unsqueeze(1)  # (N, 1, 1)
    tt = t.view(1, -1, 1)
    om = omega.unsqueeze(1)
    return (torch.sin((1 - tt) * om) / so) * a.unsqueeze(1) + (torch.sin(tt * om) / so) * b.unsqueeze(1)


def interpolation_png(
    net: torch.nn.Module,
    nz: int,
    *,
    seed: int,
    device: torch.device,
    rows: int = INTERPOLATION_ROWS,
    steps: int = INTERPOLATION_STEPS,
    labels: torch.Tensor | None = None,
) -> bytes:
    """``rows`` strips of ``steps`` images each, walking the latent sphere between two seeded latents.

    With ``labels`` (one class per row), each strip keeps its class while the latent moves.
    """
    generator = torch.Generator().manual_seed(seed)
    ends = torch.randn(2, rows, nz, generator=generator)
    path = slerp(ends[0], ends[1], torch.linspace(0, 1, steps)).reshape(rows * steps, nz, 1, 1)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            if labels is None:
                images = net(path.to(device))
            else:
                images = net(path.to(device), labels.to(device).repeat_interleave(steps))
    finally:
        net.train(was_training)
    grid = make_grid(images.cpu(), nrow=steps, padding=GRID_PADDING, normalize=True, value_range=IMAGE_VALUE_RANGE)
    pixels = grid.mul(PIXEL_MAX_VALUE).add_(PIXEL_ROUNDING).clamp_(0, PIXEL_MAX_VALUE).to(torch.uint8)
    return _png(Image.fromarray(pixels.permute(1, 2, 0).numpy()))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
