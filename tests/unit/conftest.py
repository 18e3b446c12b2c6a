"""Unit tests: pure code, in process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

THREADS_ENV = "ATELIER_TEST_TORCH_THREADS"  # run the unit suite at another thread count (make test-threads)


def unit_torch_threads() -> int:
    """The intra-op thread count the unit suite runs at: 1 unless ``ATELIER_TEST_TORCH_THREADS`` says."""
    return int(os.environ.get(THREADS_ENV, "1"))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread by default: fast on a small shared CPU, and the same thread count for every run."""
    try:
        import torch
    except ImportError:  # the API-only install has no torch
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(unit_torch_threads())
    yield
    torch.set_num_threads(previous)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker (GAN quality tests that train for minutes)."""
    config.addinivalue_line("markers", "slow: trains real models for minutes; deselect with -m 'not slow'")
