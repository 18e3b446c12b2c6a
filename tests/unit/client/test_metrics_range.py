"""Metrics over a range of steps: ``until_step`` is sent by both clients and their job handles, and
left out when not given (the server's default: no upper bound)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import httpx
from atelier_client import AsyncAtelier, Atelier, calls

from tests.unit.client.conftest import JOB_ID, FakeAPI, job_json

METRICS_PATH = f"/v1/jobs/{JOB_ID}/metrics"
POINT = {"step": 199, "value": 2.0, "min": 1.0, "max": 3.0, "count": 10}


def reply(request: httpx.Request) -> httpx.Response:
    """A fresh answer each time (a response object is bound to the client that read it)."""
    return httpx.Response(200, json={"series": {"g_loss": [POINT]}, "until_step": 199})


def sent_query(api: FakeAPI) -> dict[str, list[str]]:
    return parse_qs(api.requests[-1].url.query.decode())


def test_the_call_carries_until_step_only_when_given() -> None:
    zoomed = calls.metrics(JOB_ID, names=["g_loss"], since_step=99, until_step=199, max_points=10)
    assert dict(zoomed.params or {}) == {"since_step": 99, "until_step": 199, "names": "g_loss", "max_points": 10}
    assert "until_step" not in (calls.metrics(JOB_ID).params or {})
    assert dict(calls.metrics(JOB_ID, until_step=0).params or {})["until_step"] == 0  # 0 is a bound, not "none"


def test_a_client_and_a_job_handle_zoom_into_a_range(atelier: Atelier, api: FakeAPI) -> None:
    # Given a job's metrics
    api.on("GET", METRICS_PATH, reply)
    api.on("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json(state="running")))
    # When a range is asked for through the client, then through a job handle
    series = atelier.metrics(JOB_ID, names=["g_loss"], since_step=99, until_step=199, max_points=10)
    # Then the query names both ends and the answer is parsed as usual
    assert sent_query(api) == {"since_step": ["99"], "until_step": ["199"], "names": ["g_loss"], "max_points": ["10"]}
    assert series["g_loss"].steps == [199] and series["g_loss"].values == [2.0]
    atelier.get_job(JOB_ID).metrics(since_step=5, until_step=50)
    assert sent_query(api) == {"since_step": ["5"], "until_step": ["50"]}
    # And without until_step there is no upper bound in the query
    atelier.metrics(JOB_ID)
    assert "until_step" not in sent_query(api)


def test_the_async_client_and_handle_send_until_step_too(async_atelier: AsyncAtelier, api: FakeAPI) -> None:
    api.on("GET", METRICS_PATH, reply)
    api.on("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json(state="running")))

    async def zoom() -> list[dict[str, list[str]]]:
        async with async_atelier:
            await async_atelier.metrics(JOB_ID, since_step=99, until_step=199)
            first = sent_query(api)
            job = await async_atelier.get_job(JOB_ID)
            await job.metrics(until_step=7)
            return [first, sent_query(api)]

    assert asyncio.run(zoom()) == [
        {"since_step": ["99"], "until_step": ["199"]},
        {"since_step": ["-1"], "until_step": ["7"]},
    ]
