"""The GPU-only branches, reached on a CPU machine by faking CUDA only where the code asks the device
what it can do (``torch.cuda.is_available``, ``is_bf16_supported``, ``get_device_capability``); the
tensors stay on the CPU. The GPU's speed itself is ``make gpu-check``'s to measure (bench/gpu_throughput.py).

Each test reads Given / When / Then."""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from shared.errors import JobFailed
from shared.jobs.gan_train import GanTrainParams
from shared.jobs.style_transfer import StyleTransferParams
from tests.support.resume import stopped_and_resumed
from workers import training
from workers.engines import GAN_REMEDY, pick_device
from workers.gan.data import load_builtin, load_points
from workers.gan.loop import GENERATOR_ARTIFACT, train
from workers.gan.state import DataOrder, Models
from workers.hooks import InMemoryHooks
from workers.oom import TOO_LARGE, too_large_on_oom
from workers.style.vgg import build_vgg
from workers.training import (
    CUDA_COMPILE_MODE,
    SpeedPath,
    StepCompile,
    cudnn_autotune,
    fused_adam,
    to_device,
)

transfer_module = importlib.import_module("workers.style.transfer")  # the module, not the re-exported function

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
H200 = (9, 0)
PASCAL = (6, 1)  # older than Triton supports
SIZE = 16
COMPARE = {"rtol": 1e-4, "atol": 1e-5}  # eager against the traced step: the same ops, possibly other kernels


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A CUDA machine with bf16 and an H200's compute capability, as far as the capability queries say."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args, **kwargs: H200)
    yield monkeypatch


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """No compiled code from another test in, none of this test's out."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_builtin("digits", image_size=SIZE, channels=1)


def _params(**overrides: Any) -> GanTrainParams:
    values: dict[str, Any] = {
        "dataset": "digits", "image_size": SIZE, "steps": 6, "batch_size": 16, "nz": 8, "ngf": 8, "ndf": 8,
        "seed": 5, "log_every": 1, "checkpoint_every": 3, "sample_every": 3, "image_metrics": False,
    }  # fmt: skip
    return GanTrainParams(**(values | overrides))


# -- Device and speed path ------------------------------------------------------------------


def test_a_worker_on_a_cuda_machine_picks_the_gpu_and_the_bf16_channels_last_path(
    fake_cuda: pytest.MonkeyPatch,
) -> None:
    # Given a machine whose capability queries say CUDA with bf16
    # When the engine picks its device and the loops their speed path under precision auto
    device = pick_device("auto")
    speed = SpeedPath.of(GanTrainParams().precision, device)
    # Then it is the GPU, with bf16 autocast and channels_last
    assert device == CUDA
    assert speed == SpeedPath(bf16=True, channels_last=True, device_type="cuda")
    # And a GPU without bf16 keeps channels_last in fp32, and fp32 is honoured
    fake_cuda.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert SpeedPath.of("auto", CUDA) == SpeedPath(bf16=False, channels_last=True, device_type="cuda")
    assert not SpeedPath.of("fp32", CUDA).bf16


def test_without_cuda_the_cpu_path_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a machine without CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # When the engine picks its device
    device = pick_device("auto")
    # Then it is the CPU in fp32, with torch's default Adam, no cuDNN autotuning and no copies
    assert device == CPU
    assert SpeedPath.of("auto", device) == SpeedPath(bf16=False, channels_last=False, device_type="cpu")
    assert fused_adam(device) is None
    models = Models.create(_params(), 1, device)
    assert [o.defaults["fused"] for o in (models.opt_g, models.opt_d)] == [None, None]
    before = torch.backends.cudnn.benchmark
    with cudnn_autotune(device):
        assert torch.backends.cudnn.benchmark == before
    batch = torch.arange(6)
    assert to_device(batch, device) is batch


def test_the_gpu_gets_fused_adam_and_cudnn_autotuning_restored_after(fake_cuda: pytest.MonkeyPatch) -> None:
    # Given the device a CUDA worker picks
    device = pick_device("auto")
    # Then its optimisers are Adam's fused kernel
    assert fused_adam(device) is True
    # And cuDNN times its algorithms for the loop's fixed shapes while it runs, and not after
    fake_cuda.setattr(torch.backends.cudnn, "benchmark", False)
    with cudnn_autotune(device):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark is False


def test_the_data_order_is_the_same_wherever_the_indices_live() -> None:
    # Given the order of a 10-image dataset in batches of 4, kept with the data (here the CPU)
    on_data = DataOrder(size=10, batch_size=4, seed=1, device=CPU)
    default = DataOrder(size=10, batch_size=4, seed=1)
    # Then every batch, across epoch boundaries, is the one the default order gives
    for step in range(1, 8):
        assert torch.equal(on_data.indices(step), default.indices(step))
        assert on_data.indices(step).device == CPU


# -- The compiled step --------------------------------------------------------------------------


def test_compile_is_off_unless_asked_and_never_asks_the_gpu_then(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a capability query that must not be reached
    def unreachable(*args: object, **kwargs: object) -> tuple[int, int]:
        raise AssertionError("asked the GPU although compile is off")

    monkeypatch.setattr(torch.cuda, "get_device_capability", unreachable)
    # When compile is left off
    choice = StepCompile.of(GanTrainParams().compile, CUDA)
    # Then the step runs eagerly and the nets are the nets
    assert choice == StepCompile(enabled=False)
    net = torch.nn.Linear(2, 2)
    assert choice.apply(net) is net


def test_compile_on_a_gpu_uses_autotuned_kernels_and_refuses_gpus_triton_cannot_drive(
    fake_cuda: pytest.MonkeyPatch,
) -> None:
    # Given compile asked for on an H200
    choice = StepCompile.of(True, CUDA)
    # Then the step is compiled with autotuned kernels and without CUDA graphs
    assert choice == StepCompile(enabled=True, mode=CUDA_COMPILE_MODE)
    assert "cudagraphs" in CUDA_COMPILE_MODE and CUDA_COMPILE_MODE.startswith("max-autotune")
    # And on a GPU older than Triton supports it runs eagerly, saying why
    fake_cuda.setattr(torch.cuda, "get_device_capability", lambda *args, **kwargs: PASCAL)
    old = StepCompile.of(True, CUDA)
    assert not old.enabled and old.note is not None and "6.1" in old.note
    # And on a CPU it is inductor's default mode
    assert StepCompile.of(True, CPU) == StepCompile(enabled=True, mode=None)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"arch": "msg"}, "arch 'dcgan' and 'mlp'"),
        ({"arch": "progressive"}, "arch 'dcgan' and 'mlp'"),
        ({"loss": "wgan-gp"}, "double backward of loss 'wgan-gp'"),
        ({"r1_gamma": 1.0}, "double backward of r1_gamma"),
        ({"compile": "yes"}, "valid boolean"),
    ],
)
def test_compile_is_refused_where_it_cannot_run_naming_the_field(values: dict[str, Any], needle: str) -> None:
    # When a job asks for compile where it cannot work
    with pytest.raises(ValidationError) as caught:
        GanTrainParams(**({"compile": True} | values))
    # Then the error names the compile field and says why
    errors = caught.value.errors()
    assert [e["loc"][-1] for e in errors] == ["compile"], errors
    assert needle in errors[0]["msg"]


def test_compile_is_a_described_default_off_param_that_old_jobs_parse_without() -> None:
    field = GanTrainParams.model_fields["compile"]
    assert field.default is False and "max-autotune-no-cudagraphs" in (field.description or "")
    assert GanTrainParams.from_stored(GanTrainParams().model_dump(exclude={"compile"})).compile is False
    for arch in ("dcgan", "mlp"):
        assert GanTrainParams(arch=arch, compile=True).compile


def test_the_compiled_step_trains_like_the_eager_one_and_resumes_exactly(
    digits: torch.Tensor, monkeypatch: pytest.MonkeyPatch, fresh_dynamo: None
) -> None:
    # Given the loop's G and D passes traced by dynamo and AOT autograd (the compile path without
    # inductor's code generation, which takes minutes on a CPU and is gpu-check's to run), and
    # the same run eager and with another seed
    monkeypatch.setattr(training, "COMPILE_BACKEND", "aot_eager")
    eager, compiled, other = InMemoryHooks(), InMemoryHooks(), InMemoryHooks()
    train(_params(), digits, eager)
    train(_params(compile=True), digits, compiled)
    train(_params(seed=6), digits, other)
    # Then the compiled run trained: finite losses, every step logged, the same artifacts
    d_loss = compiled.series("d_loss")
    assert [s for s, _ in d_loss] == list(range(1, 7)) and all(math.isfinite(v) for _, v in d_loss)
    assert set(compiled.artifacts) == set(eager.artifacts) and not compiled.warnings
    # And it computes what the eager step does, to far within how much another seed moves the losses
    for name in ("d_loss", "g_loss", "grad_norm_d"):
        got, want = torch.tensor(compiled.series(name)), torch.tensor(eager.series(name))
        torch.testing.assert_close(got, want, **COMPARE)
        assert (torch.tensor(other.series(name)) - want).abs().max() > 1000 * COMPARE["atol"]
    # And its checkpoints and generator.pt hold the plain nets' state_dicts
    weights = torch.load(io.BytesIO(compiled.artifacts[GENERATOR_ARTIFACT][0]), weights_only=True)
    plain = torch.load(io.BytesIO(eager.artifacts[GENERATOR_ARTIFACT][0]), weights_only=True)
    assert weights.keys() == plain.keys()
    # And a compiled run stopped at step 4 and resumed ends bit-identical to the uninterrupted one
    cut = stopped_and_resumed(lambda hooks: train(_params(compile=True), digits, hooks), stop_at=4)
    assert cut.artifacts[GENERATOR_ARTIFACT][0] == compiled.artifacts[GENERATOR_ARTIFACT][0]


@pytest.mark.parametrize(
    ("arch", "dataset"),
    [("mlp", "ring8"), ("mlp", "digits"), ("dcgan", "digits"), ("progressive", "digits"), ("msg", "digits")],
)
def test_the_gpu_speed_path_trains_every_architecture(
    arch: str, dataset: str, digits: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given CUDA's speed path (bf16 autocast and channels_last) on this CPU, with nearest upsampling
    # giving fp32 as CUDA's autocast does (the H200's gpu-check found 2-D points sent to channels_last
    # and the progressive fade-in blending fp32 with bf16, 2026-11-30)
    cuda_path = SpeedPath(bf16=True, channels_last=True, device_type="cpu")
    monkeypatch.setattr(SpeedPath, "of", classmethod(lambda cls, precision, device: cuda_path))
    interpolate = torch.nn.functional.interpolate
    monkeypatch.setattr(torch.nn.functional, "interpolate", lambda *a, **k: interpolate(*a, **k).float())
    data = load_points(dataset) if dataset == "ring8" else digits
    size = {} if dataset == "digits" else {"image_size": 32}
    params = _params(arch=arch, dataset=dataset, steps=12, **size)  # progressive: 4 steps a size, 2 fading in
    hooks = InMemoryHooks()
    # When it trains
    train(params, data, hooks)
    # Then every step ran with finite losses, and the generator came out
    d_loss = hooks.series("d_loss")
    assert [s for s, _ in d_loss] == list(range(1, params.steps + 1))
    assert all(math.isfinite(v) for _, v in d_loss + hooks.series("g_loss"))
    assert GENERATOR_ARTIFACT in hooks.artifacts


# -- Style ----------------------------------------------------------------------------------------


def test_the_style_encoder_runs_in_bf16_channels_last_on_a_gpu(fake_cuda: pytest.MonkeyPatch) -> None:
    # Given a style job at precision auto and the device a CUDA worker picks
    params = StyleTransferParams(content="astronaut", styles=["coffee"], weights="random")
    device = pick_device("auto")
    encoder = build_vgg("vgg19", "random", seed=0, layers=["relu1_1"])
    # When the loop chooses its speed path and wraps its encoder
    speed = SpeedPath.of(params.precision, device)
    encode = transfer_module.encode_on(speed, encoder)
    # Then the encoder runs under bf16 autocast and channels_last (its features come back in fp32)
    assert (speed.bf16, speed.channels_last, speed.precision) == (True, True, "bf16")
    assert encode is not encoder
    # And on a CPU at auto the encoder is used as it is
    assert transfer_module.encode_on(SpeedPath.of(params.precision, CPU), encoder) is encoder


# -- Out of memory --------------------------------------------------------------------------------


class OutOfMemoryAt(InMemoryHooks):
    """Raises what the CUDA caching allocator raises when a step's tensors do not fit, at ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def report_progress(self, step: int, total: int) -> None:
        super().report_progress(step, total)
        if step == self.step:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139.80 GiB total)")


def test_running_out_of_device_memory_fails_the_job_as_too_large(digits: torch.Tensor) -> None:
    # Given a GAN run that runs out of device memory at step 2, under the executor's mapping
    params = _params(batch_size=32)
    # When it trains
    with (
        pytest.raises(JobFailed) as caught,
        too_large_on_oom(CUDA, what=f"at batch_size {params.batch_size}, {params.image_size} px", remedy=GAN_REMEDY),
    ):
        train(params, digits, OutOfMemoryAt(2))
    # Then the job fails as too_large, naming the device, the batch, torch's message and the remedy
    failure = caught.value
    assert failure.code == TOO_LARGE == "too_large"
    assert str(failure).startswith("out of cuda memory at batch_size 32, 16 px (CUDA out of memory. Tried")
    assert str(failure).endswith(GAN_REMEDY)
    assert isinstance(failure.__cause__, torch.OutOfMemoryError)
