"""The client's exception hierarchy. Every error carries the API's ``code``, ``message`` and
``field`` (where the API named one) and the HTTP ``status`` (None when no answer came).

AtelierError
├── APIError                 the API answered with an error envelope
│   ├── ClientError          4xx: the request can be fixed
│   │   ├── InvalidInput     400/422: ``field`` names the bad field
│   │   ├── Unauthorized     401: no key, or a wrong or revoked key
│   │   ├── NotFound         404: absent, or another tenant's (never 403)
│   │   ├── Conflict         409: the request contradicts the resource's state
│   │   ├── PayloadTooLarge  413
│   │   ├── UnsupportedMedia 415
│   │   └── RateLimited      429: ``retry_after_s`` says when to try again
│   └── ServerError          5xx
│       └── ServiceUnavailable 503: a dependency is down; ``retry_after_s``
├── ConnectionFailed         no answer (refused, reset, timed out), after retries
├── ConfigError              no URL or no API key configured
├── JobFailed                a job ended failed or cancelled; ``job`` holds it
├── WaitTimeout              a wait ran out of time; ``job`` is the last state seen
├── DownloadError            an artifact name escapes the target folder, or its bytes do not match
└── WebhookVerificationError a received webhook's signature or timestamp does not check out
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

if TYPE_CHECKING:
    from atelier_client.models import Job

RETRY_AFTER_HEADER = "Retry-After"


class AtelierError(Exception):
    """Base of every error the client raises on purpose."""

    default_code: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        return f"{text} (field: {self.field})" if self.field else text


class APIError(AtelierError):
    """The API answered with an error status."""

    default_code = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, code=code, field=field, status=status, request_id=request_id)
        self.retry_after_s = retry_after_s


class ClientError(APIError):
    """4xx: the request is wrong; the caller can fix it."""

    default_code = "bad_request"


class InvalidInput(ClientError):
    """A field of the request is invalid; ``field`` names it."""

    default_code = "invalid_input"


class Unauthorized(ClientError):
    """Missing, wrong or revoked API key."""

    default_code = "unauthorized"


class NotFound(ClientError):
    """No such resource for this key's tenant."""

    default_code = "not_found"


class Conflict(ClientError):
    """The request contradicts the resource's current state."""

    default_code = "conflict"


class PayloadTooLarge(ClientError):
    """The body, an unpacked archive or an image is over a limit."""

    default_code = "payload_too_large"


class UnsupportedMedia(ClientError):
    """The upload is not an image, an archive of images or a weights file."""

    default_code = "unsupported_media"


class RateLimited(ClientError):
    """Over the tenant's request rate or active-job quota; ``retry_after_s`` says when to retry."""

    default_code = "too_many_requests"


class ServerError(APIError):
    """5xx: the server failed; ``request_id`` identifies a 500 in its log."""

    default_code = "internal"


class ServiceUnavailable(ServerError):
    """A backing service of the API is down; retry after ``retry_after_s``."""

    default_code = "unavailable"


class ConnectionFailed(AtelierError):
    """No answer from the API: refused, reset or timed out, after every retry."""

    default_code = "connection_failed"


class ConfigError(AtelierError):
    """The API URL or key is not configured."""

    default_code = "not_configured"


class JobFailed(AtelierError):
    """A job ended without succeeding; ``job`` is its final state, ``code`` its error code."""

    default_code = "job_failed"

    def __init__(self, job: Job) -> None:
        error = job.error
        if job.state == "cancelled":
            code, message = "cancelled", f"job {job.id} was cancelled"
        elif job.state == "stopped_early":
            code, message = "stopped_early", job.early_stop or f"job {job.id} was stopped early by its sweep"
        else:
            code = error.code if error else self.default_code
            message = error.message if error else f"job {job.id} ended {job.state}"
        super().__init__(message, code=code)
        self.job = job


class WaitTimeout(AtelierError):
    """A wait ran out of time before the job ended; ``job`` is the last state seen."""

    default_code = "wait_timeout"

    def __init__(self, message: str, *, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job


class DownloadError(AtelierError):
    """An artifact could not be saved safely: its name escapes the folder, or its bytes are wrong."""

    default_code = "download_failed"


class WebhookVerificationError(AtelierError):
    """A received webhook is not to be trusted: a header is missing, no signature matches the body,
    or its timestamp is outside the tolerance (atelier_client.webhooks.verify)."""

    default_code = "webhook_unverified"


STATUS_ERRORS: dict[int, type[APIError]] = {
    400: InvalidInput,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMedia,
    422: InvalidInput,
    429: RateLimited,
    503: ServiceUnavailable,
}


def retry_after_seconds(value: str | None) -> float | None:
    """The delay a ``Retry-After`` header asks for: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _envelope(response: httpx.Response) -> Mapping[str, Any]:
    """The ``error`` object of an answer, or {} when the body is not the API's envelope (a proxy's page)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def error_from_response(response: httpx.Response) -> APIError:
    """The error an unsuccessful answer stands for, with the envelope's code, message and field."""
    status = response.status_code
    error = _envelope(response)
    kind = STATUS_ERRORS.get(status) or (ServerError if status >= 500 else ClientError)
    message = error.get("message")
    if not isinstance(message, str) or not message:
        text = response.text.strip() if response.content else ""
        message = f"HTTP {status} {response.reason_phrase}" + (f": {text[:200]}" if text else "")
    code = error.get("code")
    field = error.get("field")
    request_id = error.get("request_id") or response.headers.get("X-Request-ID")
    return kind(
        message,
        code=code if isinstance(code, str) else None,
        field=field if isinstance(field, str) else None,
        status=status,
        request_id=request_id if isinstance(request_id, str) else None,
        retry_after_s=retry_after_seconds(response.headers.get(RETRY_AFTER_HEADER)),
    )
