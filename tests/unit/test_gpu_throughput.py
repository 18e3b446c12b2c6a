"""bench/gpu_throughput.py in quick mode on the CPU (what CI's dry run of ``make gpu-check`` runs): every
section runs and every hook fires, the summary reads as the issue writes it, and the compiled runs'
child process is killed at its time box. Each test reads Given / When / Then."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from bench import gpu_throughput
from bench.gpu_throughput import QUICK, measure_compiled, run_throughput, summary_line

CPU = torch.device("cpu")
SUMMARY = re.compile(
    r"gan x[\d.]+ ref \(bs4 [\d.]+k? img/s, [\d.e-]+% of peak; bs8 .*; bs16 .*\); "
    r"style 32px x[\d.]+, 32px [\d.e-]+ s, 48px [\d.e-]+ s"
)


def test_the_quick_run_measures_every_section_and_writes_its_details(tmp_path: Path) -> None:
    # When the quick variant runs on the CPU
    result = run_throughput(CPU, quick=True, out=tmp_path)
    # Then no section failed, and the one-line summary has the ratio, three batch sizes and the style figures
    assert result["ok"], result.get("errors")
    assert SUMMARY.fullmatch(result["summary"]), result["summary"]
    gan = result["gan"]
    assert gan["ratio"]["ratio"] > 0 and len(gan["ratio"]["reference"]) == QUICK.ratio_repeats
    assert [b["batch_size"] for b in gan["batches"]] == list(QUICK.batch_sizes)
    assert gan["flops_per_image"] > 0
    assert result["peak_tflops"] == max(result["peak_bf16_tflops"], result["peak_fp32_tflops"]) > 0
    assert all(0 < b["share_of_peak"] < 1 for b in gan["batches"])
    assert gan["compiled"]["status"] == "skipped"
    assert [t["size"] for t in result["style"]["transfers"]] == list(QUICK.style_sizes)
    # And the details, a grid and a style output are under out, the JSON being what was returned
    assert json.loads((tmp_path / gpu_throughput.RESULT_FILE).read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "gan-bs8-final.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "style-32px.png").read_bytes().startswith(b"\x89PNG")


def test_flops_per_image_count_one_training_step() -> None:
    # Given the DCGAN at 16 px, nz = ngf = ndf = 8, one channel
    params = gpu_throughput._params(gpu_throughput.Config.for_steps(1, CPU, nz=8, ngf=8, ndf=8), 16)
    # When its step is counted
    flops = gpu_throughput.flops_per_image(params, CPU)
    # Then it is what the layer shapes give, 2 * Cin * Cout * k * k per pixel (the input's for G's
    # transposed convs, the output's for D's): G (ConvT 8->16 from 1x1, 16->8 from 4x4, 8->1 from 8x8),
    # D (Conv 1->8 to 8x8, 8->16 to 4x4, 16->1 to 1x1). A backward pass costs that again for the
    # weights' gradients and again for the inputs' (not for a first layer whose input needs none).
    k = 16
    g = [2 * 8 * 16 * k * 1, 2 * 16 * 8 * k * 16, 2 * 8 * 1 * k * 64]
    d = [2 * 1 * 8 * k * 64, 2 * 8 * 16 * k * 16, 2 * 16 * 1 * k * 1]
    g_step = sum(g) + sum(g) + sum(g[1:])  # G forward once; backward from the G step, the latent needs no grad
    d_forward = 3 * sum(d)  # the real batch, the detached fakes, the fakes of the G step
    d_update = 2 * (sum(d) + sum(d[1:]))  # D's loss on real and fake: weights, and inputs but the data's
    d_through = sum(d)  # the G step: through D (frozen) to the fakes
    assert flops == g_step + d_forward + d_update + d_through


def test_the_compiled_runs_are_killed_at_their_time_box(tmp_path: Path) -> None:
    # Given a plan with compiled runs and a time box shorter than the child's start
    plan = replace(QUICK, compile_batches=(8,))
    # When they are measured
    result = measure_compiled(plan, CPU, tmp_path, timeout_s=0.5)
    # Then the child was stopped and said so, with nothing measured
    assert result["status"] == "timed out after 0.5 s" and result["runs"] == []


def test_the_summary_reads_as_the_issue_writes_it() -> None:
    # Given a GPU-like result
    result = {
        "gan": {
            "ratio": {"reference": [12_000.0], "atelier": [40_800.0], "ratio": 3.4},
            "batches": [
                {"batch_size": 64, "images_per_s": 41_000.0, "share_of_peak": 0.021},
                {"batch_size": 256, "images_per_s": 90_500.0, "share_of_peak": 0.047},
                {"batch_size": 1024, "images_per_s": 250_000.0, "share_of_peak": 0.13},
            ],
            "compiled": {
                "status": "ok",
                "runs": [
                    {"batch_size": 64, "images_per_s": 61_200.0, "share_of_peak": 0.032},
                    {"batch_size": 1024, "images_per_s": 300_000.0, "share_of_peak": 0.156},
                ],
            },
        },
        "style": {
            "speed_up": {"size": 512, "speed_up": 2.6},
            "transfers": [{"size": 512, "seconds": 4.1}, {"size": 1024, "seconds": 17.02}],
        },
    }
    # Then the line has each figure once, in order
    assert summary_line(result) == (
        "gan x3.40 ref (bs64 41k img/s, 2.1% of peak; bs256 90.5k img/s, 4.7% of peak; bs1024 250k img/s, "
        "13% of peak); compiled bs64 61.2k img/s x5.10 ref, 3.2%; bs1024 300k img/s, 16%; "
        "style 512px x2.60, 512px 4.1 s, 1024px 17 s"
    )
    # And a failed section is named
    assert summary_line({"errors": {"style": "boom"}}) == "style FAILED"
