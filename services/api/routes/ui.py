"""The dashboard: ``GET /`` is its page, ``GET /ui/{path}`` its static files (services/api/ui/static/).

No key is needed: the files are public and the page asks for the key itself. Only known file types
are served, each with an explicit content type (never the host's mimetypes table), and every answer
carries the UI's security headers: a strict Content-Security-Policy (no inline script or style, no
framing), nosniff, no referrer, and ``Cache-Control: no-cache`` (the assets are not fingerprinted,
so a browser revalidates each by its ETag or Last-Modified and gets a 304). Starlette's StaticFiles
resolves each path: ``..``, encoded or not, an absolute path or a symlink leading out of the folder,
a directory and an unknown file type are all a 404. Both routes are outside the OpenAPI schema.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from shared.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parents[1] / "ui" / "static"
INDEX = "index.html"
ASSETS_PREFIX = "/ui"
METHODS = ["GET", "HEAD"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
UI_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidate every time: the file names carry no content hash
}
# The file types the dashboard ships, by suffix; anything else is a 404.
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".map": "application/json",  # source maps
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
}
# Vendored libraries' licence and version files, which have no suffix (make ui copies them).
PLAIN_TEXT_NAMES = frozenset({"LICENSE", "LICENCE", "COPYING", "NOTICE", "VERSION"})
PLAIN_TEXT = "text/plain"


def content_type(path: str | os.PathLike[str]) -> str | None:
    """The content type the dashboard serves ``path`` with, or None for a file it does not serve."""
    name = Path(path).name
    if name in PLAIN_TEXT_NAMES:
        return PLAIN_TEXT
    return CONTENT_TYPES.get(Path(name).suffix.lower())


def with_ui_headers(response: Response) -> Response:
    """``response`` with the UI's security and cache headers."""
    response.headers.update(UI_HEADERS)
    return response


class UiFiles(StaticFiles):
    """StaticFiles that serves only known file types, each with its explicit content type."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        """The file under the folder that ``path`` names, or nothing (never a file outside it)."""
        try:
            return super().lookup_path(path)
        except OSError:  # unreadable, a name too long, a symlink loop: nothing to serve
            return "", None

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        """The file with its content type and the UI's headers, or a 304 when the client's copy is current."""
        media_type = content_type(full_path)
        if media_type is None:
            raise NotFound(f"{ASSETS_PREFIX}: no such file")
        response = FileResponse(full_path, status_code=status_code, stat_result=stat_result, media_type=media_type)
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return with_ui_headers(NotModifiedResponse(response.headers))
        return with_ui_headers(response)


def relative(path: str) -> str:
    """``path`` as StaticFiles resolves it: OS separators, ``.`` and inner ``..`` folded, never absolute."""
    return os.path.normpath(os.path.join(*path.split("/")))


def make_router(static_dir: Path) -> APIRouter:
    """The dashboard's two routes, serving ``static_dir``."""
    files = UiFiles(directory=static_dir, check_dir=False)  # a missing folder is a 404, not a failed start
    ui = APIRouter(tags=["ui"], include_in_schema=False)

    async def serve(path: str, request: Request) -> Response:
        try:
            return await files.get_response(path, request.scope)
        except HTTPException as exc:  # StaticFiles' own refusals, in the API's error format
            raise NotFound(f"{ASSETS_PREFIX}: no such file") from exc

    @ui.api_route("/", methods=METHODS)
    async def index(request: Request) -> Response:
        """The dashboard's page."""
        return await serve(INDEX, request)

    @ui.api_route(ASSETS_PREFIX + "/{path:path}", methods=METHODS)
    async def asset(path: str, request: Request) -> Response:
        """One of the dashboard's static files."""
        return await serve(relative(path), request)

    return ui


router = make_router(STATIC_DIR)
