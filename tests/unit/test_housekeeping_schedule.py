"""Beat schedules every housekeeping task on the cpu queue, each at its configured period (reconciler, orphan
collector, retention), and the purge is routed there too: none of them waits behind training."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.config import Settings
from shared.queue import COLLECT_ORPHANS_TASK, PURGE_TASK, RECONCILE_TASK, RETENTION_TASK, make_celery


def test_housekeeping_runs_on_the_cpu_queue_at_its_configured_periods() -> None:
    settings = Settings(reconcile_period_s=7.0, orphan_gc_period_s=1800.0, retention_period_s=900.0)
    app = make_celery(settings)
    schedule = {entry["task"]: entry for entry in app.conf.beat_schedule.values()}
    assert set(schedule) == {RECONCILE_TASK, COLLECT_ORPHANS_TASK, RETENTION_TASK}
    assert schedule[RECONCILE_TASK]["schedule"] == timedelta(seconds=7)
    assert schedule[COLLECT_ORPHANS_TASK]["schedule"] == timedelta(seconds=1800)
    assert schedule[RETENTION_TASK]["schedule"] == timedelta(seconds=900)
    assert all(entry["options"]["queue"] == "cpu" for entry in schedule.values())
    routes = app.conf.task_routes
    assert all(routes[task] == {"queue": "cpu"} for task in (*schedule, PURGE_TASK))


def test_the_orphan_grace_cannot_be_shorter_than_a_minute() -> None:
    with pytest.raises(ValueError, match="orphan_grace_s"):
        Settings(orphan_grace_s=5)
