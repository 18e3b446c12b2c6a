"""The dashboard's routes: GET / and GET /ui/{path} serve services/api/ui/static/ with the UI's headers,
an explicit content type per file type, and nothing outside the folder (every way of asking is a 404).
The page itself is checked against its CSP: no inline script, handler or style.

Each test reads Given / When / Then."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from services.api.app import _install_error_handlers, create_app
from services.api.metrics import ApiMetrics, RequestMetricsMiddleware
from services.api.routes import ui
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "services" / "api" / "ui" / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
UI_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}
SECRET = "not for the browser"
# What a test folder holds (name, content type the browser must get).
ASSETS = {
    "js/app.js": "text/javascript; charset=utf-8",
    "js/app.js.map": "application/json",
    "css/app.css": "text/css; charset=utf-8",
    "img/logo.svg": "image/svg+xml",
    "img/logo.png": "image/png",
    "fonts/inter.woff2": "font/woff2",
    "vendor/lib/LICENSE": "text/plain; charset=utf-8",
    "vendor/lib/NOTICE.txt": "text/plain; charset=utf-8",
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    """The real app with its real static folder (no lifespan: these routes need no database)."""
    return TestClient(create_app(Settings()))


def make_folder(root: Path) -> Path:
    """A static folder of every served file type under ``root``, with a secret .txt file next to it (outside it)."""
    static = root / "static"
    for name in ASSETS:
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_bytes(f"/* {name} */".encode())
    (static / "index.html").write_text("<!doctype html><title>t</title>")
    (static / "server.py").write_text("print('a file type the dashboard does not ship')")
    (root / "secret.txt").write_text(SECRET)
    (static / "leak.txt").symlink_to(root / "secret.txt")
    return static


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("ui"))


def small_app(static: Path, metrics: ApiMetrics | None = None) -> FastAPI:
    """The UI routes on ``static``, with the API's error handlers (and its request metrics if given)."""
    app = FastAPI()
    _install_error_handlers(app)
    app.include_router(ui.make_router(static))
    if metrics is not None:
        app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


def raw_get(app: FastAPI, raw_path: str) -> tuple[int, bytes]:
    """(status, body) of a GET of ``raw_path`` exactly as written: an HTTP client folds ``..`` before sending."""
    messages: list[dict] = []
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if requested:  # the client stays connected until the response is done
            await asyncio.Event().wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return status, body


def assert_ui_headers(response) -> None:  # type: ignore[no-untyped-def]
    for name, value in UI_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)


def assert_not_found(status: int, body: bytes) -> None:
    assert status == 404, (status, body[:200])
    assert SECRET.encode() not in body and b"[project]" not in body


# --- the page and its files ----------------------------------------------------------


def test_the_page_is_the_index_as_html_with_the_ui_headers(client: TestClient) -> None:
    # When the dashboard's page is asked for
    response = client.get("/")
    # Then it is the static index.html, as HTML, with the exact CSP and the other headers
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == (STATIC / "index.html").read_bytes()
    assert_ui_headers(response)
    assert response.headers["etag"] and response.headers["last-modified"]
    # And a HEAD answers the same headers without a body
    head = client.head("/")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == response.headers["etag"]


def test_a_current_copy_is_revalidated_with_a_304_carrying_the_headers(client: TestClient) -> None:
    # Given the page a browser already holds
    first = client.get("/ui/index.html")
    assert first.status_code == 200 and first.headers["content-type"] == "text/html; charset=utf-8"
    assert_ui_headers(first)
    # When it revalidates it (Cache-Control: no-cache), by ETag or by date
    by_etag = client.get("/ui/index.html", headers={"If-None-Match": first.headers["etag"]})
    by_date = client.get("/", headers={"If-Modified-Since": first.headers["last-modified"]})
    # Then nothing is sent again, and the answer still carries the headers
    for response in (by_etag, by_date):
        assert response.status_code == 304 and response.content == b""
        assert_ui_headers(response)
    # And a stale ETag gets the file
    assert client.get("/", headers={"If-None-Match": '"stale"'}).status_code == 200


