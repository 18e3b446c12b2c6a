"""The README's promise, run literally: `make up`, then its curl walk-through, succeed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.services import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8000"
READY_TIMEOUT_S = 120.0
WALKTHROUGH_TIMEOUT_S = 420.0
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def walkthrough_blocks() -> list[str]:
    """The README's bash blocks that talk to the API (the GAN run, then the style transfer)."""
    blocks = BASH_BLOCK.findall((REPO / "README.md").read_text())
    talking = [b for b in blocks if "/v1/jobs" in b and "my-images.zip" not in b]
    assert len(talking) == 2, "expected the GAN block and the style block in the README"
    return talking


def test_make_up_then_the_readme_walkthrough() -> None:
    # Given `make up` running on a fresh data dir (on a free port: 8000 may be taken)
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="atelier-readme-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env["ATELIER_TORCH_THREADS"] = "1"  # the test process shares two cores with the stack
    log = (work / "make-up.log").open("wb")
    proc = subprocess.Popen(
        ["make", "-C", str(REPO), "up", f"ARGS=--port {port} --data-dir {work / '.atelier'}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, (work / "make-up.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail(f"make up not ready in {READY_TIMEOUT_S}s:\n{(work / 'make-up.log').read_text()[-3000:]}")
        assert (work / ".atelier" / "api-key").is_file()
        # When the walk-through's commands run, as written, from the directory holding .atelier/
        script = "set -euo pipefail\n" + "\n".join(walkthrough_blocks()).replace(README_URL, f"http://127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=WALKTHROUGH_TIMEOUT_S,
            check=False,
        )
        # Then every command succeeded and the files it downloads are real PNGs
        assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        for name in ("grid.png", "styled.png"):
            with Image.open(work / name) as img:
                assert img.format == "PNG"
        assert "samples/" in done.stdout or "generator.pt" in done.stdout
    finally:
        # And Ctrl-C stops everything it started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            # make itself dies of the SIGINT it forwarded; the stack under it must have stopped cleanly
            assert proc.wait(60) in (0, -signal.SIGINT)
            # (make's own "Leaving directory" line may follow, if it outlived the stack's exit)
            lines = [line for line in (work / "make-up.log").read_text().splitlines() if line.strip()]
            assert [line for line in lines if not line.startswith("make")][-1] == "atelier: stopped", lines[-5:]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
