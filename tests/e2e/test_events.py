"""GET /v1/jobs/{id}/events and Prefer: wait, against the API as deployed (uvicorn with EdgeProtocol in
its own process), a real worker, Postgres, and a private Redis that a test restarts."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from tests.conftest import Caller
from tests.support import services
from tests.support.redis_server import (  # noqa: F401 - this module's own Redis
    RedisServer,
    endpoints_fixture,
    redis_server_fixture,
)
from tests.support.sse import Read, Sse, read_events

pytestmark = pytest.mark.e2e

# Long enough to disconnect in the middle on a fast CPU (CI's clean 2-core VM trains this at 240 steps/s: 400 steps
# gave 4 progress events, too few; 2,000 take 8 s), and about a minute on a busy machine.
GAN = {"dataset": "digits", "image_size": 16, "batch_size": 8, "ngf": 8, "ndf": 8, "steps": 2000, "seed": 3,
       "sample_every": 500, "checkpoint_every": 500}  # fmt: skip
STYLE_64 = {"content": "astronaut", "styles": ["coffee"], "size": 64, "steps": 20, "weights": "random"}
JOB_DEADLINE_S = 240.0


class Api:
    """The API process, restartable on the same port."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.port = services.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._settings, self._log_dir = settings, log_dir
        self.proc: services.Proc | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = services.api_server(
            self._settings, self._log_dir, self.port, name=f"api-{self.port}-{self.starts}"
        ).start()
        self.proc.wait_for_log("Application startup complete", timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(scope="module")
def api(settings: Settings, log_dir: Path) -> Iterator[Api]:
    """The API in its own process."""
    server = Api(settings, log_dir)
    server.start()
    yield server
    server.stop()


def submit(api: Api, caller: Caller, job_type: str, params: dict[str, object], **headers: str) -> httpx.Response:
    """POST /v1/jobs."""
    return httpx.post(
        f"{api.base}/v1/jobs",
        json={"type": job_type, "params": params},
        headers={**caller.headers, **headers},
        timeout=90.0,
    )


def events_url(api: Api, job_id: str) -> str:
    """The job's event stream."""
    return f"{api.base}/v1/jobs/{job_id}/events"


def logged(sessions: sessionmaker[Session], job_id: str) -> list[tuple[int, str]]:
    """The job's event log in Postgres: (id, type), in order."""
    with sessions() as session:
        rows = session.execute(
            text("SELECT seq, type FROM job_events WHERE job_id = :id ORDER BY seq"), {"id": job_id}
        ).all()
    return [(r.seq, r.type) for r in rows]


def progress_count(events: list[Sse]) -> int:
    """How many progress events a list holds."""
    return sum(1 for e in events if e.event == "progress")


def assert_complete(got: list[Sse], sessions: sessionmaker[Session], job_id: str) -> None:
    """``got`` is the whole log: every id once, in order, ending with done; progress steps never go back."""
    ids = [e.id for e in got]
    assert ids == list(range(1, len(ids) + 1)), ids
    assert [(e.id, e.event) for e in got] == logged(sessions, job_id)
    assert got[-1].event == "done" and got[-1].data["state"] == "succeeded", got[-1]
    steps = [e.data["step"] for e in got if e.event == "progress"]
    assert steps == sorted(steps) and steps[-1] == GAN["steps"], steps
    assert progress_count(got) >= 5, "the job was too short to interrupt"


def test_a_client_that_reconnects_with_last_event_id_gets_every_event_once_in_order(
    api: Api, alice: Caller, worker: services.Proc, sessions: sessionmaker[Session]
) -> None:
    # Given a training job followed from its start
    job_id = submit(api, alice, "gan.train", GAN).json()["id"]
    # When the client disconnects after three progress events and reconnects a second later
    first = read_events(events_url(api, job_id), alice.headers, stop=lambda ev: progress_count(ev) >= 3)
    assert not first.ended
    time.sleep(1.0)
    rest = read_events(events_url(api, job_id), alice.headers, last_event_id=first.events[-1].id)
    # Then together they are the job's whole log: each event once, in order, ending with done
    assert rest.ended
    got = first.events + rest.events
    assert_complete(got, sessions, job_id)
    # And the first events are the job's queued and running transitions
    assert [(e.event, e.data.get("state")) for e in got[:2]] == [("state", "queued"), ("state", "running")]
    kinds = {e.event for e in got}
    assert {"state", "progress", "metrics", "artifact", "done"} <= kinds, kinds
    metrics_times = [e.data["ts"] for e in got if e.event == "metrics"]
    gaps = [b - a for a, b in itertools.pairwise(metrics_times)]
    assert min(gaps) >= 0.45, gaps  # metrics events are throttled to two a second


def test_a_stream_survives_an_api_restart(
    api: Api, alice: Caller, worker: services.Proc, sessions: sessionmaker[Session]
) -> None:
    # Given a client following a training job
    job_id = submit(api, alice, "gan.train", GAN).json()["id"]
    first = read_events(events_url(api, job_id), alice.headers, stop=lambda ev: progress_count(ev) >= 3)
    # When the API process is killed and a new one starts on the same port
    api.kill()
    api.start()
    # Then the client that reconnects with Last-Event-ID gets the rest, each event once
    rest = read_events(events_url(api, job_id), alice.headers, last_event_id=first.events[-1].id)
    assert rest.ended
    assert_complete(first.events + rest.events, sessions, job_id)


def test_a_stream_survives_a_redis_restart(
    api: Api, alice: Caller, worker: services.Proc, redis_server: RedisServer, sessions: sessionmaker[Session]
) -> None:
    # Given a client following a training job on one connection
    job_id = submit(api, alice, "gan.train", GAN).json()["id"]
    restarted: list[float] = []

    def restart_redis_once(events: list[Sse]) -> bool:
        if not restarted and progress_count(events) >= 3:
            # When Redis stops (losing everything published meanwhile) and comes back two seconds later
            redis_server.flush_and_stop()
            time.sleep(2.0)
            redis_server.start()
            restarted.append(time.time())
        return False

    whole: Read = read_events(events_url(api, job_id), alice.headers, stop=restart_redis_once)
    # Then the same connection goes on and ends with done, each event once and in order
    assert restarted and whole.ended
    assert_complete(whole.events, sessions, job_id)
    assert any(e.received > restarted[0] for e in whole.events)


def test_two_api_processes_stream_one_job_to_their_own_clients(
    api: Api, settings: Settings, log_dir: Path, alice: Caller, worker: services.Proc, sessions: sessionmaker[Session]
) -> None:
    # Given a second API process beside the first
    second = Api(settings, log_dir)
    second.start()
    try:
        # When one client follows a job through each process
        job_id = submit(api, alice, "gan.train", GAN).json()["id"]
        with ThreadPoolExecutor(2) as pool:
            reads = list(pool.map(lambda server: read_events(events_url(server, job_id), alice.headers), (api, second)))
    finally:
        second.stop()
    # Then both get the whole log, each event once and in order
    for read in reads:
        assert read.ended
        assert_complete(read.events, sessions, job_id)


def test_another_tenants_job_is_404_and_bad_resume_ids_are_422(api: Api, alice: Caller, bob: Caller) -> None:
    job_id = submit(api, alice, "gan.train", {**GAN, "steps": 5}).json()["id"]
    url = events_url(api, job_id)
    other = httpx.get(url, headers=bob.headers, timeout=30)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    unknown = httpx.get(events_url(api, str(uuid.uuid4())), headers=alice.headers, timeout=30)
    assert unknown.status_code == 404
    keyless = httpx.get(url, timeout=30)
    assert keyless.status_code == 401
    bad = httpx.get(url, headers={**alice.headers, "Last-Event-ID": "seven"}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"
    negative = httpx.get(url, params={"last_event_id": -1}, headers=alice.headers, timeout=30)
    assert negative.status_code == 422


def test_a_finished_jobs_stream_replays_from_the_log_and_ends(
    api: Api, alice: Caller, worker: services.Proc, sessions: sessionmaker[Session]
) -> None:
    # Given a job that has already ended
    job = submit(api, alice, "gan.train", {**GAN, "steps": 20}, Prefer="wait=60").json()
    assert job["state"] == "succeeded"
    # When a client opens its stream, from the start and from the middle
    whole = read_events(events_url(api, job["id"]), alice.headers, deadline_s=30)
    tail = read_events(events_url(api, job["id"]), alice.headers, last_event_id=3, deadline_s=30)
    # Then it gets the log and the server closes the stream after done
    assert whole.ended and tail.ended
    assert [(e.id, e.event) for e in whole.events] == logged(sessions, job["id"])
    assert [e.id for e in tail.events] == [e.id for e in whole.events if e.id > 3]
    # And the job names its stream and its latest event id
    polled = httpx.get(f"{api.base}/v1/jobs/{job['id']}", headers=alice.headers, timeout=30).json()
    assert polled["links"]["events"] == f"/v1/jobs/{job['id']}/events"
    assert polled["last_event_id"] == whole.events[-1].id
    assert polled["webhook"] is None and polled["webhook_events_filter"] == []
    # And resuming after its done answers 204 at once (nothing will follow), not a stream that waits for ever
    for headers in ({"Last-Event-ID": str(polled["last_event_id"])}, {"Last-Event-ID": "999999"}):
        ended = httpx.get(events_url(api, job["id"]), headers=alice.headers | headers, timeout=10)
        assert (ended.status_code, ended.content) == (204, b"")
    before_done = httpx.get(
        events_url(api, job["id"]),
        headers=alice.headers | {"Last-Event-ID": str(polled["last_event_id"] - 1)},
        timeout=10,
    )
    assert before_done.status_code == 200 and b"event: done" in before_done.content


def test_prefer_wait_answers_a_short_style_transfer_in_the_post_itself(
    api: Api, alice: Caller, worker: services.Proc
) -> None:
    started = time.monotonic()
    response = submit(api, alice, "style.transfer", STYLE_64, Prefer="wait=60")
    assert response.status_code == 201, response.text
    assert response.headers["Preference-Applied"] == "wait=60"
    job = response.json()
    assert job["state"] == "succeeded", job
    assert job["progress"]["step"] == job["progress"]["total"] == STYLE_64["steps"]
    assert time.monotonic() - started < 60


def test_prefer_wait_on_a_long_job_answers_running_after_the_wait(
    api: Api, alice: Caller, worker: services.Proc
) -> None:
    wait_s = 4
    started = time.monotonic()
    response = submit(api, alice, "gan.train", {**GAN, "steps": 5000}, Prefer=f"wait={wait_s}")
    elapsed = time.monotonic() - started
    job = response.json()
    try:
        assert response.status_code == 201 and response.headers["Preference-Applied"] == f"wait={wait_s}"
        assert job["state"] in ("running", "queued") and wait_s <= elapsed < wait_s + 20, (job["state"], elapsed)
    finally:
        httpx.post(f"{api.base}/v1/jobs/{job['id']}/cancel", headers=alice.headers, timeout=30)


def test_prefer_wait_is_capped_and_a_malformed_one_is_ignored(api: Api, alice: Caller, worker: services.Proc) -> None:
    capped = submit(api, alice, "gan.train", {**GAN, "steps": 5}, Prefer="respond-async, wait=600")
    assert capped.headers["Preference-Applied"] == "wait=60"
    assert capped.json()["state"] == "succeeded"
    ignored = submit(api, alice, "gan.train", {**GAN, "steps": 5}, Prefer="wait=soon")
    assert ignored.status_code == 201 and "Preference-Applied" not in ignored.headers
    assert ignored.json()["state"] == "queued"
