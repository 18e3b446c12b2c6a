"""Atelier's exception hierarchy. One handler in the API maps these to HTTP.

AtelierError
├── ClientError (4xx: the caller can fix it)
│   ├── InvalidInput        400/422: a field is wrong; ``field`` names it
│   ├── Unauthorized        401: no key, or a wrong or revoked key
│   ├── NotFound            404: absent, or not the caller's (never 403)
│   ├── Conflict            409: the request contradicts the resource's state
│   ├── PayloadTooLarge     413
│   ├── UnsupportedMedia    415
│   └── TooManyRequests     429
├── ServiceUnavailable      503: a dependency is down; retry later
└── TransientError          worker side: worth retrying (Celery retries only these)
    └── StorageUnavailable
JobFailed                   worker side: the job cannot succeed; recorded as its error
"""

from __future__ import annotations


class AtelierError(Exception):
    """Base of every error Atelier raises on purpose."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ClientError(AtelierError):
    """The request is wrong; the caller can fix it."""

    status_code = 400
    code = "bad_request"


class InvalidInput(ClientError):
    """A field of the request is invalid."""

    status_code = 422
    code = "invalid_input"


class Unauthorized(ClientError):
    """Missing, wrong or revoked API key."""

    status_code = 401
    code = "unauthorized"


class NotFound(ClientError):
    """The resource does not exist for this tenant."""

    status_code = 404
    code = "not_found"


class Conflict(ClientError):
    """The request contradicts the resource's current state."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(ClientError):
    """The request body or an unpacked archive is over a limit."""

    status_code = 413
    code = "payload_too_large"


class UnsupportedMedia(ClientError):
    """The upload is not an image or a supported archive."""

    status_code = 415
    code = "unsupported_media"


class TooManyRequests(ClientError):
    """A quota or rate limit is exceeded; ``retry_after_s`` says when to try again, if known."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class ServiceUnavailable(AtelierError):
    """A backing service is unreachable; try again later."""

    status_code = 503
    code = "unavailable"


class TransientError(AtelierError):
    """A failure worth retrying (network blips, a restarting dependency)."""

    code = "transient"


class StorageUnavailable(TransientError):
    """The object store did not answer within the retry deadline."""

    code = "storage_unavailable"


class JobFailed(AtelierError):
    """The job cannot succeed; ``code`` and the message are stored on the job."""

    code = "job_failed"

    def __init__(self, message: str, *, code: str = "job_failed") -> None:
        super().__init__(message)
        self.code = code
