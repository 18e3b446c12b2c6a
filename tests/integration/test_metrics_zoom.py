"""Zooming into the loss history: ``until_step`` bounds the steps from above (inclusive), and max_points then
buckets only the range asked for, against real Postgres.

Each test reads Given / When / Then."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shared.db import queries
from shared.db.session import transaction
from tests.conftest import Caller

pytestmark = pytest.mark.integration

GAN = {"type": "gan.train", "params": {"dataset": "digits", "steps": 1000}}
STEPS = 1000


@pytest.fixture
def metrics_url(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> str:
    """Alice's job with 1,000 steps of d_loss and g_loss, each value its step (written as a runner would)."""
    job = client.post("/v1/jobs", json=GAN, headers=alice.headers).json()["id"]
    rows = [(name, step, float(step)) for step in range(1, STEPS + 1) for name in ("d_loss", "g_loss")]
    with transaction(sessions) as session:
        queries.upsert_metrics(session, job_id=uuid.UUID(job), attempt=1, metrics=rows)
    return f"/v1/jobs/{job}/metrics"


def test_a_range_is_bucketed_on_its_own(client: TestClient, alice: Caller, metrics_url: str) -> None:
    # When steps 100..199 are asked for in 10 points
    query = {"since_step": 99, "until_step": 199, "max_points": 10}
    body = client.get(metrics_url, params=query, headers=alice.headers).json()
    # Then the range is echoed, and each series is 10 buckets of 10 steps covering 100..199 only
    assert (body["since_step"], body["until_step"], body["max_points"]) == (99, 199, 10)
    assert body["names"] == ["d_loss", "g_loss"]
    for name in ("d_loss", "g_loss"):
        points = body["series"][name]
        assert [p["step"] for p in points] == list(range(109, 200, 10)), name
        assert [p["count"] for p in points] == [10] * 10
        assert points[0] == {"step": 109, "value": 104.5, "min": 100.0, "max": 109.0, "count": 10}
        assert points[-1] == {"step": 199, "value": 194.5, "min": 190.0, "max": 199.0, "count": 10}
        assert sum(p["count"] for p in points) == 100


def test_until_step_is_inclusive_and_optional(client: TestClient, alice: Caller, metrics_url: str) -> None:
    # When the range is one step wide, the whole history, or reaches past the last step
    one = client.get(metrics_url, params={"since_step": 499, "until_step": 500}, headers=alice.headers).json()
    whole = client.get(metrics_url, params={"max_points": 10, "names": "g_loss"}, headers=alice.headers).json()
    past = client.get(metrics_url, params={"since_step": 995, "until_step": 10**20}, headers=alice.headers).json()
    # Then the bound is inclusive, absent means no bound (and is echoed as null)
    assert one["series"]["g_loss"] == [{"step": 500, "value": 500.0, "min": 500.0, "max": 500.0, "count": 1}]
    assert whole["until_step"] is None
    assert [p["step"] for p in whole["series"]["g_loss"]] == list(range(100, 1001, 100))
    assert [p["step"] for p in past["series"]["d_loss"]] == [996, 997, 998, 999, 1000]


@pytest.mark.parametrize(
    "query",
    [
        {"since_step": 199, "until_step": 199},  # an empty range
        {"since_step": 199, "until_step": 99},  # reversed
        {"until_step": -1},  # below the first step
        {"until_step": "soon"},
    ],
)
def test_a_range_that_holds_nothing_is_a_422_naming_until_step(
    client: TestClient, alice: Caller, metrics_url: str, query: dict[str, object]
) -> None:
    response = client.get(metrics_url, params=query, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "until_step"


def test_a_range_of_someone_elses_job_is_still_a_404(client: TestClient, bob: Caller, metrics_url: str) -> None:
    response = client.get(metrics_url, params={"since_step": 99, "until_step": 199}, headers=bob.headers)
    assert response.status_code == 404


def test_buckets_are_equal_step_ranges_so_sparse_and_dense_series_line_up(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given d_loss every step and fd every 100 steps (an evaluation metric), over 1,000 steps
    job = client.post("/v1/jobs", json=GAN, headers=alice.headers).json()["id"]
    rows = [("d_loss", step, float(step)) for step in range(1, STEPS + 1)]
    rows += [("fd", step, float(step)) for step in range(100, STEPS + 1, 100)]
    with transaction(sessions) as session:
        queries.upsert_metrics(session, job_id=uuid.UUID(job), attempt=1, metrics=rows)
    # When both are read in 5 points and in 20
    url = f"/v1/jobs/{job}/metrics"
    five = client.get(url, params={"max_points": 5}, headers=alice.headers).json()["series"]
    twenty = client.get(url, params={"max_points": 20}, headers=alice.headers).json()["series"]
    # Then 5 buckets split each series' own step span in equal parts: d_loss 200 steps each, fd 2 evaluations each
    assert [(p["step"], p["count"]) for p in five["d_loss"]] == [
        (200, 200),
        (400, 200),
        (600, 200),
        (800, 200),
        (1000, 200),
    ]
    assert [(p["step"], p["count"]) for p in five["fd"]] == [(200, 2), (400, 2), (600, 2), (800, 2), (1000, 2)]
    # And a series with fewer points than max_points comes back point by point
    assert [(p["step"], p["count"]) for p in twenty["fd"]] == [(s, 1) for s in range(100, STEPS + 1, 100)]
    assert len(twenty["d_loss"]) == 20 and sum(p["count"] for p in twenty["d_loss"]) == STEPS
