"""POST/GET /v1/sweeps against the real API and Postgres: expansion into trials, max_parallel held by the
production claim, cancel cascades, the best trial, and what each bad input gets. Given / When / Then."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from shared.jobs.states import JobState
from tests.conftest import Caller
from tests.support.racing import race_claims

pytestmark = pytest.mark.integration

BASE = {"dataset": "ring8", "steps": 20, "batch_size": 16}
GRID = {"lr_g": [0.0002, 0.002], "preset": ["lesson", "stable"]}
SEEDS = [1, 2, 3]


def sweep_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "gan.train",
        "base_params": BASE,
        "grid": GRID,
        "seeds": SEEDS,
        "objective": {"metric": "hq_share"},
        "max_parallel": 2,
    }
    return {**body, **overrides}


def post(client: TestClient, caller: Caller, body: dict[str, Any]) -> Any:
    return client.post("/v1/sweeps", json=body, headers=caller.headers)


def claim(sessions: sessionmaker[Session], token: uuid.UUID) -> queries.Claim | None:
    with transaction(sessions) as session:
        return queries.claim_next(session, job_id=token, owner="sweep-test", lease_s=600.0, window_s=3600.0)


def finish(sessions: sessionmaker[Session], got: queries.Claim, *, value: float | None = None) -> None:
    with transaction(sessions) as session:
        session.execute(
            text(
                "UPDATE jobs SET state = 'succeeded', finished_at = now(), latest_metrics = CAST(:m AS jsonb) "
                "WHERE id = :id AND attempt = :a"
            ),
            {"id": got.job_id, "a": got.attempt, "m": "{}" if value is None else f'{{"hq_share": {value}}}'},
        )


def cancel_all(client: TestClient, caller: Caller, sweep_id: str) -> None:
    client.post(f"/v1/sweeps/{sweep_id}/cancel", headers=caller.headers)


def test_a_grid_sweep_makes_one_trial_per_combination_and_seed(client: TestClient, alice: Caller) -> None:
    # When alice starts a 2 lr x 2 preset x 3 seed sweep
    response = post(client, alice, sweep_body())
    assert response.status_code == 201, response.text
    sweep = response.json()
    try:
        # Then it has 12 queued trials, each with its combination and seed, and no best yet
        assert response.headers["Location"] == f"/v1/sweeps/{sweep['id']}"
        assert (sweep["state"], sweep["counts"], sweep["best"]) == ("running", {"queued": 12}, None)
        assert sweep["objective"] == {"metric": "hq_share", "mode": "max"}
        combos = [(t["params"]["lr_g"], t["params"]["preset"], t["params"]["seed"]) for t in sweep["trials"]]
        assert sorted(combos) == sorted((lr, p, s) for lr in GRID["lr_g"] for p in GRID["preset"] for s in SEEDS)
        # And each trial is a job of its own with the base params and its own
        trial = sweep["trials"][5]
        job = client.get(f"/v1/jobs/{trial['job_id']}", headers=alice.headers).json()
        assert job["type"] == "gan.train"
        assert {k: job["params"][k] for k in ("dataset", "steps", "batch_size")} == BASE
        assert (job["params"]["lr_g"], job["params"]["preset"], job["params"]["seed"]) == combos[5]
        # And GET shows the same sweep; the listing has it
        assert client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()["trials"] == sweep["trials"]
        listed = client.get("/v1/sweeps", headers=alice.headers).json()
        assert [s["id"] for s in listed["items"]] == [sweep["id"]]
    finally:
        cancel_all(client, alice, sweep["id"])


def test_the_claim_runs_at_most_max_parallel_trials_and_then_the_next(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given a 12-trial sweep with max_parallel 2
    sweep = post(client, alice, sweep_body()).json()
    token = uuid.UUID(sweep["trials"][0]["job_id"])
    try:
        # When workers claim, Then two trials start and a third claim finds nothing to run
        first, second = claim(sessions, token), claim(sessions, token)
        assert first is not None and second is not None
        assert claim(sessions, token) is None
        # When one ends, Then the next trial (in order) can start, and again no more than two run
        finish(sessions, first)
        third = claim(sessions, token)
        assert third is not None
        assert str(third.job_id) == sweep["trials"][2]["job_id"]
        assert claim(sessions, token) is None
        # And a message naming a held-back trial itself does not start it either (the claim's fallback takes
        # over only a lost worker's job, never a queued one the pick passed over)
        for held_back in sweep["trials"][3:6]:
            assert claim(sessions, uuid.UUID(held_back["job_id"])) is None
        got = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()
        assert got["counts"] == {"succeeded": 1, "running": 2, "queued": 9}
        # And the ended trial's job names the next held-back trial to wake a worker for
        with transaction(sessions) as session:
            assert queries.next_held_back(session, ended_job_id=first.job_id) == (
                uuid.UUID(sweep["trials"][3]["job_id"]),
                "gpu",
            )
    finally:
        cancel_all(client, alice, sweep["id"])


def test_cancelling_a_sweep_cancels_its_queued_trials_and_stops_its_running_ones(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given a sweep with one trial running and the rest queued
    sweep = post(client, alice, sweep_body()).json()
    running = claim(sessions, uuid.UUID(sweep["trials"][0]["job_id"]))
    assert running is not None
    # When it is cancelled
    response = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice.headers)
    # Then every queued trial is cancelled, the running one is asked to stop, and the sweep says cancelling
    assert response.status_code == 200, response.text
    got = response.json()
    assert (got["state"], got["counts"]) == ("cancelling", {"running": 1, "cancelled": 11})
    job = client.get(f"/v1/jobs/{running.job_id}", headers=alice.headers).json()
    assert job["cancel_requested"] is True
    # And once the running trial has stopped, the sweep is cancelled
    with transaction(sessions) as session:
        assert queries.finish_job(session, job_id=running.job_id, attempt=running.attempt, state=JobState.CANCELLED)
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()["state"] == "cancelled"


def test_the_best_trial_is_the_succeeded_one_the_objective_ranks_first(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given a 4-trial sweep maximising hq_share, run one at a time, ending with these values
    sweep = post(client, alice, sweep_body(grid={"lr_g": [0.0002, 0.002]}, seeds=[1, 2], max_parallel=1)).json()
    token = uuid.UUID(sweep["trials"][0]["job_id"])
    values = [0.4, 0.9, 0.7]
    for value in values:
        got = claim(sessions, token)
        assert got is not None
        finish(sessions, got, value=value)
    # When it is read (one trial still queued)
    shown = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()
    # Then each trial shows its objective, and the best is the 0.9 one
    assert [t["objective"] for t in shown["trials"]] == [*values, None]
    assert shown["best"]["objective"] == 0.9
    assert shown["best"]["job_id"] == shown["trials"][1]["job_id"]
    # And minimising the same values would pick the 0.4 one
    minimised = post(client, alice, sweep_body(grid={"lr_g": [0.0002]}, seeds=[1], objective={"metric": "fd"})).json()
    assert minimised["objective"] == {"metric": "fd", "mode": "min"}
    # And class coverage can be the objective too: less class KL, more confidence is better
    by_kl = post(client, alice, sweep_body(grid={"lr_g": [0.0002]}, seeds=[2], objective={"metric": "class_kl"}))
    by_confidence = post(
        client, alice, sweep_body(grid={"lr_g": [0.0002]}, seeds=[3], objective={"metric": "class_confidence"})
    )
    assert by_kl.json()["objective"] == {"metric": "class_kl", "mode": "min"}, by_kl.text
    assert by_confidence.json()["objective"] == {"metric": "class_confidence", "mode": "max"}, by_confidence.text
    for done in (sweep, minimised, by_kl.json(), by_confidence.json()):
        cancel_all(client, alice, done["id"])


def test_a_random_search_draws_log_uniform_rates_reproducibly(client: TestClient, alice: Caller) -> None:
    body = sweep_body(
        grid=None,
        random={"lr_g": {"low": 1e-5, "high": 1e-2, "log": True}, "preset": {"choices": ["lesson", "stable"]}},
        trials=5,
        seeds=[7],
        search_seed=3,
    )
    first, again = post(client, alice, body).json(), post(client, alice, body).json()
    try:
        rates = [t["params"]["lr_g"] for t in first["trials"]]
        assert len(rates) == 5 and all(1e-5 <= r <= 1e-2 for r in rates)
        assert len({round(math.log10(r)) for r in rates}) >= 2, f"not spread over decades: {rates}"
        assert {t["params"]["preset"] for t in first["trials"]} <= {"lesson", "stable"}
        assert [t["params"] for t in again["trials"]] == [t["params"] for t in first["trials"]]
    finally:
        cancel_all(client, alice, first["id"])
        cancel_all(client, alice, again["id"])


@pytest.mark.parametrize(
    ("overrides", "field", "needle"),
    [
        ({"random": {"lr_g": {"low": 0.001, "high": 0.01}}, "trials": 3}, "body", "exactly one of grid and random"),
        ({"grid": None}, "body", "exactly one of grid and random"),
        ({"grid": None, "random": {"lr_g": {"low": 0.001, "high": 0.01}}}, "body", "needs trials"),
        ({"grid": {"seed": [1, 2]}}, "body", "vary seed with seeds"),
        (
            {"grid": {"lr_g": [0.001] * 11, "ngf": [8] * 10}, "seeds": [1]},
            "grid",
            "110 trials; a sweep has at most 100",
        ),
        ({"grid": {"lr_g": [0.001, -1.0]}}, "params.lr_g", "trial 3 {'lr_g': -1.0, 'seed': 1}: params.lr_g"),
        ({"objective": {"metric": "beauty"}}, "objective.metric", "no metric 'beauty'"),
        ({"type": "gan.sample"}, "type", "sweeps run"),
        ({"max_parallel": 0}, "max_parallel", "greater than or equal to 1"),
        ({"grid": None, "random": {"lr_g": {"low": 0, "high": 1, "log": True}}, "trials": 2}, "random.lr_g", "low > 0"),
        ({"seeds": [1, 1]}, "body", "each seed once"),
        ({"early_stopping": {"rule": "median", "min_steps": 20}}, "early_stopping.min_steps", "longest runs 20 steps"),
        ({"early_stopping": {"rule": "bandit", "min_steps": 5}}, "early_stopping.rule", "'median' or 'asha'"),
        ({"early_stopping": {"min_steps": 0}}, "early_stopping.min_steps", "greater than or equal to 1"),
        ({"early_stopping": {"rule": "asha", "min_steps": 5, "interval": 5}}, "early_stopping", "interval is for"),
        (
            {"early_stopping": {"min_steps": 5, "reduction_factor": 1}},
            "early_stopping.reduction_factor",
            "greater than or equal to 2",
        ),
    ],
)
def test_bad_sweeps_get_a_422_naming_the_field_and_store_nothing(
    client: TestClient,
    alice: Caller,
    sessions: sessionmaker[Session],
    overrides: dict[str, Any],
    field: str,
    needle: str,
) -> None:
    response = post(client, alice, sweep_body(**overrides))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert needle in error["message"], error
    assert error["field"] == field, error
    with transaction(sessions) as session:
        stored = session.scalar(text("SELECT count(*) FROM sweeps WHERE tenant_id = :t"), {"t": alice.tenant_id})
    assert stored == 0


def test_a_sweep_over_the_quota_is_a_429_and_stores_no_trial(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given alice may have 5 queued or running jobs
    with transaction(sessions) as session:
        session.execute(text("UPDATE tenants SET max_active_jobs = 5 WHERE id = :t"), {"t": alice.tenant_id})
    # When she starts a 12-trial sweep, Then it is refused, and neither the sweep nor any trial was stored
    response = post(client, alice, sweep_body())
    assert response.status_code == 429, response.text
    with transaction(sessions) as session:
        counts = session.execute(
            text(
                "SELECT (SELECT count(*) FROM sweeps WHERE tenant_id = :t), (SELECT count(*) FROM jobs WHERE tenant_id = :t)"
            ),
            {"t": alice.tenant_id},
        ).one()
    assert tuple(counts) == (0, 0)


def test_another_tenants_sweep_is_a_404(client: TestClient, alice: Caller, bob: Caller) -> None:
    sweep = post(client, alice, sweep_body(grid={"lr_g": [0.001]}, seeds=[1])).json()
    try:
        for method, path in (("GET", ""), ("POST", "/cancel")):
            response = client.request(method, f"/v1/sweeps/{sweep['id']}{path}", headers=bob.headers)
            assert response.status_code == 404, (method, path, response.text)
        assert client.get("/v1/sweeps", headers=bob.headers).json()["items"] == []
    finally:
        cancel_all(client, alice, sweep["id"])


def test_max_parallel_holds_when_sixteen_workers_claim_at_once(
    client: TestClient, alice: Caller, settings: Settings
) -> None:
    # Given a 12-trial sweep with max_parallel 3
    sweep = post(client, alice, sweep_body(max_parallel=3)).json()
    try:
        # When 16 workers claim at the same moment
        got = race_claims(settings, uuid.UUID(sweep["trials"][0]["job_id"]), 16, until_empty=False)
        # Then exactly 3 trials run
        assert len(got) == 3
        shown = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()
        assert shown["counts"] == {"running": 3, "queued": 9}
    finally:
        cancel_all(client, alice, sweep["id"])


def test_a_tenants_running_limit_holds_when_sixteen_workers_claim_at_once(
    client: TestClient, alice: Caller, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    # Given alice limited to 2 running jobs, with 10 queued
    with transaction(sessions) as session:
        session.execute(text("UPDATE tenants SET max_running_jobs = 2 WHERE id = :t"), {"t": alice.tenant_id})
    body = {"type": "gan.train", "params": BASE}
    ids = [client.post("/v1/jobs", json=body, headers=alice.headers).json()["id"] for _ in range(10)]
    try:
        # When 16 workers claim at the same moment, Then exactly 2 of her jobs run
        got = race_claims(settings, uuid.UUID(ids[0]), 16, until_empty=False)
        assert len(got) == 2
    finally:
        for job_id in ids:
            client.post(f"/v1/jobs/{job_id}/cancel", headers=alice.headers)
