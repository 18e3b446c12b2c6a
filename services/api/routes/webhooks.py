"""Webhooks: a job's deliveries and their attempts, and the tenant's signing secret."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.api.deps import SessionDep, SettingsDep, TenantDep, check_page_limit
from services.api.schemas import ErrorOut, WebhookDeliveryOut, WebhookDeliveryPage, WebhookSecretOut
from shared.db import queries

router = APIRouter(tags=["webhooks"])

DEFAULT_PAGE = 50

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, wrong or revoked API key"},
    404: {"model": ErrorOut, "description": "No such job for this tenant"},
    422: {"model": ErrorOut, "description": "A field is invalid; `field` names it"},
}


@router.get("/v1/jobs/{job_id}/webhooks", response_model=WebhookDeliveryPage, responses=ERRORS)
def list_deliveries(
    job_id: uuid.UUID,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> WebhookDeliveryPage:
    """The job's webhook deliveries in event order, each with its attempts (status code, latency, error)."""
    check_page_limit(limit, settings)
    queries.get_job(session, tenant_id=tenant_id, job_id=job_id)
    page = queries.list_deliveries(session, job_id=job_id, limit=limit, cursor=cursor)
    return WebhookDeliveryPage(
        items=[WebhookDeliveryOut.of(r.delivery, r.attempts) for r in page.items], next_cursor=page.next_cursor
    )


@router.get("/v1/webhooks/secret", response_model=WebhookSecretOut, responses=ERRORS)
def get_secret(session: SessionDep, tenant_id: TenantDep) -> WebhookSecretOut:
    """The secret that signs this tenant's webhooks (created on first read)."""
    secret = queries.ensure_webhook_secret(session, tenant_id=tenant_id)
    session.commit()
    return WebhookSecretOut(secret=secret.current, previous_valid_until=secret.previous_valid_until)


@router.post("/v1/webhooks/secret/rotate", response_model=WebhookSecretOut, responses=ERRORS)
def rotate_secret(session: SessionDep, tenant_id: TenantDep) -> WebhookSecretOut:
    """A new signing secret; the previous one keeps signing (a second signature) for 24 hours."""
    secret = queries.rotate_webhook_secret(session, tenant_id=tenant_id)
    session.commit()
    return WebhookSecretOut(secret=secret.current, previous_valid_until=secret.previous_valid_until)
