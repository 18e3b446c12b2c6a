"""Request body limits, enforced while the body streams in.

The multipart parser spools a whole upload to disk before any route code runs, and a JSON
body is read whole into memory, so a limit checked in the route comes too late: a chunked
request with no Content-Length could fill the disk first. This ASGI middleware refuses a
declared Content-Length over the limit at once, and stops reading a body at the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
PAYLOAD_TOO_LARGE = 413


class _BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once the body passes its limit."""


def too_large_response(limit: int, field: str) -> tuple[Message, Message]:
    """The 413 response messages, in the API's error format."""
    body = json.dumps(
        {
            "error": {
                "code": "payload_too_large",
                "message": f"request body is over the limit of {limit} bytes",
                "field": field,
            }
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": PAYLOAD_TOO_LARGE,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    """413 for bodies over ``limit_for(path)`` bytes: (limit, field the error names)."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], tuple[int, str]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass requests through, counting body bytes; answer 413 past the limit."""
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit, field = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            for message in too_large_response(limit, field):
                await send(message)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's own answer to the aborted body is replaced by the 413
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            for message in too_large_response(limit, field):
                await send(message)
