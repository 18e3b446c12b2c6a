"""/v1/usage: what the caller's tenant stores and uses, and its storage quota."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from services.api.deps import SessionDep, TenantDep
from services.api.schemas import ErrorOut, StoredBytes, UsageOut
from shared.db import queries

router = APIRouter(prefix="/v1/usage", tags=["usage"])

ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}}


@router.get("", response_model=UsageOut, responses=ERRORS)
def get_usage(session: SessionDep, tenant_id: TenantDep) -> UsageOut:
    """Bytes stored (artifacts, checkpoints, uploads) against the storage quota, metric rows kept, and the worker
    time of GPU jobs this calendar month (UTC). Deleted jobs and uploads stop counting at once."""
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    use = queries.stored(session, tenant_id=tenant_id)
    done = queries.activity(session, tenant_id=tenant_id, since=month)
    return UsageOut(
        stored=StoredBytes(artifacts=use.artifacts, checkpoints=use.checkpoints, uploads=use.uploads, total=use.total),
        storage_quota_bytes=use.quota,
        storage_left_bytes=None if use.quota is None else max(use.quota - use.total, 0),
        metric_rows=done.metric_rows,
        jobs=done.jobs,
        gpu_seconds_this_month=round(done.gpu_seconds, 3),
        month_start=month,
    )
