"""A small server-sent events parser (the WHATWG event-stream format) over decoded lines.

Lines come from ``httpx.Response.iter_lines()``, which splits on CR, LF and CRLF. A blank line
dispatches the event being built; ``data`` lines join with newlines; lines starting with ``:``
are comments (heartbeats); an event cut off by the end of the stream is dropped, as the
format says, so a dropped connection never yields half an event.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

DEFAULT_EVENT = "message"
COMMENT_PREFIX = ":"


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its type, data (lines joined by newlines), last event id and retry hint."""

    event: str
    data: str
    id: str | None
    retry_ms: int | None


class SSEDecoder:
    """Feed lines one at a time; ``feed`` returns an event when a blank line completes one."""

    def __init__(self, *, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self.comments = 0  # heartbeats seen: callers may use them as a sign of life
        self._event = ""
        self._data: list[str] = []
        self._has_fields = False

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line (without its line break)."""
        if not line:
            return self._dispatch()
        if line.startswith(COMMENT_PREFIX):
            self.comments += 1
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        self._has_fields = True
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._has_fields:
            return None
        data, event = self._data, self._event
        self._data, self._event, self._has_fields = [], "", False
        if not data:
            return None  # an event without data is not dispatched
        return ServerSentEvent(
            event=event or DEFAULT_EVENT, data="\n".join(data), id=self.last_event_id, retry_ms=self.retry_ms
        )


def iter_sse(lines: Iterable[str], decoder: SSEDecoder | None = None) -> Iterator[ServerSentEvent]:
    """The events in a stream of lines."""
    decoder = decoder or SSEDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


async def aiter_sse(lines: AsyncIterable[str], decoder: SSEDecoder | None = None) -> AsyncIterator[ServerSentEvent]:
    """The events in an async stream of lines."""
    decoder = decoder or SSEDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
