"""A plain server-sent-events reader for tests: httpx streaming, a deadline on everything."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

READ_TIMEOUT_S = 40.0  # above the stream's 15 s heartbeat


@dataclass(frozen=True)
class Sse:
    """One event as received."""

    id: int
    event: str
    data: dict[str, Any]
    received: float = field(default=0.0, compare=False)  # time.time() at receipt


@dataclass
class Read:
    """What one connection got."""

    events: list[Sse]
    comments: list[str]
    ended: bool  # the server closed the stream (after done)


def read_events(
    url: str,
    headers: dict[str, str],
    *,
    last_event_id: int | None = None,
    stop: Callable[[list[Sse]], bool] = lambda _events: False,
    deadline_s: float = 120.0,
) -> Read:
    """Read a stream until the server ends it, ``stop(events)`` holds, or the deadline passes (then raise)."""
    sent = dict(headers)
    if last_event_id is not None:
        sent["Last-Event-ID"] = str(last_event_id)
    events: list[Sse] = []
    comments: list[str] = []
    deadline = time.monotonic() + deadline_s
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_S)
    with httpx.Client(timeout=timeout) as client, client.stream("GET", url, headers=sent) as response:
        if response.status_code != 200:
            response.read()
            raise AssertionError(f"stream answered {response.status_code}: {response.text}")
        current: dict[str, str] = {}
        data: list[str] = []
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream still open after {deadline_s}s; got {len(events)} events")
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif line == "":
                if data:
                    events.append(
                        Sse(
                            int(current["id"]),
                            current.get("event", "message"),
                            json.loads("\n".join(data)),
                            time.time(),
                        )
                    )
                    if stop(events):
                        return Read(events, comments, ended=False)
                current, data = {}, []
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    current[name] = value
    return Read(events, comments, ended=True)
