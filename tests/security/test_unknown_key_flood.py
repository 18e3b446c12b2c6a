"""Unknown-key floods: limited per client address before the key lookup, without slowing a
tenant's polling (issue 11, point 5; docs/DESIGN.md "Rate limits and quotas").

Every key lookup the API runs is counted: ``queries.authenticate`` (the ORM routes) and
``JobReader._read`` (the polling route's own query). Each test reads Given / When / Then."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.ratelimit import client_address
from services.api.reads import JobReader
from shared.config import Settings
from shared.db import queries
from shared.security import hash_key
from tests.conftest import Caller
from tests.support import services
from tests.support.jobs import queued_job

pytestmark = pytest.mark.integration

BAD_KEY_RATE_PER_S = 0.25  # a token every 4 s: a loaded machine cannot earn one back mid-flood
BAD_KEY_BURST = 4
FLOOD = 24  # failed requests in the flood
ALICE_EVERY = 4  # alice polls once per this many flood requests
MORE = 12  # unknown keys sent once the address is over its limit
SHARED_ADDRESS = ("192.0.2.10", 50000)  # TEST-NET-1: a fresh bucket in this module's Redis db
OTHER_ADDRESS = ("198.51.100.7", 50000)  # TEST-NET-2
FLOOD_ADDRESS = "testclient"  # TestClient's client host: not an IP address


@pytest.fixture(scope="module")
def settings_overrides() -> dict[str, object]:
    """A small failed-authentication limit, and no polling cache, so every poll runs its query."""
    return {"unknown_key_rate_per_s": BAD_KEY_RATE_PER_S, "unknown_key_burst": BAD_KEY_BURST, "job_read_cache_s": 0.0}


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The hash of the key of every key lookup the API runs, in order."""
    seen: list[str] = []
    authenticate = queries.authenticate
    read = JobReader._read

    def counting_authenticate(session: Session, *, raw_key: str) -> uuid.UUID | None:
        seen.append(hash_key(raw_key))
        return authenticate(session, raw_key=raw_key)

    async def counting_read(self: JobReader, key_hash: str, job_id: uuid.UUID) -> object:
        seen.append(key_hash)
        return await read(self, key_hash, job_id)

    monkeypatch.setattr(queries, "authenticate", counting_authenticate)
    monkeypatch.setattr(JobReader, "_read", counting_read)
    yield seen


def _unknown_key() -> dict[str, str]:
    return {"Authorization": f"Bearer atl_{uuid.uuid4().hex}"}


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_requests"
    assert "unknown, revoked or missing API key from this client address" in error["message"]
    assert f"at most {BAD_KEY_RATE_PER_S:g} per second" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 1 / BAD_KEY_RATE_PER_S


def test_flood_is_refused_before_the_lookup_and_polling_goes_on(
    client: TestClient, sessions: sessionmaker[Session], alice: Caller, bob: Caller, lookups: list[str]
) -> None:
    # Given alice polls her job (so this API process has seen her key work)
    poll = f"/v1/jobs/{queued_job(sessions, alice)}"
    assert client.get(poll, headers=alice.headers).status_code == 200
    alice_hash = hash_key(alice.key)
    # When a flood of unknown keys (and some requests with no key) hits the polling route and a
    # listing route from one address, while alice keeps polling from the same address (one NAT)
    started = time.monotonic()
    flood: list[httpx.Response] = []
    keyed: list[bool] = []
    alice_polls: list[int] = []
    for i in range(FLOOD):
        path = poll if i % 2 == 0 else "/v1/jobs"
        keyed.append(i % 5 != 4)
        flood.append(client.get(path, headers=_unknown_key() if keyed[-1] else {}))
        if i % ALICE_EVERY == 0:
            alice_polls.append(client.get(poll, headers=alice.headers).status_code)
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in flood]
    # Then the burst is answered 401 (plus what refilled meanwhile), everything after it 429 with a Retry-After
    answered = statuses.count(401)
    assert statuses[:BAD_KEY_BURST] == [401] * BAD_KEY_BURST, statuses
    assert set(statuses) == {401, 429}, statuses
    assert answered <= BAD_KEY_BURST + BAD_KEY_RATE_PER_S * elapsed + 1, statuses
    _assert_refused(flood[statuses.index(429)])
    # And alice was served throughout
    assert alice_polls == [200] * len(alice_polls)
    # And an unknown key was looked up only while the address had tokens, plus once to find the bucket empty
    looked_up = sum(h != alice_hash for h in lookups)
    keyed_answered = sum(k and s == 401 for k, s in zip(keyed, statuses, strict=True))
    assert keyed_answered <= looked_up <= keyed_answered + 1 + (answered - BAD_KEY_BURST), (looked_up, statuses)

    # When more unknown keys arrive while the address is over its limit
    before = len(lookups)
    more = [client.get(poll if i % 2 else "/v1/jobs", headers=_unknown_key()) for i in range(MORE)]
    # Then all are refused, and not one of them was looked up
    for response in more:
        _assert_refused(response)
    assert lookups[before:] == []
    # And alice still is served, on both kinds of route
    assert client.get(poll, headers=alice.headers).status_code == 200
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200

    # When bob, whose key this process has not seen work, sends a request from the flooding address
    refused = client.get("/v1/jobs", headers=bob.headers)
    # Then he waits like the flood (docs/DESIGN.md), without a lookup either...
    _assert_refused(refused)
    assert hash_key(bob.key) not in lookups
    # ...and once the bucket has a token again, his good key works from that address
    time.sleep(int(refused.headers["retry-after"]))
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 200
    assert client.get(poll, headers=bob.headers).status_code == 404  # not his job: never a 403