def test_each_file_type_has_its_own_content_type_and_the_headers(folder: Path) -> None:
    client = TestClient(small_app(folder))
    for name, content_type in ASSETS.items():
        # When an asset is asked for
        response = client.get(f"/ui/{name}")
        # Then it comes with the content type of its kind (not the host's mimetypes guess) and the headers
        assert response.status_code == 200, name
        assert response.headers["content-type"] == content_type, name
        assert response.text == f"/* {name} */"
        assert_ui_headers(response)
    # And a file type the dashboard does not ship is not served at all
    assert client.get("/ui/server.py").status_code == 404


def test_the_real_assets_are_served_with_their_types(client: TestClient) -> None:
    # Given whatever the dashboard ships (the index at least)
    files = [p for p in STATIC.rglob("*") if p.is_file() and ui.content_type(p) is not None]
    assert STATIC / "index.html" in files
    for path in files:
        # Then each is served under /ui/ as it is on disk, with the headers
        response = client.get(f"/ui/{path.relative_to(STATIC).as_posix()}")
        assert response.status_code == 200, path
        assert response.content == path.read_bytes()
        assert response.headers["content-type"].split(";")[0] == ui.content_type(path)
        assert_ui_headers(response)


# --- nothing outside the folder -------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../secret.txt",
        "/ui/js/../../secret.txt",
        "/ui/%2e%2e/secret.txt",
        "/ui/%2E%2E%2Fsecret.txt",
        "/ui/..%2fsecret.txt",
        "/ui/.%2e/secret.txt",
        "/ui/..\\secret.txt",
        "/ui/leak.txt",  # a symlink leading out of the folder
        "/ui//etc/passwd",
        "/ui/%2Fetc%2Fpasswd",
        "/ui/",  # the folder itself
        "/ui/js",  # a folder in it
        "/ui/js/",
        "/ui/missing.js",
        "/ui/" + "a" * 300 + ".js",  # a name too long for the file system
    ],
)
def test_nothing_outside_the_folder_nor_a_folder_is_served(folder: Path, path: str) -> None:
    # Given a served folder with a secret .txt file (a served type) just outside it
    app = small_app(folder)
    # When the path reaches the app exactly as written, or as an HTTP client sends it
    raw_status, raw_body = raw_get(app, path)
    sent = TestClient(app).get(path)
    # Then both are 404s that reveal nothing
    assert_not_found(raw_status, raw_body)
    assert_not_found(sent.status_code, sent.content)


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../pyproject.toml",
        "/ui/../../../../pyproject.toml",
        "/ui/%2e%2e/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/ui/..%2F..%2F..%2F..%2Fpyproject.toml",
        "/ui/" + str(ROOT / "pyproject.toml"),
        "/ui/",
        "/ui/js",
        "/ui/no-such-file.js",
    ],
)
def test_the_real_app_serves_nothing_outside_its_folder(client: TestClient, path: str) -> None:
    raw_status, raw_body = raw_get(client.app, path)  # type: ignore[arg-type]
    assert_not_found(raw_status, raw_body)
    sent = client.get(path)
    assert_not_found(sent.status_code, sent.content)
    assert sent.json()["error"]["code"] in ("not_found", "http_error")  # the API's error format, never a 500


SEGMENTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        "%2e%2e",
        "%2E%2e",
        ".%2e",
        "%2f",
        "%2F..",
        "%5c..",
        "..\\",
        "%00",
        "%252e%252e",
        "js",
        "app.js",
        "css",
        "leak.txt",
        "secret.txt",
        "static",
        "index.html",
        "é" * 100,
    ]
)


