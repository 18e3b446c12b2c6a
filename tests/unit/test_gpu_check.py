"""bench/gpu_check.py's pure parts: the case list covers every option the params models allow, the
summary line, failure recording, the wheel pins, and the import closure the GPU machine can satisfy.

The expected options are read from the params models (their Literal and bool fields, the lesson
preset's remedies, the built-in datasets and images), so an option added there without a smoke case
fails here. Each test reads Given / When / Then."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
import typing
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from pydantic import BaseModel

from bench import gpu_check
from bench.gpu_check import FAILED, GAN, NOT_RUN, OK, STYLE, Case, CaseResult, Context
from shared.jobs.gan_train import GAN_PRESETS, GanTrainParams
from shared.jobs.params import BUILTIN_DATASETS, BUILTIN_IMAGES, GAN_IMAGE_SIZES, TORCHVISION_DATASETS
from shared.jobs.style_transfer import STYLE_WEIGHT_KINDS, StyleTransferParams
from shared.storage import LocalObjectStore

REPO = Path(__file__).resolve().parents[2]
GPU_CASES = gpu_check.cases(quick=False, cuda=True)
CPU_CASES = gpu_check.cases(quick=True, cuda=False)
# What the check never runs, and why: torchvision sets need a download or a data cache, ImageNet weights a download.
NEVER_RUN = {"datasets": set(TORCHVISION_DATASETS), "weights": {"imagenet"}}
TINY_POINTS = {"dataset": "ring8", "steps": 2, "batch_size": 8, "sample_every": 2, "checkpoint_every": 2}
UNKNOWN_UPLOAD = "00000000-0000-4000-8000-0000000000ff"  # a valid upload id, but no built-in dataset


def _validated(cases: list[Case], job_type: str, model: type[BaseModel]) -> list[Any]:
    return [model.model_validate(case.params) for case in cases if case.job_type == job_type]


def _option_values(model: type[BaseModel]) -> dict[str, set[Any]]:
    """Every Literal or bool field of ``model`` (also inside Optional and list) and the values it allows."""
    options: dict[str, set[Any]] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # Optional[X]
            annotation = next(a for a in args if a is not type(None))
            args = typing.get_args(annotation)
        if typing.get_origin(annotation) is list:
            annotation = args[0]
            args = typing.get_args(annotation)
        if typing.get_origin(annotation) is Literal:
            options[name] = set(args)
        elif annotation is bool:
            options[name] = {True, False}
    return options


def _seen(params: list[Any], name: str) -> set[Any]:
    values: set[Any] = set()
    for p in params:
        value = p.resolved_channels() if name == "channels" else getattr(p, name)
        values |= set(value) if isinstance(value, list) else {value}
    return values


@pytest.mark.parametrize(("job_type", "model"), [(GAN, GanTrainParams), (STYLE, StyleTransferParams)])
def test_every_literal_and_bool_option_has_a_case(job_type: str, model: type[BaseModel]) -> None:
    # Given the GPU case list, validated as the API validates a submit
    params = _validated(GPU_CASES, job_type, model)
    # Then every value of every Literal and bool field of the params model runs in some case
    missing = {
        name: sorted(map(str, allowed - _seen(params, name)))
        for name, allowed in _option_values(model).items()
        if allowed - _seen(params, name)
    }
    assert missing == {}, f"{job_type} options without a smoke case in bench/gpu_check.py: {missing}"


def test_every_remedy_and_optimiser_setting_of_the_lesson_is_changed_by_some_case() -> None:
    # Given the lesson preset, which lists every remedy switched off (and the plain Adam settings)
    lesson = GAN_PRESETS["lesson"]
    params = _validated(GPU_CASES, GAN, GanTrainParams)
    # Then each of its fields takes another value in some case
    unchanged = [name for name, off in lesson.items() if all(getattr(p, name) == off for p in params)]
    assert unchanged == []


def test_every_image_size_builtin_dataset_and_builtin_image_runs() -> None:
    gan = _validated(GPU_CASES, GAN, GanTrainParams)
    style = _validated(GPU_CASES, STYLE, StyleTransferParams)
    assert {p.image_size for p in gan if p.arch == "dcgan"} == set(GAN_IMAGE_SIZES)
    assert gpu_check.GAN_SIZES == GAN_IMAGE_SIZES
    assert {p.dataset for p in gan} == set(BUILTIN_DATASETS) - NEVER_RUN["datasets"]
    assert {name for p in style for name in [p.content, *p.styles]} == set(BUILTIN_IMAGES)
    assert {"weights/uploaded"} <= {c.name.removeprefix("style/") for c in GPU_CASES}
    assert {p.weights for p in style if p.weights in STYLE_WEIGHT_KINDS} == set(STYLE_WEIGHT_KINDS) - NEVER_RUN[
        "weights"
    ]


def test_multi_style_scales_resume_and_oom_have_cases_for_both_engines() -> None:
    style = _validated(GPU_CASES, STYLE, StyleTransferParams)
    assert any(len(p.styles) > 1 and p.style_blend for p in style)
    assert any(p.scales and len(p.scales) > 1 for p in style)
    assert any(p.snapshot_every for p in style)
    checks = {(c.job_type, c.check) for c in GPU_CASES}
    assert checks == set(gpu_check.RUNNERS)


def test_the_cpu_dry_run_has_the_gpu_cases_but_the_compiled_one() -> None:
    # Given both lists, Then case names are unique, and the dry run skips only torch.compile (minutes on a CPU)
    for listed in (GPU_CASES, CPU_CASES):
        names = [c.name for c in listed]
        assert len(names) == len(set(names))
    assert [c.name for c in GPU_CASES if c.name not in {c.name for c in CPU_CASES}] == ["gan/option/compile"]
    # ... and every CPU params set validates too (the quick sizes, the simulated OOM's small job)
    assert len(_validated(CPU_CASES, GAN, GanTrainParams) + _validated(CPU_CASES, STYLE, StyleTransferParams)) == len(
        CPU_CASES
    )


def test_on_cuda_the_oom_cases_ask_for_far_more_than_the_filled_card_leaves() -> None:
    from shared.jobs.memory import gan_memory_bytes, style_memory_bytes

    left = gpu_check.OOM_HEADROOM_BYTES
    oom = {c.job_type: c for c in GPU_CASES if c.check == gpu_check.OOM}
    # The estimates are 1.2 to 2x a measured peak: four times what the filled card leaves means a real OOM
    assert gan_memory_bytes(GanTrainParams.model_validate(oom[GAN].params)) > 4 * left
    assert style_memory_bytes(StyleTransferParams.model_validate(oom[STYLE].params)) > 4 * left
    # ... yet small enough to fail fast: nothing like the whole-card jobs that autotuned for minutes on an H200
    assert gan_memory_bytes(GanTrainParams.model_validate(oom[GAN].params)) < 64 * 2**30
    assert style_memory_bytes(StyleTransferParams.model_validate(oom[STYLE].params)) < 64 * 2**30


def _result(name: str, status: str, **fields: Any) -> CaseResult:
    return CaseResult(name, GAN, gpu_check.RUN, {"steps": 1}, status=status, **fields)


CUDA = {"device": "cuda", "name": "NVIDIA H200"}
CPU = {"device": "cpu", "name": "cpu"}
THROUGHPUT_OK = {"status": OK, "summary": "gan x3.4 ref (bs64 41k img/s, 2.1% of peak); style 512px x2.6"}


def test_the_summary_line_of_a_clean_gpu_run() -> None:
    results = [_result(f"gan/{i}", OK) for i in range(38)]
    assert gpu_check.format_summary(results, THROUGHPUT_OK, CUDA) == (
        "gpu-check: smoke 38/38 ok; gan x3.4 ref (bs64 41k img/s, 2.1% of peak); style 512px x2.6; card NVIDIA H200"
    )
    assert gpu_check.exit_status(results) == 0


def test_the_summary_line_names_failures_and_counts_cases_not_run() -> None:
    results = [_result("a", OK), *(_result(f"f{i}", FAILED) for i in range(4)), _result("late", NOT_RUN)]
    line = gpu_check.format_summary(results, {"status": NOT_RUN, "reason": "deadline"}, CPU)
    assert line == (
        "gpu-check: smoke 1/6 ok (4 failed: f0, f1, f2, ...; 1 not run); throughput not run (deadline); "
        "card cpu (dry run)"
    )
    assert gpu_check.exit_status(results) == 1
    assert gpu_check.exit_status([_result("a", OK), _result("late", NOT_RUN)]) == 1


@pytest.mark.parametrize(
    ("throughput", "part"),
    [
        (None, "throughput not run"),
        ({"status": "missing"}, "throughput missing (bench.gpu_throughput not found)"),
        (
            {"status": FAILED, "error": {"type": "builtins.RuntimeError", "message": "bad\ncard"}},
            "throughput failed (RuntimeError: bad card)",
        ),
        ({"status": OK, "summary": "gan x1\nstyle x2"}, "gan x1 style x2"),
    ],
)
def test_the_summary_line_stays_one_line_whatever_the_throughput_did(
    throughput: dict[str, Any] | None, part: str
) -> None:
    line = gpu_check.format_summary([_result("a", OK)], throughput, CPU)
    assert line == f"gpu-check: smoke 1/1 ok; {part}; card cpu (dry run)"


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(
        device=torch.device("cpu"), store=LocalObjectStore(tmp_path / "store"), deadline=time.monotonic() + 600
    )


def test_a_failing_case_records_its_error_and_params_and_the_run_goes_on(ctx: Context, tmp_path: Path) -> None:
    # Given a case the API refuses, one the library refuses, and a tiny good one
    refused = Case("gan/refused", GAN, TINY_POINTS | {"arch": "transformer"})
    unusable = Case("gan/unusable", GAN, TINY_POINTS | {"dataset": UNKNOWN_UPLOAD, "arch": "dcgan"})
    good = Case("gan/good", GAN, TINY_POINTS)
    seen: list[str] = []
    # When they run in that order
    results = gpu_check.run_cases([refused, unusable, good], ctx, on_result=lambda r: seen.append(r.name))
    # Then each failure names its exception and keeps the params that hit it, and the good case still ran
    assert [r.status for r in results] == [FAILED, FAILED, OK]
    assert seen == ["gan/refused", "gan/unusable", "gan/good"]
    assert results[0].error is not None and results[0].error["type"] == "pydantic_core._pydantic_core.ValidationError"
    assert "arch" in results[0].error["message"]
    assert results[1].error is not None and results[1].error["type"] == "builtins.ValueError"
    assert results[1].params == unusable.params
    assert results[2].details["artifacts"] >= 3
    # ... and the report shows each failure with its params
    document = gpu_check.results_document(
        started=gpu_check.datetime.now(gpu_check.UTC),
        seconds=1.0,
        args={},
        machine=CPU,
        results=results,
        throughput=None,
    )
    gpu_check.write_results(tmp_path, document)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["smoke"] == {"total": 3, OK: 1, FAILED: 2, "not_run": 0}
    assert saved["cases"][1]["params"]["dataset"] == UNKNOWN_UPLOAD
    report = (tmp_path / "report.md").read_text()
    assert "### gan/unusable" in report and f'"dataset": "{UNKNOWN_UPLOAD}"' in report


def test_cases_past_the_deadline_are_recorded_as_not_run(ctx: Context) -> None:
    ctx.deadline = time.monotonic() - 1
    (result,) = gpu_check.run_cases([Case("gan/late", GAN, TINY_POINTS)], ctx, on_result=lambda r: None)
    assert (result.status, result.details) == (NOT_RUN, {"reason": "deadline"})


def test_cases_are_selected_by_pattern() -> None:
    names = [c.name for c in gpu_check.select_cases(CPU_CASES, ["gan/loss/*", "style/resume"])]
    assert names == ["gan/loss/bce", "gan/loss/hinge", "gan/loss/wgan-gp", "style/resume"]
    assert gpu_check.select_cases(CPU_CASES, []) == CPU_CASES


def test_the_wheel_pins_are_the_versions_ci_runs() -> None:
    # Given bench/gpu-wheels.txt, Then each pin is exact and equals the version in this venv
    pins = dict(line.split("==") for line in gpu_check.wheel_requirements())
    assert pins == {name: metadata.version(name) for name in pins}
    assert {"pydantic", "pydantic-core"} <= set(pins)


def test_the_wheels_go_on_the_path_only_for_the_python_they_were_downloaded_for(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    used = gpu_check.use_wheels(site)
    try:
        if sys.version_info[:2] == gpu_check.WHEELS_PYTHON:
            assert used == str(site) and sys.path[0] == str(site)
        else:  # pydantic-core is compiled for one Python: the venv's own must win here
            assert used is None and str(site) not in sys.path
    finally:
        if str(site) in sys.path:
            sys.path.remove(str(site))


def test_a_refused_module_is_absent_to_imports_and_to_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    # Given an importable module
    (tmp_path / "atelier_gpu_probe.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # When it is refused
    assert gpu_check.refuse_imports(["atelier_gpu_probe"]) == ["atelier_gpu_probe"]
    try:
        # Then importing it fails, and an optional-import probe finds nothing
        with pytest.raises(ModuleNotFoundError):
            import atelier_gpu_probe  # noqa: F401
        assert importlib.util.find_spec("atelier_gpu_probe") is None
    finally:
        del sys.modules["atelier_gpu_probe"]


def test_the_check_imports_nothing_outside_the_stock_python_and_the_wheels() -> None:
    # Given a fresh interpreter where only the stock distributions' modules and the wheels' may be imported
    code = (
        "import json, sys\n"
        "from bench import gpu_check as g\n"
        "g.refuse_server_packages(); g.allow_only_stock()\n"
        "loaded = g.import_closure()\n"
        "try:\n"
        "    import sqlalchemy\n"
        "except ModuleNotFoundError:\n"
        "    refused = True\n"
        "else:\n"
        "    refused = False\n"
        "print(json.dumps({'loaded': loaded, 'refused': refused}))\n"
    )
    # When it imports every module the check runs
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    # Then that works, and none of the server's packages was needed (nor could be had)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["refused"] is True
    assert not set(result["loaded"]) & gpu_check.SERVER_PACKAGES
    assert {"torch", "pydantic", "pydantic_core"} <= set(result["loaded"])


def test_torch_versions_parse() -> None:
    assert gpu_check.torch_version("2.11.0+cu130") == (2, 11)
    assert gpu_check.torch_version("2.14.1") >= gpu_check.MIN_TORCH
    assert gpu_check.torch_version("2.9.0a0+git") < gpu_check.MIN_TORCH
