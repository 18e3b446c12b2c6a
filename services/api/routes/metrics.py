"""GET /metrics: Prometheus' text format; open unless ATELIER_METRICS_TOKEN is set. Not in the OpenAPI schema."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.deps import StateDep
from shared.errors import Unauthorized

router = APIRouter(tags=["metrics"])
BEARER_PREFIX = "bearer "


def token_matches(authorization: str | None, token: str) -> bool:
    """Whether ``authorization`` is ``Bearer <token>`` (compared in constant time)."""
    if authorization is None or authorization[: len(BEARER_PREFIX)].lower() != BEARER_PREFIX:
        return False
    presented = authorization[len(BEARER_PREFIX) :].strip()
    return hmac.compare_digest(presented.encode(), token.encode())


@router.get("/metrics", include_in_schema=False)
def metrics(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> Response:
    """The API's metrics; reads the job table (a sync route: it runs in the threadpool)."""
    token = state.settings.metrics_token
    if token and not token_matches(authorization, token):
        raise Unauthorized("metrics need `Authorization: Bearer <metrics token>`")
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