@given(segments=st.lists(SEGMENTS, max_size=6))
@hypothesis_settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_no_path_under_ui_leaves_the_folder_or_fails(shared_folder: Path, segments: list[str]) -> None:
    # Given any path of dot segments, encodings, separators and names under /ui/
    path = "/ui/" + "/".join(segments)
    # When it reaches the app as written
    status, body = raw_get(small_app(shared_folder), path)
    # Then it is a file of the folder or a 404, never the secret next to it and never a 5xx
    assert status in (200, 404), (path, status, body[:200])
    assert SECRET.encode() not in body
    if status == 200:
        served = {p.read_bytes() for p in shared_folder.rglob("*") if p.is_file() and not p.is_symlink()}
        assert body in served, path


def test_other_methods_and_control_characters_are_refused_not_crashed(client: TestClient) -> None:
    assert client.post("/").status_code == 405
    assert client.delete("/ui/index.html").status_code == 405
    refused = client.get("/ui/index.html%00.js")
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "path"


def test_an_install_without_the_folder_answers_404s_not_500s(tmp_path: Path) -> None:
    client = TestClient(small_app(tmp_path / "missing"))
    assert client.get("/").status_code == 404
    assert client.get("/ui/js/app.js").status_code == 404


def test_ui_requests_are_counted_by_route_template_not_by_path(folder: Path) -> None:
    # Given the UI behind the API's request metrics
    metrics = ApiMetrics()
    client = TestClient(small_app(folder, metrics))
    # When the page, its files and a missing file are fetched
    client.get("/")
    for name in ASSETS:
        client.get(f"/ui/{name}")
    client.get("/ui/missing.js")

    # Then the series are labelled by the two templates only
    def count(route: str, status: int) -> float:
        labels = {"route": route, "method": "GET", "status": str(status)}
        return metrics.registry.get_sample_value("atelier_http_requests_total", labels) or 0.0

    assert count("/", 200) == 1
    assert count("/ui/{path:path}", 200) == len(ASSETS)
    assert count("/ui/{path:path}", 404) == 1
    routes = {
        sample.labels["route"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "route" in sample.labels
    }
    assert routes == {"/", "/ui/{path:path}"}


def test_the_ui_routes_are_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)


# --- the page obeys its own CSP --------------------------------------------------------


class InlineCode(HTMLParser):
    """What a page has that ``script-src 'self'; style-src 'self'`` would block: inline scripts, handlers, styles."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower() for name, _value in attrs}
        if tag == "script" and "src" not in names:
            self.problems.append(f"inline <script> at line {self.getpos()[0]}")
        if tag == "style":
            self.problems.append(f"inline <style> at line {self.getpos()[0]}")
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.problems.append(f"<{tag} {name}=...> at line {self.getpos()[0]}")
            if name.lower() == "style":
                self.problems.append(f"<{tag} style=...> at line {self.getpos()[0]}")
            if (value or "").strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}=javascript:...> at line {self.getpos()[0]}")

    handle_startendtag = handle_starttag


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    parser.close()
    return parser.problems


def test_the_checker_finds_inline_code() -> None:
    page = (
        '<html><head><script>alert(1)</script><script src="/ui/js/app.js"></script><style>p{}</style></head>'
        '<body onload="go()"><div STYLE="color:red"></div><img src="x.png" onError="x()"/>'
        '<a href="javascript:go()">x</a></body></html>'
    )
    assert len(inline_code(page)) == 6
    assert inline_code('<script type="module" src="/ui/js/app.js"></script><p data-on="x">on</p>') == []


def test_the_served_pages_have_no_inline_script_handler_or_style(client: TestClient) -> None:
    # Given every HTML page the dashboard serves (the index through /)
    pages = {"/": client.get("/").text}
    for path in STATIC.rglob("*.html"):
        pages[f"/ui/{path.relative_to(STATIC).as_posix()}"] = client.get(f"/ui/{path.relative_to(STATIC)}").text
    # Then none has code the CSP would block
    for url, html in pages.items():
        assert html.strip(), url
        assert inline_code(html) == [], url
