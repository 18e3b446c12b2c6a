"""The API under benchmark plus a bare reference endpoint, served by the same process."""

from __future__ import annotations

from fastapi import FastAPI

from services.api.app import create_app
from shared.config import Settings

BARE_PATH = "/bench/bare"
BARE_SYNC_PATH = "/bench/bare-sync"
BARE_BODY = {"ok": True, "service": "atelier", "version": "1"}


def create_bench_app() -> FastAPI:
    """The real app (settings from ATELIER_*) with bare async and sync endpoints added."""
    app = create_app(Settings())

    @app.get(BARE_PATH, include_in_schema=False)
    async def bare() -> dict[str, object]:
        """The reference: routing and JSON rendering, no dependencies, no threadpool, no DB."""
        return BARE_BODY

    @app.get(BARE_SYNC_PATH, include_in_schema=False)
    def bare_sync() -> dict[str, object]:
        """The reference run in the threadpool, as the API's sync routes are (diagnostic only)."""
        return BARE_BODY

    return app
