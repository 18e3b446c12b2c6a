"""What machine a benchmark ran on, for its report. Standard library only: the GPU machine's stock Python
imports it too (bench/gpu_check.py)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name, as /proc/cpuinfo (and lscpu) give it; the platform's names elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
