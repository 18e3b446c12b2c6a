"""The API's requests, built once for both clients: each builder returns a ``Call`` (method, path,
query, body, headers, timeout, whether a retry is safe) and how to parse its answer. The sync and
async clients only send calls; nothing here does I/O."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from atelier_client.models import (
    Artifact,
    Deletion,
    Job,
    MetricSeries,
    Model,
    Page,
    Sweep,
    Upload,
    Usage,
    WebhookDelivery,
    WebhookSecret,
)

T = TypeVar("T")
Item = TypeVar("Item")

JOBS = "/v1/jobs"
UPLOADS = "/v1/uploads"
MODELS = "/v1/models"
SWEEPS = "/v1/sweeps"
WEBHOOKS = "/v1/webhooks"
IDEMPOTENCY_HEADER = "Idempotency-Key"
PREFER_HEADER = "Prefer"
LAST_EVENT_ID_HEADER = "Last-Event-ID"
EVENT_STREAM = "text/event-stream"
MAX_PREFER_WAIT_S = 60
WAIT_MARGIN_S = 15.0  # on top of Prefer: wait=N for the server to answer
STREAM_READ_TIMEOUT_S = 45.0  # three missed 15 s heartbeats: the connection is dead
UPLOAD_READ_TIMEOUT_S = 300.0  # the API checks every image of an upload before it answers
DOWNLOAD_READ_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
WEBHOOK_EVENTS = frozenset({"start", "progress", "artifact", "completed"})
PRIORITIES = ("low", "normal", "high")  # orders a tenant's own queued jobs; fair share orders tenants
DEFAULT_PAGE_SIZE = 100

BodyFactory = Callable[[], Iterator[bytes]]


def _none(_response: httpx.Response) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class Call(Generic[T]):
    """One API request and the parser of its successful answer.

    ``body`` makes a fresh streamed body for each try; ``idempotent`` says whether a request that
    may already have reached the server can be sent again.
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: BodyFactory | None = None
    idempotent: bool = True
    timeout: httpx.Timeout | None = None


def segment(value: str) -> str:
    """One path segment, quoted so that an id given by a user cannot change the path."""
    return quote(value, safe="")


def _json(response: httpx.Response) -> Any:
    return json.loads(response.content)


def _job(response: httpx.Response) -> Job:
    return Job.from_dict(_json(response))


def _page(parse_item: Callable[[Mapping[str, Any]], Item]) -> Callable[[httpx.Response], Page[Item]]:
    def parse(response: httpx.Response) -> Page[Item]:
        body = _json(response)
        items = body.get("items") if isinstance(body, Mapping) else None
        cursor = body.get("next_cursor") if isinstance(body, Mapping) else None
        return Page(
            items=[parse_item(item) for item in items or [] if isinstance(item, Mapping)],
            next_cursor=cursor if isinstance(cursor, str) and cursor else None,
        )

    return parse


def _deletion(response: httpx.Response) -> Deletion:
    return Deletion.from_dict(_json(response))


def _model(response: httpx.Response) -> Model:
    body = _json(response)
    if not isinstance(body, Mapping):
        raise ValueError("the answer holds no model")
    return Model.from_dict(body)


def _sweep(response: httpx.Response) -> Sweep:
    body = _json(response)
    if not isinstance(body, Mapping):
        raise ValueError("the answer holds no sweep")
    return Sweep.from_dict(body)


def _secret(response: httpx.Response) -> WebhookSecret:
    body = _json(response)
    if not isinstance(body, Mapping):
        raise ValueError("the answer holds no secret")
    return WebhookSecret.from_dict(body)


def _paged(limit: int | None, cursor: str | None, **filters: Any) -> dict[str, Any]:
    params = {k: v for k, v in filters.items() if v is not None}
    params["limit"] = limit or DEFAULT_PAGE_SIZE
    if cursor:
        params["cursor"] = cursor
    return params


# --- jobs --------------------------------------------------------------------------------------


def get_job(job_id: str) -> Call[Job]:
    """``GET /v1/jobs/{id}``."""
    return Call(method="GET", path=f"{JOBS}/{segment(job_id)}", parse=_job)


def list_jobs(
    *, state: str | None = None, job_type: str | None = None, limit: int | None = None, cursor: str | None = None
) -> Call[Page[Job]]:
    """``GET /v1/jobs``: one page, newest first."""
    params = _paged(limit, cursor, state=state, type=job_type)
    return Call(method="GET", path=JOBS, params=params, parse=_page(Job.from_dict))


