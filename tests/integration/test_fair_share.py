"""Fair share on the real Postgres: the claim production runs (``queries.claim_next``), driven by simulated
workers and a simulated clock (bench/fair_sim.py), and by real threads racing for jobs.
Each scenario has a queue of its own. Each test reads Given / When / Then."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bench.fair_sim import FairSim, jain_index
from shared import cli
from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from tests.conftest import Caller
from tests.support import services
from tests.support.racing import race_claims

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

JOB_S = 60.0
MIN_JAIN = 0.95
WEIGHT_TOLERANCE = 0.15
RACERS = 16
ONLINE_S = 3600.0  # simulated workers advertise once, at the start
GIB = 1024**3


def _durations(rng: random.Random, count: int) -> list[float]:
    """Heavy-ish tailed job lengths: 20 s to a few minutes, mean about 60 s."""
    return [min(20.0 + rng.expovariate(1 / 40.0), 400.0) for _ in range(count)]


def test_a_tenant_that_submits_later_starts_within_three_of_a_backlogged_tenants_jobs(
    sessions: sessionmaker[Session],
) -> None:
    # Given tenant A with 200 queued jobs, 20 of them already run by 2 workers
    sim = FairSim(sessions, workers=2)
    a, b = sim.add_tenant(), sim.add_tenant()
    sim.submit(a, [JOB_S] * 200)
    sim.run_claims(20)
    # When tenant B submits 5 jobs
    submitted_at = sim.now
    b_jobs = sim.submit(b, [JOB_S] * 5)
    after = sim.run_claims(7)
    # Then the next 5 claims are B's 5, all started within the time of 3 of A's jobs; then A resumes
    assert [r.job_id for r in after[:5]] == b_jobs
    assert max(r.start for r in after[:5]) - submitted_at <= 3 * JOB_S
    assert {r.tenant_id for r in after[5:]} == {a}


def test_four_backlogged_tenants_get_equal_worker_time_by_jains_index(sessions: sessionmaker[Session]) -> None:
    # Given four tenants that each queue 80 jobs of varied length, A first and D last, and 2 workers
    rng = random.Random(7)
    sim = FairSim(sessions, workers=2)
    tenants = [sim.add_tenant() for _ in range(4)]
    for tenant in tenants:
        sim.submit(tenant, _durations(rng, 80))
    # When the workers run for 2 hours (every tenant stays backlogged)
    sim.run_until(7200.0)
    held = sim.worker_seconds(0.0, 7200.0)
    # Then the worker time is shared equally (first come, first served would give A all of it: index 0.25)
    shares = [held.get(t, 0.0) for t in tenants]
    assert jain_index(shares) >= MIN_JAIN, f"worker-seconds per tenant {shares}"
    assert min(shares) > 0


def test_a_tenant_of_weight_2_gets_twice_the_worker_time(sessions: sessionmaker[Session]) -> None:
    # Given a tenant of weight 1 that queued 300 equal jobs first, one of weight 2 that queued 300 after, and
    # 3 workers (both stay backlogged)
    sim = FairSim(sessions, workers=3)
    heavy, light = sim.add_tenant(weight=2.0), sim.add_tenant(weight=1.0)
    sim.submit(light, [JOB_S] * 300)
    sim.submit(heavy, [JOB_S] * 300)
    # When the workers run for 90 minutes
    sim.run_until(5400.0)
    held = sim.worker_seconds(600.0, 5400.0)
    # Then the weight-2 tenant holds twice the worker time of the other, within 15 %
    ratio = held.get(heavy, 0.0) / held.get(light, 1e-9)
    assert abs(ratio - 2.0) <= 2.0 * WEIGHT_TOLERANCE, f"heavy / light = {ratio:.3f}"


def test_a_high_job_starts_before_its_tenants_queued_normal_ones_and_low_ones_go_last(
    sessions: sessionmaker[Session],
) -> None:
    # Given one tenant's queued jobs: a low one, three normal ones, then a high one
    sim = FairSim(sessions, workers=1)
    tenant = sim.add_tenant()
    low = sim.submit(tenant, [JOB_S], priority="low")
    normal = sim.submit(tenant, [JOB_S] * 3)
    high = sim.submit(tenant, [JOB_S], priority="high")
    # When one worker runs them all
    order = [r.job_id for r in sim.run_claims(10)]
    # Then the high one runs first, the normal ones in the order they came, and the low one last
    assert order == high + normal + low


def test_a_tenant_at_its_running_limit_waits_and_says_so_while_others_use_the_workers(
    sessions: sessionmaker[Session],
) -> None:
    # Given tenant A limited to 1 running job with 4 queued, tenant B with 4, and 3 workers
    sim = FairSim(sessions, workers=3)
    a, b = sim.add_tenant(max_running=1), sim.add_tenant()
    a_jobs = sim.submit(a, [JOB_S] * 4)
    sim.submit(b, [JOB_S] * 4)
    # When the three workers claim
    first = sim.run_claims(3)
    # Then A runs one job and B two, and A's next job says it waits for A's limit
    assert Counter(r.tenant_id for r in first) == {a: 1, b: 2}
    with transaction(sessions) as session:
        place = queries.pending(
            session, job_id=a_jobs[1], tenant_id=a, queue=sim.queue, window_s=sim.window_s, online_within_s=ONLINE_S
        )
    assert place is not None
    assert place.reason == f"your tenant is at its limit of 1 running jobs on the {sim.queue} queue"
    # And over the whole run A never has two jobs running at once
    sim.run_claims(100)
    a_runs = sorted((r.start, r.end) for r in sim.runs if r.tenant_id == a)
    assert len(a_runs) == 4
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(a_runs))


def test_when_only_a_limited_tenant_has_work_the_other_workers_stay_idle(sessions: sessionmaker[Session]) -> None:
    # Given only tenant A, limited to 1 running job, with 3 queued jobs, and 2 workers
    sim = FairSim(sessions, workers=2)
    a = sim.add_tenant(max_running=1)
    sim.submit(a, [JOB_S] * 3)
    # When the workers run until the queue is empty
    runs = sim.run_claims(10)
    # Then the jobs ran one after another (a claim with nothing it may start is skipped)
    assert [r.start for r in runs] == [0.0, JOB_S, 2 * JOB_S]


def test_a_queued_job_says_how_many_of_its_tenants_jobs_and_others_are_ahead(sessions: sessionmaker[Session]) -> None:
    # Given tenant A with 4 queued jobs and tenant B with 2, nothing run yet
    sim = FairSim(sessions, workers=1)
    a, b = sim.add_tenant(), sim.add_tenant()
    a_jobs = sim.submit(a, [JOB_S] * 4)
    b_jobs = sim.submit(b, [JOB_S] * 2)
    with transaction(sessions) as session:
        # When A's third job and B's first ask where they stand
        third = queries.pending(
            session, job_id=a_jobs[2], tenant_id=a, queue=sim.queue, window_s=sim.window_s, online_within_s=ONLINE_S
        )
        b_first = queries.pending(
            session, job_id=b_jobs[0], tenant_id=b, queue=sim.queue, window_s=sim.window_s, online_within_s=ONLINE_S
        )
    # Then A's third is behind 2 of A's jobs and, taking turns, both of B's
    assert third is not None and b_first is not None
    assert (third.position, third.reason) == (5, "behind 2 of your jobs and 2 of other tenants")
    # And B's first is behind one of A's (A's oldest job came first)
    assert (b_first.position, b_first.reason) == (2, "other tenants' turn by fair share: 1 of their jobs go first")


def test_concurrent_claimers_take_every_job_exactly_once(settings: Settings, sessions: sessionmaker[Session]) -> None:
    # Given 200 queued jobs of 4 tenants on one queue
    sim = FairSim(sessions, workers=1)
    tenants = [sim.add_tenant() for _ in range(4)]
    ids = [j for t in tenants for j in sim.submit(t, [JOB_S] * 50)]
    # When 16 threads claim at once until nothing is left
    claimed = [c.job_id for c in race_claims(settings, ids[0], RACERS, until_empty=True)]
    # Then every job was claimed once, by one claim, at attempt 1
    assert sorted(claimed) == sorted(ids)
    with transaction(sessions) as session:
        attempts = session.execute(
            text("SELECT attempt, count(*) FROM jobs WHERE queue = :q GROUP BY attempt"), {"q": sim.queue}
        ).all()
    assert [tuple(r) for r in attempts] == [(1, 200)]


API_WORKER = "test-gpu-worker"


def advertise(sessions: sessionmaker[Session], *, free: int) -> None:
    with transaction(sessions) as session:
        queries.advertise(
            session, owner=API_WORKER, queues=["gpu"], device="cpu", total_bytes=max(free, GIB), free_bytes=free
        )


def test_a_worker_never_claims_a_job_over_its_free_memory(sessions: sessionmaker[Session]) -> None:
    # Given a worker with 8 GiB free and one with 40 GiB, and a tenant's 3 big jobs (30 GiB) then 3 small (4 GiB)
    sim = FairSim(sessions, workers=2, capacities=[8 * GIB, 40 * GIB])
    tenant = sim.add_tenant()
    big = sim.submit(tenant, [JOB_S] * 3, memory_bytes=30 * GIB)
    small = sim.submit(tenant, [JOB_S] * 3, memory_bytes=4 * GIB)
    # When both workers claim until the queue is empty
    runs = sim.run_claims(10)
    # Then every job ran once, the small worker only ever took small jobs, and the big ones kept the big worker
    assert sorted(r.job_id for r in runs) == sorted(big + small)
    assert {r.job_id for r in runs if r.worker == 0} <= set(small)
    assert [r.job_id for r in runs if r.worker == 1][:3] == big
    # And a big job waiting says no worker can hold it when only small workers are online
    small_only = FairSim(sessions, workers=1, capacities=[8 * GIB])
    owner = small_only.add_tenant()
    waiting = small_only.submit(owner, [JOB_S], memory_bytes=30 * GIB)
    assert small_only.run_claims(1) == []
    with transaction(sessions) as session:
        place = queries.pending(
            session,
            job_id=waiting[0],
            tenant_id=owner,
            queue=small_only.queue,
            window_s=small_only.window_s,
            online_within_s=ONLINE_S,
            memory_bytes=30 * GIB,
        )
    assert place is not None
    assert (
        place.reason
        == f"no {small_only.queue} worker with 30.0 GiB free is online (the most any of the 1 has: 8.0 GiB)"
    )


def test_get_job_shows_a_queued_jobs_position_and_reason(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given two of alice's jobs queued on the gpu queue (no worker runs in this module), the second one high
    body = {"type": "gan.train", "params": {"dataset": "ring8", "steps": 10}}
    first = client.post("/v1/jobs", json=body, headers=alice.headers).json()
    second = client.post("/v1/jobs", json=body | {"priority": "low"}, headers=alice.headers).json()
    try:
        # When she reads them
        got_first = client.get(f"/v1/jobs/{first['id']}", headers=alice.headers).json()
        got_second = client.get(f"/v1/jobs/{second['id']}", headers=alice.headers).json()
        # Then each says its priority, place and reason
        assert (got_first["priority"], got_second["priority"]) == ("normal", "low")
        assert got_first["queueing"] == {"position": 1, "reason": "no gpu worker is online"}
        assert got_second["queueing"] == {"position": 2, "reason": "no gpu worker is online"}
        # When a gpu worker with room advertises itself, Then the reasons are the queue's
        advertise(sessions, free=64 * GIB)
        got_first = client.get(f"/v1/jobs/{first['id']}", headers=alice.headers).json()
        got_second = client.get(f"/v1/jobs/{second['id']}", headers=alice.headers).json()
        assert got_first["queueing"] == {"position": 1, "reason": "next: waiting for a free gpu worker"}
        assert got_second["queueing"] == {"position": 2, "reason": "behind 1 of your jobs"}
        # And when the only one has less free than the job's estimate, Then that is the reason
        advertise(sessions, free=1024)
        got_first = client.get(f"/v1/jobs/{first['id']}", headers=alice.headers).json()
        assert got_first["queueing"]["reason"].startswith("no gpu worker with "), got_first["queueing"]
        assert got_first["queueing"]["reason"].endswith("free is online (the most any of the 1 has: 0 MiB)")
    finally:
        for job in (first, second):
            client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers)
        with transaction(sessions) as session:
            queries.forget_worker(session, owner=API_WORKER)
    # And a job that left the queue has no queueing
    done = client.get(f"/v1/jobs/{first['id']}", headers=alice.headers).json()
    assert (done["state"], done["queueing"]) == ("cancelled", None)


def test_an_unknown_priority_is_a_422_naming_the_field(client: TestClient, alice: Caller) -> None:
    body = {"type": "gan.train", "params": {"dataset": "ring8", "steps": 10}, "priority": "urgent"}
    response = client.post("/v1/jobs", json=body, headers=alice.headers)
    assert response.status_code == 422
    assert "priority" in response.text


def test_the_admin_cli_sets_a_tenants_weight_and_running_limit(
    settings: Settings,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in services.settings_env(settings).items():
        monkeypatch.setenv(name, value)
    tenant = f"fair-{uuid.uuid4().hex[:8]}"

    def stored() -> tuple[float, int | None]:
        with transaction(sessions) as session:
            row = session.execute(
                text("SELECT share_weight, max_running_jobs FROM tenants WHERE name = :n"), {"n": tenant}
            ).one()
        return float(row.share_weight), row.max_running_jobs

    # Given a tenant created with weight 2 and a running limit of 4
    assert cli.main(["create-tenant", tenant, "--weight", "2", "--max-running-jobs", "4"]) == 0
    assert "weight=2 max_running_jobs=4" in capsys.readouterr().out
    assert stored() == (2.0, 4)
    # When only its limit is lifted, Then the weight stays
    assert cli.main(["set-tenant", tenant, "--max-running-jobs", "none"]) == 0
    assert stored() == (2.0, None)
    assert cli.main(["set-tenant", tenant, "--weight", "0.5"]) == 0
    assert stored() == (0.5, None)
    # And a weight of 0 or a limit of 0 is refused by the parser (exit 2, naming the option)
    for bad in (["--weight", "0"], ["--max-running-jobs", "0"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["set-tenant", tenant, *bad])
        assert exited.value.code == 2
        assert bad[0] in capsys.readouterr().err
    assert stored() == (0.5, None)
    # And an unknown tenant is an error, not a crash
    assert cli.main(["set-tenant", f"missing-{tenant}", "--weight", "3"]) == 1


def test_a_killed_workers_presence_is_pruned_after_a_day_unseen(sessions: sessionmaker[Session]) -> None:
    # Given a worker seen now and one last seen two days ago (killed: its exit hook never ran), on a queue of their own
    queue = f"prune-{uuid.uuid4().hex[:8]}"
    fresh, stale = f"{queue}-fresh", f"{queue}-stale"
    with transaction(sessions) as session:
        for owner, seen in ((fresh, None), (stale, datetime.now(UTC) - timedelta(days=2))):
            queries.advertise(
                session, owner=owner, queues=[queue], device="cpu", total_bytes=GIB, free_bytes=GIB, now=seen
            )
        assert queries.workers_online(session, queue=queue, within_s=ONLINE_S).count == 1
    # When the reconciler's pass prunes, Then only the stale row goes
    with transaction(sessions) as session:
        assert queries.prune_presence(session) >= 1
        owners = session.scalars(
            text("SELECT owner FROM worker_presence WHERE owner IN (:a, :b)"), {"a": fresh, "b": stale}
        ).all()
    assert owners == [fresh]
