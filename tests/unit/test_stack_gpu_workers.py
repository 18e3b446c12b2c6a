"""`make up`'s training workers (services/stack.py): one per GPU, pinned with CUDA_VISIBLE_DEVICES, from
ATELIER_GPU_WORKERS. Pure functions; tests/e2e/test_stack.py checks the environment the processes get."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import stack
from services.stack import StackError, gpu_indices, training_workers


@pytest.mark.parametrize(("value", "expected"), [("0,1", ["0", "1"]), (" 3 , 1 ", ["3", "1"]), ("none", [])])
def test_the_gpu_list_is_read_as_given(value: str, expected: list[str]) -> None:
    assert gpu_indices({"ATELIER_GPU_WORKERS": value}) == expected


@pytest.mark.parametrize("value", ["0,0", "gpu0", "0;1", ",", "-1"])
def test_a_bad_gpu_list_is_an_error_naming_the_setting(value: str) -> None:
    with pytest.raises(StackError, match="ATELIER_GPU_WORKERS: expected distinct GPU indices"):
        gpu_indices({"ATELIER_GPU_WORKERS": value})


def test_auto_asks_nvidia_smi_and_a_machine_without_it_gets_one_unpinned_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given no nvidia-smi on the PATH, When the default (auto) is read, Then no GPU is listed
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_indices({}) == []
    # Given an nvidia-smi that lists two GPUs, Then both are
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    assert gpu_indices({"ATELIER_GPU_WORKERS": "auto"}) == ["0", "1"]
    # And one that fails lists none
    fake.write_text("#!/bin/sh\nexit 9\n")
    assert stack.detected_gpus() == []


def test_each_gpu_gets_a_worker_pinned_to_it_and_named_after_it() -> None:
    base = {"ATELIER_DATABASE_URL": "postgresql://db", "PATH": "/bin"}
    workers = training_workers(base, ["0", "2"])
    assert [name for name, _env in workers] == ["worker-gpu0", "worker-gpu2"]
    for (_name, env), gpu in zip(workers, ["0", "2"], strict=True):
        assert env["CUDA_VISIBLE_DEVICES"] == gpu
        assert env["ATELIER_WORKER_NAME"].startswith(f"gpu{gpu}@")
        assert env["ATELIER_DATABASE_URL"] == "postgresql://db"
    # And without GPUs, one worker with the environment as it is
    assert training_workers(base, []) == [("worker", base)]
