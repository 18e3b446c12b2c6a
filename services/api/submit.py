"""Job submission: validate params with the job type's own schema, check every reference
belongs to the caller, commit the row, then hand the id to the broker."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.api.admission import admit
from shared.config import Settings
from shared.db import queries
from shared.db.models import Job
from shared.db.queries.events import DEFAULT_WEBHOOK_EVENTS
from shared.errors import InvalidInput, NotFound, TooManyRequests
from shared.jobs.params import JobParams, Reference, is_upload_ref
from shared.jobs.specs import JOB_TYPES, JobSpec
from shared.jobs.states import DEFAULT_PRIORITY, PRIORITIES, JobState
from shared.queue import send_run_job
from shared.webhooks import check_webhook_url

log = logging.getLogger(__name__)


def describe_validation_error(exc: ValidationError, *, prefix: str) -> InvalidInput:
    """One InvalidInput naming every bad field, e.g. ``params.steps: Input should be greater than 0``."""
    problems = []
    first_field = prefix
    for i, err in enumerate(exc.errors()):
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}")
        if i == 0:
            first_field = loc
    return InvalidInput("; ".join(problems), field=first_field)


UPLOAD_USES = {"images": "images", "weights": "a weights file"}


def _require_upload(session: Session, *, tenant_id: uuid.UUID, ref: str, field: str, kind: str = "images") -> None:
    """A referenced upload must be the caller's and of the kind the field needs."""
    if not is_upload_ref(ref):
        return
    try:
        upload = queries.get_upload(session, tenant_id=tenant_id, upload_id=uuid.UUID(ref))
    except NotFound as exc:
        raise InvalidInput(f"{field}: upload {ref} not found", field=field) from exc
    if upload.kind != kind:
        raise InvalidInput(
            f"{field}: upload {ref} holds {UPLOAD_USES.get(upload.kind, upload.kind)}; "
            f"this field needs {UPLOAD_USES[kind]}",
            field=field,
        )


def _require_job(session: Session, *, tenant_id: uuid.UUID, ref: Reference) -> None:
    """A referenced job must be the caller's, of the right type, and succeeded."""
    field = ref.field
    try:
        source = queries.get_job(session, tenant_id=tenant_id, job_id=uuid.UUID(ref.ref))
    except NotFound as exc:
        raise InvalidInput(f"{field}: job {ref.ref} not found", field=field) from exc
    if source.type != ref.job_type:
        raise InvalidInput(f"{field}: job {source.id} is a {source.type} job, not {ref.job_type}", field=field)
    if source.state != JobState.SUCCEEDED:
        raise InvalidInput(f"{field}: job {source.id} is {source.state}; it must have succeeded", field=field)
    if ref.artifact is not None and not queries.has_artifact(session, job_id=source.id, name=ref.artifact):
        raise InvalidInput(f"{field}: job {source.id} no longer has its {ref.artifact} (deleted)", field=field)


def check_references(
    session: Session, *, tenant_id: uuid.UUID, spec: JobSpec, params: JobParams, settings: Settings
) -> None:
    """This server's limits, then every upload and job the params name (the job type declares them)."""
    for field, message in params.server_limit_problems(max_style_size=settings.max_style_size)[:1]:
        raise InvalidInput(f"{field}: {message}", field=field)
    for ref in spec.references(params):
        if ref.job_type is not None:
            _require_job(session, tenant_id=tenant_id, ref=ref)
            continue
        _require_upload(session, tenant_id=tenant_id, ref=ref.ref, field=ref.field, kind=ref.upload_kind or "images")
        if ref.min_classes:
            upload = queries.get_upload(session, tenant_id=tenant_id, upload_id=uuid.UUID(ref.ref))
            if len(upload.classes) < ref.min_classes:
                field = ref.classes_field or ref.field
                raise InvalidInput(
                    f"{field}: upload {ref.ref} has {len(upload.classes)} classes; conditioning "
                    f"needs {ref.min_classes} or more, one sub-folder of images per class",
                    field=field,
                )


def check_storage_room(session: Session, *, tenant_id: uuid.UUID) -> None:
    """A tenant at or over its storage quota may start nothing that stores more: a 429 saying what to delete."""
    if queries.storage_quota(session, tenant_id=tenant_id) is None:
        return
    use = queries.stored(session, tenant_id=tenant_id)
    if use.quota is not None and use.total >= use.quota:
        raise TooManyRequests(f"storage quota: {use.advice()}")


def recheck_uploads(session: Session, *, tenant_id: uuid.UUID, spec: JobSpec, params: JobParams) -> None:
    """After create_job locked the tenant row: the uploads the job names are still there. A DELETE of an upload
    takes the same lock before it looks for jobs that use it, so it either saw this job (its 409) or marked the
    upload before this check (this 422, and the insert is rolled back with the request)."""
    for ref in spec.references(params):
        if ref.job_type is None:
            _require_upload(
                session, tenant_id=tenant_id, ref=ref.ref, field=ref.field, kind=ref.upload_kind or "images"
            )


def submit_job(
    session: Session,
    *,
    celery: Celery,
    settings: Settings,
    tenant_id: uuid.UUID,
    job_type: str,
    raw_params: dict[str, Any],
    idempotency_key: str | None,
    webhook: str | None = None,
    webhook_events: Sequence[str] | None = None,
    priority: str = DEFAULT_PRIORITY,
) -> tuple[Job, bool]:
    """Validate, store and enqueue a job; returns (job, created)."""
    spec = JOB_TYPES.get(job_type)
    if spec is None:
        raise InvalidInput(f"type: unknown job type {job_type!r}; expected one of {sorted(JOB_TYPES)}", field="type")
    try:
        params = spec.params.model_validate(raw_params)
    except ValidationError as exc:
        raise describe_validation_error(exc, prefix="params") from exc
    if webhook is not None:  # public addresses only (SSRF), before anything is written
        check_webhook_url(webhook, allowed_hosts=settings.webhook_allowed_hosts)
    check_references(session, tenant_id=tenant_id, spec=spec, params=params, settings=settings)
    check_storage_room(session, tenant_id=tenant_id)
    memory = admit(session, tenant_id=tenant_id, params=params, settings=settings)  # memory and artifact caps
    job, created = queries.create_job(
        session,
        tenant_id=tenant_id,
        job_type=job_type,
        params=params.model_dump(mode="json"),
        queue=spec.queue,
        total=spec.total_units(params),
        max_attempts=settings.max_attempts,
        idempotency_key=idempotency_key,
        webhook_url=webhook,
        webhook_events=DEFAULT_WEBHOOK_EVENTS if webhook_events is None else tuple(dict.fromkeys(webhook_events)),
        priority=PRIORITIES[priority],
        memory_bytes=memory,
    )
    if created:
        recheck_uploads(session, tenant_id=tenant_id, spec=spec, params=params)
    session.commit()  # the row is durable before any message names it
    if created:
        enqueue(session, celery=celery, job_id=job.id, queue=job.queue)
    return job, created


def enqueue(session: Session, *, celery: Celery, job_id: uuid.UUID, queue: str) -> bool:
    """Send the job's id; on a broker failure leave it to the reconciler. Returns whether it was sent."""
    try:
        send_run_job(celery, job_id=job_id, queue=queue)
    except Exception as exc:  # the broker is down: the job stays queued and will be re-sent
        log.warning("could not enqueue job %s (%s); the reconciler will re-send it", job_id, exc)
        return False
    queries.mark_enqueued(session, job_ids=[job_id])
    session.commit()
    return True