def submit(
    job_type: str,
    params: Mapping[str, Any],
    *,
    webhook: str | None = None,
    webhook_events_filter: Sequence[str] | None = None,
    wait_s: int | None = None,
    idempotency_key: str | None = None,
    priority: str | None = None,
) -> Call[Job]:
    """``POST /v1/jobs`` with an Idempotency-Key (kept across this call's retries), and ``Prefer: wait=N``."""
    body: dict[str, Any] = {"type": job_type, "params": dict(params)}
    if webhook is not None:
        body["webhook"] = webhook
    if webhook_events_filter is not None:
        unknown = sorted(set(webhook_events_filter) - WEBHOOK_EVENTS)
        if unknown:
            raise ValueError(f"webhook_events_filter: unknown events {unknown}; known: {sorted(WEBHOOK_EVENTS)}")
        body["webhook_events_filter"] = list(webhook_events_filter)
    if priority is not None:
        if priority not in PRIORITIES:
            raise ValueError(f"priority: one of {list(PRIORITIES)}, got {priority!r}")
        body["priority"] = priority
    headers = {IDEMPOTENCY_HEADER: idempotency_key or str(uuid.uuid4())}
    timeout = None
    if wait_s is not None:
        if not 0 <= wait_s <= MAX_PREFER_WAIT_S:
            raise ValueError(f"wait: between 0 and {MAX_PREFER_WAIT_S} seconds, got {wait_s}")
        headers[PREFER_HEADER] = f"wait={wait_s}"
        timeout = httpx.Timeout(wait_s + WAIT_MARGIN_S, connect=CONNECT_TIMEOUT_S)
    # The Idempotency-Key makes a repeated submit return the first job: safe to retry.
    return Call(method="POST", path=JOBS, json=body, headers=headers, parse=_job, timeout=timeout)


def cancel(job_id: str) -> Call[Job]:
    """``POST /v1/jobs/{id}/cancel``."""
    return Call(method="POST", path=f"{JOBS}/{segment(job_id)}/cancel", parse=_job)


def usage() -> Call[Usage]:
    """``GET /v1/usage``."""
    return Call(method="GET", path="/v1/usage", parse=lambda r: Usage.from_dict(_json(r)))


def delete_job(job_id: str) -> Call[Deletion]:
    """``DELETE /v1/jobs/{id}``: 202 while its data is removed (again 202 until then), then 404."""
    return Call(method="DELETE", path=f"{JOBS}/{segment(job_id)}", parse=_deletion)


def metrics(
    job_id: str,
    *,
    names: Sequence[str] | None = None,
    since_step: int = -1,
    until_step: int | None = None,
    max_points: int | None = None,
) -> Call[dict[str, MetricSeries]]:
    """``GET /v1/jobs/{id}/metrics``: the steps in (``since_step``, ``until_step``], downsampled past ``max_points``."""
    params: dict[str, Any] = {"since_step": since_step}
    if until_step is not None:
        params["until_step"] = until_step
    if names:
        params["names"] = ",".join(names)
    if max_points is not None:
        params["max_points"] = max_points
    return Call(
        method="GET",
        path=f"{JOBS}/{segment(job_id)}/metrics",
        params=params,
        parse=lambda r: MetricSeries.from_response(_json(r)),
    )


def list_artifacts(job_id: str, *, limit: int | None = None, cursor: str | None = None) -> Call[Page[Artifact]]:
    """``GET /v1/jobs/{id}/artifacts``: one page."""
    return Call(
        method="GET",
        path=f"{JOBS}/{segment(job_id)}/artifacts",
        params=_paged(limit, cursor),
        parse=_page(Artifact.from_dict),
    )


