"""Webhooks on the client side: deliveries and the signing secret (models, calls, both clients, the
CLI), and ``atelier_client.webhooks.verify`` checked against the server's own signing
(``shared.webhooks``) and the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from atelier_client import (
    APIError,
    AsyncAtelier,
    Atelier,
    ConnectionFailed,
    WebhookDelivery,
    WebhookSecret,
    WebhookVerificationError,
    calls,
)
from atelier_client.cli import Options, main
from atelier_client.webhooks import verify
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as LibraryVerificationError

from shared import webhooks as server
from tests.unit.client.conftest import API_KEY, BASE_URL, JOB_ID, FakeAPI, job_json

DELIVERIES_PATH = f"/v1/jobs/{JOB_ID}/webhooks"
SECRET_PATH = "/v1/webhooks/secret"
ROTATE_PATH = "/v1/webhooks/secret/rotate"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
UNTIL = "2025-01-02T00:00:00Z"
HOOK = "https://hooks.example.test/atelier"
NOW = 1_700_000_000
TOLERANCE_S = 300


def delivery_json(
    event_id: int, event: str, state: str, attempts: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    """A delivery as ``GET /v1/jobs/{id}/webhooks`` renders it."""
    body: dict[str, Any] = {
        "id": str(uuid.UUID(int=event_id)),
        "event": event,
        "event_id": event_id,
        "url": HOOK,
        "state": state,
        "attempts": attempts,
        "next_attempt_at": None,
        "created_at": "2025-01-01T00:00:00Z",
        "finished_at": None,
    }
    return body | fields


def attempt_json(n: int, status: int | None, latency: float | None, error: str | None = None) -> dict[str, Any]:
    """An attempt as the API renders it."""
    return {
        "attempt": n,
        "started_at": f"2025-01-01T00:00:0{n}Z",
        "status_code": status,
        "latency_ms": latency,
        "error": error,
    }


# A completed event delivered on its third try; an artifact event still being retried.
DELIVERIES = [
    delivery_json(
        7,
        "completed",
        "delivered",
        [
            attempt_json(1, None, 10003.2, "timed out after 10 s [hard deadline]"),
            attempt_json(2, 503, 41.4),
            attempt_json(3, 200, 12.0),
        ],
        finished_at="2025-01-01T00:00:09Z",
    ),
    delivery_json(9, "artifact", "pending", [attempt_json(1, 500, 8.6)], next_attempt_at="2025-01-01T00:00:30Z"),
]


def page(items: list[dict[str, Any]], cursor: str | None = None) -> httpx.Response:
    return httpx.Response(200, json={"items": items, "next_cursor": cursor})


def secret_reply(secret: str = SECRET, until: str | None = None) -> httpx.Response:
    return httpx.Response(200, json={"secret": secret, "previous_valid_until": until})


# --- models and calls ----------------------------------------------------------------------------


def test_a_delivery_parses_with_its_attempts_in_order() -> None:
    delivery = WebhookDelivery.from_dict(DELIVERIES[0] | {"unknown": "ignored"})
    assert (delivery.event, delivery.event_id, delivery.state, delivery.url) == ("completed", 7, "delivered", HOOK)
    assert delivery.delivered and delivery.next_attempt_at is None
    assert delivery.finished_at == datetime(2025, 1, 1, 0, 0, 9, tzinfo=UTC)
    assert [(a.attempt, a.status_code, a.latency_ms, a.ok) for a in delivery.attempts] == [
        (1, None, 10003.2, False),
        (2, 503, 41.4, False),
        (3, 200, 12.0, True),
    ]
    assert delivery.attempts[0].error == "timed out after 10 s [hard deadline]"
    # The webhook-id header the receiver got is msg_ + the id's hex, as the server makes it
    assert delivery.message_id == server.message_id(uuid.UUID(int=7))
    pending = WebhookDelivery.from_dict(DELIVERIES[1])
    assert not pending.delivered and pending.next_attempt_at == datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC)
    # A sparse object (an older or newer server) still parses
    sparse = WebhookDelivery.from_dict({"id": "x", "attempts": [{"attempt": 1}, "junk"]})
    assert (
        sparse.state == "unknown" and [a.attempt for a in sparse.attempts] == [1] and sparse.attempts[0].error is None
    )


def test_the_secret_parses_and_hides_itself_from_repr() -> None:
    secret = WebhookSecret.from_dict({"secret": SECRET, "previous_valid_until": UNTIL})
    assert secret.secret == SECRET and secret.previous_valid_until == datetime(2025, 1, 2, tzinfo=UTC)
    assert SECRET not in repr(secret)
    with pytest.raises(ValueError, match="no secret"):
        WebhookSecret.from_dict({"previous_valid_until": None})


def test_the_calls_name_the_right_paths_and_only_rotation_is_not_repeatable() -> None:
    listed = calls.webhook_deliveries("a/b", limit=5, cursor="c1")
    assert (listed.method, listed.path, dict(listed.params or {})) == (
        "GET",
        "/v1/jobs/a%2Fb/webhooks",
        {"limit": 5, "cursor": "c1"},
    )
    assert (calls.webhook_secret().method, calls.webhook_secret().path) == ("GET", SECRET_PATH)
    rotate = calls.rotate_webhook_secret()
    assert (rotate.method, rotate.path, rotate.idempotent) == ("POST", ROTATE_PATH, False)
    assert listed.idempotent and calls.webhook_secret().idempotent


# --- the clients -----------------------------------------------------------------------------------


def test_deliveries_page_through_and_the_secret_is_read_and_rotated(atelier: Atelier, api: FakeAPI) -> None:
    api.on("GET", DELIVERIES_PATH, page(DELIVERIES[:1], "7"), page(DELIVERIES[1:]))
    api.on("GET", SECRET_PATH, secret_reply())
    api.on("POST", ROTATE_PATH, secret_reply(NEW_SECRET, UNTIL))
    deliveries = list(atelier.webhook_deliveries(JOB_ID, page_size=1))
    assert [(d.event, d.state) for d in deliveries] == [("completed", "delivered"), ("artifact", "pending")]
    queries = [parse_qs(r.url.query.decode()) for r in api.to("GET", DELIVERIES_PATH)]
    assert queries == [{"limit": ["1"]}, {"limit": ["1"], "cursor": ["7"]}]
    assert atelier.webhook_secret() == WebhookSecret(secret=SECRET, previous_valid_until=None)
    rotated = atelier.rotate_webhook_secret()
    assert rotated.secret == NEW_SECRET and rotated.previous_valid_until == datetime(2025, 1, 2, tzinfo=UTC)
    # And a job handle lists its own deliveries
    api.on(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        httpx.Response(200, json=job_json(webhook=HOOK, webhook_events_filter=["completed"])),
    )
    api.on("GET", DELIVERIES_PATH, page(DELIVERIES))
    job = atelier.get_job(JOB_ID)
    assert job.webhook == HOOK and job.webhook_events_filter == ["completed"]
    assert [d.event_id for d in job.webhook_deliveries()] == [7, 9]


def test_a_rotation_that_may_have_reached_the_server_is_not_sent_again(atelier: Atelier, api: FakeAPI) -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    api.on("POST", ROTATE_PATH, drop)
    with pytest.raises(ConnectionFailed):
        atelier.rotate_webhook_secret()
    assert len(api.to("POST", ROTATE_PATH)) == 1
    # While a read of the secret is simply retried
    api.on("GET", SECRET_PATH, drop, secret_reply())
    assert atelier.webhook_secret().secret == SECRET and len(api.to("GET", SECRET_PATH)) == 2


def test_an_answer_without_a_secret_is_a_bad_response(atelier: Atelier, api: FakeAPI) -> None:
    api.on("GET", SECRET_PATH, httpx.Response(200, json={"items": []}))
    with pytest.raises(APIError) as raised:
        atelier.webhook_secret()
    assert raised.value.code == "bad_response"


def test_the_async_client_has_the_same_webhook_calls(async_atelier: AsyncAtelier, api: FakeAPI) -> None:
    api.on("GET", DELIVERIES_PATH, page(DELIVERIES[:1], "7"), page(DELIVERIES[1:]))
    api.on("GET", SECRET_PATH, secret_reply())
    api.on("POST", ROTATE_PATH, secret_reply(NEW_SECRET, UNTIL))

    async def run() -> tuple[list[WebhookDelivery], WebhookSecret, WebhookSecret]:
        async with async_atelier:
            deliveries = [d async for d in async_atelier.webhook_deliveries(JOB_ID)]
            return deliveries, await async_atelier.webhook_secret(), await async_atelier.rotate_webhook_secret()

    deliveries, secret, rotated = asyncio.run(run())
    assert [d.event_id for d in deliveries] == [7, 9] and deliveries[0].attempts[-1].status_code == 200
    assert secret.secret == SECRET and rotated.secret == NEW_SECRET and rotated.previous_valid_until is not None
    assert [r.method for r in api.requests] == ["GET", "GET", "GET", "POST"]


# --- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def options(api: FakeAPI, policy: Any) -> Options:
    return Options(transport=httpx.MockTransport(api.handle), retry=policy)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("ATELIER_URL", BASE_URL)
    monkeypatch.setenv("ATELIER_API_KEY", API_KEY)
    monkeypatch.setenv("ATELIER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("COLUMNS", "200")


def test_submit_sends_the_webhook_and_its_event_filter(
    env: None, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("POST", "/v1/jobs", httpx.Response(201, json=job_json()))
    code = main(
        ["submit", "gan.train", "steps=5", "--webhook", HOOK, "--webhook-events", "start, completed,start"],
        options=options,
    )
    assert code == 0 and capsys.readouterr().out.strip() == JOB_ID
    sent = json.loads(api.bodies[0])
    assert sent["webhook"] == HOOK and sent["webhook_events_filter"] == ["start", "completed"]
    # Without a filter the server's default applies: none is sent
    assert main(["submit", "gan.train", "--webhook", HOOK], options=options) == 0
    assert "webhook_events_filter" not in json.loads(api.bodies[-1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook", HOOK, "--webhook-events", "start,finished"], "unknown event(s) finished"),
        (["--webhook", HOOK, "--webhook-events", ","], "no event given"),
        (["--webhook-events", "completed"], "needs --webhook"),
    ],
)
def test_a_bad_webhook_filter_is_a_usage_error_and_sends_nothing(
    env: None, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["submit", "gan.train", *args], options=options) == 2
    assert message in capsys.readouterr().err
    assert api.requests == []


def test_webhooks_lists_each_delivery_with_its_attempts(
    env: None, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", DELIVERIES_PATH, page(DELIVERIES[:1], "7"), page(DELIVERIES[1:]))
    assert main(["webhooks", JOB_ID], options=options) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["EVENT", "EVENT", "ID", "STATE", "ATTEMPTS"]
    completed = next(line for line in lines if line.startswith("completed"))
    assert completed.split()[:3] == ["completed", "7", "delivered"]
    assert "#1 in 10003 ms: timed out after 10 s [hard deadline]" in out  # the brackets are text, not markup
    assert "#2 503 in 41 ms" in out and "#3 200 in 12 ms" in out
    artifact = next(line for line in lines if line.startswith("artifact"))
    assert artifact.split()[:4] == ["artifact", "9", "pending,", "next"] and "#1 500 in 9 ms" in artifact
    # And --json gives every field, with the webhook-id the receiver saw
    api.on("GET", DELIVERIES_PATH, page(DELIVERIES))
    assert main(["webhooks", JOB_ID, "--json"], options=options) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["event_id"] for d in listed] == [7, 9]
    assert listed[0]["webhook_id"] == server.message_id(uuid.UUID(int=7))
    assert listed[0]["attempts"][2] == {
        "attempt": 3,
        "started_at": "2025-01-01T00:00:03+00:00",
        "status_code": 200,
        "latency_ms": 12.0,
        "error": None,
    }


def test_webhooks_of_a_job_without_any_says_so(
    env: None, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", DELIVERIES_PATH, page([]))
    assert main(["webhooks", JOB_ID], options=options) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"job {JOB_ID} has no webhook deliveries" in captured.err


def test_webhook_secret_prints_it_and_rotate_makes_a_new_one(
    env: None, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", SECRET_PATH, secret_reply())
    api.on("POST", ROTATE_PATH, secret_reply(NEW_SECRET, UNTIL))
    assert main(["webhook-secret"], options=options) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{SECRET}\n" and captured.err == ""
    assert main(["webhook-secret", "--rotate"], options=options) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{NEW_SECRET}\n" and "previous secret also signs deliveries until" in captured.err
    assert [r.method for r in api.requests] == ["GET", "POST"]


# --- verify ----------------------------------------------------------------------------------------

BODY = json.dumps(
    {"type": "job.completed", "data": {"job": {"id": JOB_ID, "state": "succeeded"}}}, separators=(",", ":")
)
MSG_ID = server.message_id(uuid.UUID(int=42))


def signed(keys: list[str], *, timestamp: int = NOW, body: str = BODY) -> dict[str, str]:
    """The headers the server's worker sends with one attempt."""
    return server.headers(keys=keys, msg_id=MSG_ID, timestamp=timestamp, body=body)


