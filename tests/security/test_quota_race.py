"""The active-job quota under concurrent submits: a live uvicorn server, many client threads
released at once, real Postgres. The quota holds exactly, and idempotency keys still work.

Each test reads Given / When / Then."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db.models import Job, Tenant
from shared.db.session import transaction
from shared.jobs.states import JobState
from tests.conftest import Caller
from tests.security.conftest import live_server

pytestmark = pytest.mark.integration

QUOTA = 5
CLIENTS = 30
ROUNDS = 20
REQUEST_TIMEOUT_S = 60.0
BARRIER_TIMEOUT_S = 30.0
GAN = {"type": "gan.train", "params": {"dataset": "digits", "steps": 10}}


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    """The API on a real uvicorn server, without rate limits (the test is a burst on purpose)."""
    unlimited = settings.model_copy(update={"rate_limit_per_s": 0.0, "unknown_key_rate_per_s": 0.0})
    with live_server(unlimited) as (host, port):
        yield f"http://{host}:{port}"


def _set_quota(sessions: sessionmaker[Session], caller: Caller, quota: int) -> None:
    with transaction(sessions) as session:
        session.execute(update(Tenant).where(Tenant.id == caller.tenant_id).values(max_active_jobs=quota))


def _cancel_all(sessions: sessionmaker[Session], caller: Caller) -> None:
    with transaction(sessions) as session:
        session.execute(
            update(Job)
            .where(Job.tenant_id == caller.tenant_id, Job.state == JobState.QUEUED.value)
            .values(state=JobState.CANCELLED.value)
        )


def _active(sessions: sessionmaker[Session], caller: Caller) -> int:
    with sessions() as session:
        count = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.tenant_id == caller.tenant_id, Job.state.in_(("queued", "running")))
        )
    return int(count or 0)


def _burst(
    server: str, caller: Caller, *, clients: int, headers: dict[str, str] | None = None
) -> list[requests.Response]:
    """``clients`` POST /v1/jobs sent at the same instant, each on its own connection."""
    barrier = threading.Barrier(clients, timeout=BARRIER_TIMEOUT_S)
    connections = [requests.Session() for _ in range(clients)]
    for connection in connections:  # connect first, so the requests themselves start together
        connection.get(f"{server}/healthz", timeout=REQUEST_TIMEOUT_S)

    def submit(connection: requests.Session) -> requests.Response:
        barrier.wait()
        return connection.post(
            f"{server}/v1/jobs", json=GAN, headers={**caller.headers, **(headers or {})}, timeout=REQUEST_TIMEOUT_S
        )

    try:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            return list(pool.map(submit, connections))
    finally:
        for connection in connections:
            connection.close()


def test_concurrent_submits_create_exactly_the_quota(
    server: str, sessions: sessionmaker[Session], alice: Caller
) -> None:
    # Given a tenant whose quota is 5 active jobs and who has none
    _set_quota(sessions, alice, QUOTA)
    outcomes: list[dict[int, int]] = []
    for _round in range(ROUNDS):
        # When 30 submits arrive at once
        responses = _burst(server, alice, clients=CLIENTS)
        statuses = Counter(r.status_code for r in responses)
        outcomes.append(dict(statuses))
        # Then the database holds exactly 5 active jobs (checked before anything is reset)
        assert _active(sessions, alice) == statuses[201], f"round {_round}: {statuses}"
        for response in responses:
            if response.status_code == 429:
                assert response.headers["retry-after"], response.text
                assert response.json()["error"]["code"] == "too_many_requests"
        # (reset for the next round: the 5 jobs are cancelled, which frees the quota)
        _cancel_all(sessions, alice)
    # Then every round created exactly 5 and refused 25 with 429
    assert outcomes == [{201: QUOTA, 429: CLIENTS - QUOTA}] * ROUNDS, outcomes


def test_concurrent_repeats_of_one_idempotency_key_create_one_job(
    server: str, sessions: sessionmaker[Session], bob: Caller
) -> None:
    # Given a tenant with room for 5 jobs
    _set_quota(sessions, bob, QUOTA)
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    # When 30 submits with the same Idempotency-Key arrive at once
    responses = _burst(server, bob, clients=CLIENTS, headers=key)
    # Then one created the job and the other 29 got that same job back
    assert Counter(r.status_code for r in responses) == {201: 1, 200: CLIENTS - 1}
    assert len({r.json()["id"] for r in responses}) == 1
    assert _active(sessions, bob) == 1


def test_a_repeated_idempotency_key_gets_its_job_even_at_the_quota(
    server: str, sessions: sessionmaker[Session], alice: Caller
) -> None:
    # Given a tenant at its quota, one of whose jobs was submitted with an Idempotency-Key
    _set_quota(sessions, alice, 2)
    key = {**alice.headers, "Idempotency-Key": f"full-{uuid.uuid4()}"}
    first = requests.post(f"{server}/v1/jobs", json=GAN, headers=key, timeout=REQUEST_TIMEOUT_S)
    assert first.status_code == 201, first.text
    other = requests.post(f"{server}/v1/jobs", json=GAN, headers=alice.headers, timeout=REQUEST_TIMEOUT_S)
    assert other.status_code == 201, other.text
    # When the keyed request is repeated (a client retrying after a lost response)
    again = requests.post(f"{server}/v1/jobs", json=GAN, headers=key, timeout=REQUEST_TIMEOUT_S)
    # Then it gets its job back (200), not a 429: the repeat creates nothing
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    # And a new submit is still refused
    refused = requests.post(f"{server}/v1/jobs", json=GAN, headers=alice.headers, timeout=REQUEST_TIMEOUT_S)
    assert refused.status_code == 429, refused.text
