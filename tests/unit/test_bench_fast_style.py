"""bench/fast_style.py at a tiny size: every measurement runs, and the three ratio lines are printed and parse.

The whole benchmark runs in process on the CPU (32 px, batch 1, a few steps), so that it cannot rot unnoticed.
Each test reads Given / When / Then."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bench import fast_style
from workers.style.vgg import build_vgg

TINY = [
    "--device",
    "cpu",
    "--size",
    "32",
    "--batch-size",
    "1",
    "--steps",
    "1",
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--train-steps",
    "2",
    "--train-size",
    "32",
    "--apply-size",
    "32",
    "--apply-repeats",
    "1",
    "--gatys-steps",
    "2",
]
NUMBER = r"(\d+(?:\.\d+)?)"
VERDICT = r"\(target [<>]= [\d.]+: (PASS|FAIL)\)"
RATIO_LINES = {
    "throughput": re.compile(rf"throughput ratio \(Atelier images/s / reference images/s\): {NUMBER} {VERDICT}"),
    "speed-up": re.compile(
        rf"apply speed-up \(Gatys seconds to the applied style loss / stylize seconds\): (?:> )?{NUMBER}x {VERDICT}"
    ),
    "quality": re.compile(rf"quality ratio \(Johnson style loss / Gatys 2-step style loss\): {NUMBER} {VERDICT}"),
}


def test_the_tiny_benchmark_prints_three_parseable_ratio_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given the benchmark at 32 px with a couple of steps everywhere, at the suite's thread count
    argv = [*TINY, "--threads", str(torch.get_num_threads()), "--out", str(tmp_path)]
    # When it runs
    status = fast_style.main(argv)
    # Then it measured (exit 0; no --strict), and its last three lines are the ratio lines, each with a number
    out = capsys.readouterr().out
    assert status == fast_style.EXIT_OK, out
    last = out.strip().splitlines()[-3:]
    for line, (name, pattern) in zip(last, RATIO_LINES.items(), strict=True):
        match = pattern.fullmatch(line)
        assert match is not None, f"{name}: {line!r}"
        assert float(match.group(1)) >= 0
    # And the machine, both throughput sides and the scores were reported
    assert out.startswith("machine: ")
    for fragment in ("reference (pytorch/examples fast_neural_style): ", "atelier (train_johnson", "content SSIM: "):
        assert fragment in out
    # And both styled pictures were saved
    for name in (fast_style.OUT_JOHNSON, fast_style.OUT_GATYS):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_an_exhausted_time_budget_is_a_failure_to_measure(capsys: pytest.CaptureFixture[str]) -> None:
    # Given no time at all
    argv = [*TINY, "--threads", str(torch.get_num_threads()), "--timeout-s", "0"]
    # When the benchmark runs
    status = fast_style.main(argv)
    # Then it stops at its first step and says it could not measure
    assert status == fast_style.EXIT_UNMEASURED
    assert "could not measure: DeadlineExceeded" in capsys.readouterr().out


def test_the_reference_vgg_computes_the_encoders_features() -> None:
    # Given Atelier's random VGG16 encoder and the reference's Vgg16 built from it
    encoder = build_vgg("vgg16", "random", seed=0, layers=["relu1_2", "relu2_2", "relu3_3", "relu4_3"])
    vgg = fast_style.reference_vgg(encoder)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # When both encode one image (the reference normalises 0-255 pixels itself)
    ours = encoder(image)
    theirs = vgg(fast_style.ref_normalize_batch(image * fast_style.PIXEL_SCALE))
    # Then the four slices are the encoder's layers: the same work through the same weights
    for layer, feature in zip(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], theirs, strict=True):
        torch.testing.assert_close(feature, ours[layer], rtol=1e-4, atol=1e-5)
