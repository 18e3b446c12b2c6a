"""/v1/models: the caller's trained style models (succeeded style.train jobs), for style.apply to use."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from services.api.deps import SessionDep, SettingsDep, StoreDep, TenantDep, check_page_limit
from services.api.schemas import ErrorOut, ModelOut, ModelPage
from shared.db import queries
from shared.errors import StorageUnavailable

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/models", tags=["models"])

DEFAULT_PAGE = 20
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 404: {"model": ErrorOut}}


@router.get("", response_model=ModelPage, responses=ERRORS)
def list_models(
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1)] = DEFAULT_PAGE,
    cursor: str | None = None,
) -> ModelPage:
    """The caller's style models, newest first."""
    check_page_limit(limit, settings)
    page = queries.list_models(session, tenant_id=tenant_id, limit=limit, cursor=cursor)
    return ModelPage(items=[ModelOut.of(m) for m in page.items], next_cursor=page.next_cursor)


@router.get("/{model_id}", response_model=ModelOut, responses=ERRORS)
def get_model(model_id: uuid.UUID, session: SessionDep, tenant_id: TenantDep) -> ModelOut:
    """One style model: its method, styles, training params, final losses and preview."""
    return ModelOut.of(queries.get_model(session, tenant_id=tenant_id, model_id=model_id))


@router.delete("/{model_id}", status_code=204, responses=ERRORS)
def delete_model(model_id: uuid.UUID, session: SessionDep, tenant_id: TenantDep, store: StoreDep) -> Response:
    """Delete a style model's file and card (its training job, history and previews stay). Deleting again is a 204.

    The rows go first, in one transaction, so no job can be given a model whose file is going; then the
    objects. An object the store could not delete is only logged: no row points to it any more."""
    keys = queries.delete_model(session, tenant_id=tenant_id, model_id=model_id)
    session.commit()
    for key in keys:
        try:
            store.delete_prefix(key)
        except StorageUnavailable:
            log.warning("model %s: could not delete %s from the object store; no row points to it", model_id, key)
    return Response(status_code=204)
