"""Design invariants that a refactor could silently break."""

from __future__ import annotations

import subprocess
import sys


def test_the_api_never_imports_torch() -> None:
    # Importing the app factory and the admin CLI in a fresh interpreter must not pull in torch.
    code = "import sys, services.api.app, shared.cli, workers.queue; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_job_messages_carry_only_the_job_id() -> None:
    from celery import Celery

    from workers.queue import RUN_JOB_TASK, job_id_from_task_id, send_run_job

    sent: list[tuple[str, dict[str, object]]] = []

    class Recorder(Celery):
        def send_task(self, name: str, **options: object) -> None:  # type: ignore[override]
            sent.append((name, options))

    send_run_job(Recorder("t"), job_id="0f7c9a52-0000-4000-8000-000000000001", queue="gpu")
    ((name, options),) = sent
    assert name == RUN_JOB_TASK
    assert options["args"] == ["0f7c9a52-0000-4000-8000-000000000001"]
    assert "kwargs" not in options
    assert job_id_from_task_id(str(options["task_id"])) == "0f7c9a52-0000-4000-8000-000000000001"