def artifact(job_id: str, name: str) -> Call[None]:
    """``GET /v1/jobs/{id}/artifacts/{name}``, to be streamed (``name`` keeps its slashes)."""
    return Call(
        method="GET",
        path=f"{JOBS}/{segment(job_id)}/artifacts/{quote(name, safe='/')}",
        parse=_none,
        timeout=httpx.Timeout(DOWNLOAD_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )


def events(
    job_id: str, *, last_event_id: int | None = None, read_timeout_s: float = STREAM_READ_TIMEOUT_S
) -> Call[None]:
    """``GET /v1/jobs/{id}/events``, to be streamed; ``Last-Event-ID`` resumes after that event."""
    headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-cache"}
    if last_event_id is not None:
        headers[LAST_EVENT_ID_HEADER] = str(last_event_id)
    return Call(
        method="GET",
        path=f"{JOBS}/{segment(job_id)}/events",
        headers=headers,
        parse=_none,
        timeout=httpx.Timeout(read_timeout_s, connect=CONNECT_TIMEOUT_S),
    )


# --- uploads -------------------------------------------------------------------------------------


def upload(content_type: str, body: BodyFactory) -> Call[Upload]:
    """``POST /v1/uploads`` with a streamed multipart body. Not idempotent: retried only when unsent or refused."""
    return Call(
        method="POST",
        path=UPLOADS,
        headers={"Content-Type": content_type},
        body=body,
        parse=lambda r: Upload.from_dict(_json(r)),
        idempotent=False,
        timeout=httpx.Timeout(UPLOAD_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )


def get_upload(upload_id: str) -> Call[Upload]:
    """``GET /v1/uploads/{id}``."""
    return Call(method="GET", path=f"{UPLOADS}/{segment(upload_id)}", parse=lambda r: Upload.from_dict(_json(r)))


def delete_upload(upload_id: str) -> Call[Deletion]:
    """``DELETE /v1/uploads/{id}``: 202 while its files are removed, then 404; 409 while live jobs use it."""
    return Call(method="DELETE", path=f"{UPLOADS}/{segment(upload_id)}", parse=_deletion)


def list_uploads(*, limit: int | None = None, cursor: str | None = None) -> Call[Page[Upload]]:
    """``GET /v1/uploads``: one page, newest first."""
    return Call(method="GET", path=UPLOADS, params=_paged(limit, cursor), parse=_page(Upload.from_dict))


# --- style models --------------------------------------------------------------------------------


def list_models(*, limit: int | None = None, cursor: str | None = None) -> Call[Page[Model]]:
    """``GET /v1/models``: one page of trained style models, newest first."""
    return Call(method="GET", path=MODELS, params=_paged(limit, cursor), parse=_page(Model.from_dict))


def get_model(model_id: str) -> Call[Model]:
    """``GET /v1/models/{id}``."""
    return Call(method="GET", path=f"{MODELS}/{segment(model_id)}", parse=_model)


def delete_model(model_id: str) -> Call[None]:
    """``DELETE /v1/models/{id}``: 204, again for a model of yours already deleted, so safe to retry."""
    return Call(method="DELETE", path=f"{MODELS}/{segment(model_id)}", parse=_none)


# --- sweeps --------------------------------------------------------------------------------------


def create_sweep(body: Mapping[str, Any]) -> Call[Sweep]:
    """``POST /v1/sweeps``. Not idempotent: retried only when it surely did not reach the server."""
    return Call(method="POST", path=SWEEPS, json=dict(body), parse=_sweep, idempotent=False)


def get_sweep(sweep_id: str) -> Call[Sweep]:
    """``GET /v1/sweeps/{id}``: every trial and the best."""
    return Call(method="GET", path=f"{SWEEPS}/{segment(sweep_id)}", parse=_sweep)


def list_sweeps(*, limit: int | None = None, cursor: str | None = None) -> Call[Page[Sweep]]:
    """``GET /v1/sweeps``: one page, newest first."""
    return Call(method="GET", path=SWEEPS, params=_paged(limit, cursor), parse=_page(Sweep.from_dict))


def cancel_sweep(sweep_id: str) -> Call[Sweep]:
    """``POST /v1/sweeps/{id}/cancel``: cancelling again changes nothing, so safe to retry."""
    return Call(method="POST", path=f"{SWEEPS}/{segment(sweep_id)}/cancel", parse=_sweep)


# --- webhooks ------------------------------------------------------------------------------------


def webhook_deliveries(
    job_id: str, *, limit: int | None = None, cursor: str | None = None
) -> Call[Page[WebhookDelivery]]:
    """``GET /v1/jobs/{id}/webhooks``: one page of the job's deliveries, in event order, each with its attempts."""
    return Call(
        method="GET",
        path=f"{JOBS}/{segment(job_id)}/webhooks",
        params=_paged(limit, cursor),
        parse=_page(WebhookDelivery.from_dict),
    )


def webhook_secret() -> Call[WebhookSecret]:
    """``GET /v1/webhooks/secret``: the tenant's signing secret (the server makes one on the first read)."""
    return Call(method="GET", path=f"{WEBHOOKS}/secret", parse=_secret)


def rotate_webhook_secret() -> Call[WebhookSecret]:
    """``POST /v1/webhooks/secret/rotate``: not repeated once sent (a second rotation would void the first)."""
    return Call(method="POST", path=f"{WEBHOOKS}/secret/rotate", parse=_secret, idempotent=False)
