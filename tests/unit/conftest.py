"""Unit tests: pure code, in process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: fast on a small shared CPU, and the same thread count for every run."""
    try:
        import torch
    except ImportError:  # the API-only install has no torch
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker (GAN quality tests that train for minutes)."""
    config.addinivalue_line("markers", "slow: trains real models for minutes; deselect with -m 'not slow'")
