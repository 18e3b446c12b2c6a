"""Design invariants that a refactor could silently break."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest


def test_the_api_never_imports_torch() -> None:
    # Importing the app factory and the admin CLI in a fresh interpreter must not pull in torch.
    code = "import sys, services.api.app, shared.cli, shared.queue; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_job_messages_carry_only_the_job_id() -> None:
    from celery import Celery

    from shared.queue import RUN_JOB_TASK, job_id_from_task_id, send_run_job

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


REPO = Path(__file__).resolve().parents[2]
# What the pure training libraries must not reach: the database, the object store, Celery, the settings.
ENGINE_FORBIDDEN = (
    "shared.db",
    "shared.storage",
    "shared.config",
    "shared.queue",
    "celery",
    "kombu",
    "sqlalchemy",
    "minio",
    "redis",
)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports are not used in this project)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        bad = sorted(n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(REPO))] = bad
    return found


def test_services_never_import_workers() -> None:
    # The message contract (shared/queue.py) is the only thing the API shares with the workers.
    assert _offenders("services", ("workers",)) == {}


@pytest.mark.parametrize("engine", ["workers/gan", "workers/style"])
def test_the_training_libraries_know_nothing_of_db_storage_celery_or_config(engine: str) -> None:
    assert _offenders(engine, ENGINE_FORBIDDEN) == {}


def test_the_import_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    # The check itself can fail: a module that imports the database is reported
    (tmp_path / "bad.py").write_text("from shared.db import queries\nimport torch\n")
    assert "shared.db.queries" in _imports(tmp_path / "bad.py")
