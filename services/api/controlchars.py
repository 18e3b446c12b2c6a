"""Control characters in a request's path or query string: a 422 naming the parameter, before
routing. Nothing Atelier names (job types, metric and artifact names, ids, cursors) contains one,
and Postgres refuses NUL in text, so a request carrying one is refused here instead of failing
further down. The cost on the polling hot path is one regex search of the path; a query string
is parsed only when there is one (the same way Starlette parses it for the route)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import routing
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.names import CONTROL_CHARACTERS, control_character

UNPROCESSABLE = 422
PATH_FIELD = "path"
QUERY_FIELD = "query"
PLACEHOLDER = "_"  # stands in for a control character while finding which path parameter held it


class ControlCharacterMiddleware:
    """422 ``invalid_input`` for a NUL, newline or other control character in the path or query."""

    def __init__(self, app: ASGIApp, *, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request, or pass it on untouched."""
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                await _refuse(send, *problem)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> tuple[str, str] | None:
        """(field, message) for the first control character, or None."""
        path: str = scope["path"]
        if CONTROL_CHARACTERS.search(path) is not None:
            field = self._path_field(path)
            return field, f"{field}: control characters are not allowed (found {control_character(path)})"
        query: bytes = scope.get("query_string", b"")
        if query:
            for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                found = control_character(key) or control_character(value)
                if found is not None:
                    field = QUERY_FIELD if control_character(key) else key
                    return field, f"{field}: control characters are not allowed (found {found})"
        return None

    def _path_field(self, path: str) -> str:
        """The path parameter that holds a control character, e.g. ``name``; ``path`` if no route has one there."""
        # Match with the control characters replaced: a `{name:path}` pattern's `.` stops at a newline.
        stand_in = CONTROL_CHARACTERS.sub(PLACEHOLDER, path)
        for pattern in _path_patterns(self.routes()):
            matched = pattern.match(stand_in)
            if matched is None:
                continue
            for name in matched.groupdict():
                start, end = matched.span(name)
                if CONTROL_CHARACTERS.search(path, start, end) is not None:
                    return name
        return PATH_FIELD


def _path_patterns(routes: Iterable[BaseRoute]) -> list[re.Pattern[str]]:
    """Every route's full path regex, included routers' routes too."""
    # FastAPI >= 0.120 keeps included routers as one entry each; iter_route_contexts flattens them.
    flatten: Callable[[Iterable[BaseRoute]], Iterable[Any]] | None = getattr(routing, "iter_route_contexts", None)
    flat = flatten(list(routes)) if flatten is not None else routes
    return [pattern for route in flat if (pattern := getattr(route, "path_regex", None)) is not None]


async def _refuse(send: Send, field: str, message: str) -> None:
    body = json.dumps({"error": {"code": "invalid_input", "message": message, "field": field}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": UNPROCESSABLE,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
