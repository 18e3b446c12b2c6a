"""The query KEDA scales the GPU workers on (deploy/k8s/keda-scaledobject.yaml), run on the real schema:
it counts the gpu queue's queued and running jobs, and nothing else. Given / When / Then."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.db.session import transaction
from tests.conftest import Caller

pytestmark = pytest.mark.integration

SCALED_OBJECT = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "keda-scaledobject.yaml"


def _keda_query() -> str:
    docs = [d for d in yaml.safe_load_all(SCALED_OBJECT.read_text()) if d and d["kind"] == "ScaledObject"]
    (trigger,) = docs[0]["spec"]["triggers"]
    query: str = trigger["metadata"]["query"]
    return query


def test_the_keda_query_counts_the_gpu_queues_queued_and_running_jobs(
    sessions: sessionmaker[Session], alice: Caller
) -> None:
    # Given jobs in every state on the gpu queue and some on the cpu queue
    states = {"queued": 3, "running": 2, "succeeded": 4, "failed": 1, "cancelled": 2}
    with transaction(sessions) as session:
        before = int(session.scalar(text(_keda_query())) or 0)
        for queue in ("gpu", "cpu"):
            for state, count in states.items():
                session.execute(
                    text(
                        "INSERT INTO jobs (id, tenant_id, type, params, queue, state, progress_total) "
                        "VALUES (:id, :tenant, 'gan.train', '{}'::jsonb, :queue, :state, 1)"
                    ),
                    [
                        {"id": uuid.uuid4(), "tenant": alice.tenant_id, "queue": queue, "state": state}
                        for _ in range(count)
                    ],
                )
        # When KEDA's query runs
        counted = int(session.scalar(text(_keda_query())) or 0)
    # Then it counts the 3 queued and 2 running gpu jobs: one worker each
    assert counted - before == 5