def test_verify_accepts_what_the_server_signs_and_returns_the_payload() -> None:
    secret = server.new_secret()
    headers = signed([secret])
    assert verify(secret, headers, BODY, now=NOW) == json.loads(BODY)
    assert verify(secret, httpx.Headers({k.upper(): v for k, v in headers.items()}), BODY.encode(), now=NOW + 299)
    assert verify(secret.removeprefix("whsec_"), headers, BODY, now=NOW - 299)  # the prefix is optional


def test_after_a_rotation_either_secret_verifies_the_two_signatures() -> None:
    current, previous = server.new_secret(), server.new_secret()
    headers = signed([current, previous])
    assert len(headers["webhook-signature"].split()) == 2
    assert verify(current, headers, BODY, now=NOW) and verify(previous, headers, BODY, now=NOW)
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify(server.new_secret(), headers, BODY, now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, b: (h, b.replace("succeeded", "failed")), "no signature"),  # a tampered body
        (lambda h, b: (h, b + " "), "no signature"),  # a re-serialised body
        (lambda h, b: (h | {"webhook-id": "msg_other"}, b), "no signature"),
        (lambda h, b: (h | {"webhook-timestamp": str(NOW + 1)}, b), "no signature"),
        (lambda h, b: (h | {"webhook-signature": "v2," + h["webhook-signature"][3:]}, b), "no signature"),
        (lambda h, b: (h | {"webhook-signature": "v1,not*base64"}, b), "no signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
        (lambda h, b: (h | {"webhook-timestamp": "17e8"}, b), "not Unix seconds"),
    ],
)
def test_verify_refuses_anything_altered(change: Any, message: str) -> None:
    secret = server.new_secret()
    headers, body = change(signed([secret]), BODY)
    with pytest.raises(WebhookVerificationError, match=message) as raised:
        verify(secret, headers, body, now=NOW)
    assert raised.value.code == "webhook_unverified"


