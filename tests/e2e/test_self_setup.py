"""``make test`` sets up what it needs on a fresh machine: with no Postgres or Redis where the
tests look (both pointed at closed ports), the session starts the embedded ones, as ``make up``
does, runs real workers against them, and stops them when it ends."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from tests.support import services
from tests.support.local_services import PG_ENV, REDIS_ENV

pytestmark = pytest.mark.e2e

# One API test and one end-to-end test with a real worker, style transfer and a cancel.
INNER_TESTS = (
    "tests/integration/test_api.py::test_submit_then_poll",
    "tests/e2e/test_pipeline.py::test_style_transfer_end_to_end",
)
INNER_DEADLINE_S = 420


def _embedded_postgres_running() -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and any("atelier-test-services-" in part for part in p.info["cmdline"] or [])
    ]


def test_the_suite_starts_embedded_postgres_and_redis_when_none_answers() -> None:
    # Given a machine where nothing answers at the test Postgres and Redis addresses
    closed = services.free_port()
    env = {
        **os.environ,
        PG_ENV: f"postgresql://postgres@127.0.0.1:{closed}/postgres",
        REDIS_ENV: f"redis://127.0.0.1:{closed}",
    }
    before = set(_embedded_postgres_running())
    # When tests that need both, and a real worker, run there
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *INNER_TESTS],
        env=env,
        capture_output=True,
        text=True,
        timeout=INNER_DEADLINE_S,
        cwd=services.REPO,
    )
    # Then they pass, on servers the session started and stopped again
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{len(INNER_TESTS)} passed" in done.stdout
    for service in ("postgres", "redis"):
        line = next(x for x in done.stdout.splitlines() if x.startswith(f"test {service}: "))
        assert "(embedded, started by this session" in line and not line.split()[2].rstrip("/").endswith(f":{closed}")
    assert set(_embedded_postgres_running()) == before
