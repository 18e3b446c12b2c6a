"""Fault tests reuse the end-to-end worker fixtures."""

from tests.e2e.conftest import beat, cpu_worker, worker

__all__ = ["beat", "cpu_worker", "worker"]