def test_the_limit_is_per_address_and_shared_by_api_processes(
    settings: Settings, sessions: sessionmaker[Session], alice: Caller, lookups: list[str]
) -> None:
    # Given two API processes, and a flood from one address to the first that has emptied its bucket
    poll = f"/v1/jobs/{queued_job(sessions, alice)}"
    with (
        TestClient(create_app(settings), client=SHARED_ADDRESS) as first,
        TestClient(create_app(settings), client=SHARED_ADDRESS) as second,
    ):
        statuses = [first.get(poll, headers=_unknown_key()).status_code for _ in range(BAD_KEY_BURST + 1)]
        assert statuses == [401] * BAD_KEY_BURST + [429]
        # When the second process gets unknown keys from the same address
        before = len(lookups)
        one, two = second.get(poll, headers=_unknown_key()), second.get("/v1/jobs", headers=_unknown_key())
        # Then the first costs it one lookup and finds the shared bucket empty; the next not even that
        _assert_refused(one)
        _assert_refused(two)
        assert len(lookups) == before + 1
    # And unknown keys from another address are ordinary 401s
    with TestClient(create_app(settings), client=OTHER_ADDRESS) as elsewhere:
        assert elsewhere.get(poll, headers=_unknown_key()).status_code == 401
        assert elsewhere.get(poll).status_code == 401
        assert elsewhere.get(poll, headers=alice.headers).status_code == 200


def test_redis_down_fails_open(settings: Settings, alice: Caller, caplog: pytest.LogCaptureFixture) -> None:
    # Given an app whose Redis does not answer
    dead = f"redis://127.0.0.1:{services.free_port()}/0"
    broken = settings.model_copy(update={"redis_url": dead})
    with TestClient(create_app(broken)) as down, caplog.at_level(logging.WARNING, logger="services.api.ratelimit"):
        # When unknown keys come past the burst
        statuses = [down.get("/v1/jobs", headers=_unknown_key()).status_code for _ in range(BAD_KEY_BURST + 3)]
        # Then each is an ordinary 401 (never a 429 or a 500), a good key is served, and the outage is logged
        assert statuses == [401] * len(statuses)
        assert down.get("/v1/jobs", headers=alice.headers).status_code == 200
    assert any("rate limit not enforced" in r.getMessage() for r in caplog.records)


def test_zero_disables_the_limit(settings: Settings) -> None:
    off = settings.model_copy(update={"unknown_key_rate_per_s": 0.0})
    with TestClient(create_app(off), client=("203.0.113.5", 50000)) as free:
        assert [free.get("/v1/jobs", headers=_unknown_key()).status_code for _ in range(BAD_KEY_BURST + 3)] == [401] * (
            BAD_KEY_BURST + 3
        )


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::2", "2001:db8:1:2::/64"),  # the same /64: one client
        ("::ffff:203.0.113.5", "203.0.113.5"),
        (FLOOD_ADDRESS, FLOOD_ADDRESS),
        (None, "unknown"),
    ],
)
def test_client_addresses_are_bucketed(host: str | None, bucket: str) -> None:
    assert client_address(host) == bucket