def test_verify_refuses_stale_and_future_timestamps_even_when_signed() -> None:
    secret = server.new_secret()
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, signed([secret]), BODY, now=NOW + TOLERANCE_S + 1)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify(secret, signed([secret]), BODY, now=NOW - TOLERANCE_S - 1)
    assert verify(secret, signed([secret]), BODY, tolerance_s=3600, now=NOW + 3000)
    # And without `now` the clock decides: a delivery signed just now passes
    fresh = signed([secret], timestamp=int(time.time()))
    assert verify(secret, fresh, BODY)


def test_a_malformed_secret_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="base64"):
        verify("whsec_not*base64", signed([SECRET]), BODY, now=NOW)
    with pytest.raises(ValueError, match="empty"):
        verify("whsec_", signed([SECRET]), BODY, now=NOW)


def test_verify_agrees_with_the_standardwebhooks_library() -> None:
    secret = server.new_secret()
    library = Webhook(secret)
    now = int(time.time())
    # What the library signs, verify accepts; what the server signs, the library accepts
    by_library = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(now),
        "webhook-signature": library.sign(MSG_ID, datetime.fromtimestamp(now, UTC), BODY),
    }
    assert by_library["webhook-signature"] == server.sign(secret, MSG_ID, now, BODY)
    assert verify(secret, by_library, BODY) == json.loads(BODY)
    by_server = signed([secret], timestamp=now)
    assert library.verify(BODY, by_server) == verify(secret, by_server, BODY)
    # And both refuse a tampered body and a stale timestamp
    tampered = BODY.replace("succeeded", "failed")
    stale = signed([secret], timestamp=now - TOLERANCE_S - 60)
    for headers, body in ((by_server, tampered), (stale, BODY)):
        with pytest.raises(LibraryVerificationError):
            library.verify(body, headers)
        with pytest.raises(WebhookVerificationError):
            verify(secret, headers, body)
