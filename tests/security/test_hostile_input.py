"""Hostile input gets a 4xx naming the field, never a 5xx: control characters in the path, the
query and multipart file names, names over 255 UTF-8 bytes, values the database cannot hold. 503
stays for real outages, and anything unforeseen is a JSON 500 with a request id.

Each probe of issue 19's finding 4 has a test here with the status it now gets; the property-based
test at the end sends generated hostile requests to every route of a live server.
Each test reads Given / When / Then."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.api.app import REQUEST_ID_HEADER, create_app
from services.api.deps import SessionDep
from shared.config import Settings
from shared.names import MAX_NAME_BYTES
from tests.conftest import Caller
from tests.support.images import png, zip_of

pytestmark = pytest.mark.integration

APP_LOGGER = "services.api.app"
BOUNDARY = "hostile-boundary"


@pytest.fixture(scope="module")
def local_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The module's settings on the local object store: a name too long for the filesystem failed there (500)."""
    return settings.model_copy(
        update={
            "storage_backend": "local",
            "storage_dir": tmp_path_factory.mktemp("objects"),
            "rate_limit_per_s": 0.0,
            "unknown_key_rate_per_s": 0.0,
        }
    )


def _boom() -> None:
    raise RuntimeError("a bug")


def _refused_value(session: SessionDep) -> None:
    session.execute(text("SELECT CAST(:v AS integer)"), {"v": "not a number"})


def _nul_value(session: SessionDep) -> None:
    session.execute(text("SELECT :v"), {"v": "a\x00b"})


def _dropped_connection(session: SessionDep) -> None:
    session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))


def _wrong_statement(session: SessionDep) -> None:
    session.execute(text("SELECT * FROM no_such_table"))


def _with_fault_routes(app: FastAPI) -> FastAPI:
    """Routes that fail the ways a request can: a bug, a refused value, a dropped connection, bad SQL."""
    for path, endpoint in {
        "/test/boom": _boom,
        "/test/refused-value": _refused_value,
        "/test/nul-value": _nul_value,
        "/test/dropped-connection": _dropped_connection,
        "/test/wrong-statement": _wrong_statement,
    }.items():
        app.add_api_route(path, endpoint)
    return app


@pytest.fixture(scope="module")
def client(local_settings: Settings) -> Iterator[TestClient]:
    """The API in process (on local storage), with the fault routes; server errors become responses."""
    with TestClient(_with_fault_routes(create_app(local_settings)), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def job_id(client: TestClient, alice: Caller) -> str:
    """A job of alice's."""
    response = client.post("/v1/jobs", json={"type": "gan.train"}, headers=alice.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _assert_invalid(response: Any, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "invalid_input", error
    assert error["field"] == field, error
    assert "retry-after" not in response.headers
    return error


def raw_upload(client: TestClient, caller: Caller, filename: bytes, data: bytes) -> Any:
    """A multipart upload whose file name is exactly these bytes (httpx would percent-encode control characters)."""
    body = (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="files"; filename="'
        + filename
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {**caller.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return client.post("/v1/uploads", content=body, headers=headers)


def _stored_uploads(settings: Settings, caller: Caller) -> list[Path]:
    root = settings.objects_dir / "uploads" / str(caller.tenant_id)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --- finding 4: control characters in the query and the path --------------------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/jobs?type=%00", "type"),  # was 503 "database is unavailable"
        ("/v1/jobs/{job}/metrics?names=d_loss%00", "names"),  # was 503
        ("/v1/jobs?type=gan.train%0A", "type"),  # a trailing newline
        ("/v1/jobs?cursor=abc%1F", "cursor"),
        ("/v1/jobs?type=%C2%85", "type"),  # U+0085, a C1 control
        ("/v1/uploads?cursor=%7F", "cursor"),
        ("/v1/jobs/{job}/artifacts?cursor=%00", "cursor"),
        ("/v1/jobs?x%00y=1", "query"),  # in a parameter's name
    ],
)
def test_control_characters_in_the_query_are_422_naming_the_parameter(
    client: TestClient, alice: Caller, job_id: str, url: str, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a query value holding a control character
    # When it is sent
    with caplog.at_level(logging.WARNING, logger=APP_LOGGER):
        response = client.get(url.format(job=job_id), headers=alice.headers)
    # Then it is a 422 naming the parameter, and nothing claims the database is down
    error = _assert_invalid(response, field)
    assert "control characters are not allowed" in error["message"]
    assert not [r for r in caplog.records if "database unavailable" in r.getMessage()]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/jobs/{job}/artifacts/%00", "name"),  # was 503
        ("/v1/jobs/{job}/artifacts/a%0Ab", "name"),  # was 404: the route did not match a newline
        ("/v1/jobs/{job}/artifacts/samples/%01.png", "name"),
        ("/v1/jobs/%00", "job_id"),
        ("/v1/jobs/{job}%0A/cancel", "job_id"),
        ("/v1/uploads/%1B", "upload_id"),
        ("/v1/no-such-route/%00", "path"),
    ],
)
def test_control_characters_in_the_path_are_422_naming_the_parameter(
    client: TestClient, alice: Caller, job_id: str, url: str, field: str
) -> None:
    # Given a path parameter holding a control character
    method = "POST" if url.endswith("/cancel") else "GET"
    # When it is sent
    response = client.request(method, url.format(job=job_id), headers=alice.headers)
    # Then it is a 422 naming that parameter
    _assert_invalid(response, field)


# --- finding 4: upload and archive entry names -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a" * 252 + ".png", f"limited to {MAX_NAME_BYTES} bytes"),  # 256 bytes: was 500 (NAME_MAX is 255)
        ("a" * 296 + ".png", f"limited to {MAX_NAME_BYTES} bytes"),  # 300 bytes: was 500
        ("é" * 128 + ".png", f"limited to {MAX_NAME_BYTES} bytes"),  # 132 characters, 260 bytes: was 500
        ("a" * 596 + ".png", "too long"),  # 600 characters: was already 422 (the 300-character check)
    ],
)
def test_an_upload_name_over_255_bytes_is_422(
    client: TestClient, alice: Caller, local_settings: Settings, name: str, reason: str
) -> None:
    # Given a file whose name is over 255 bytes in UTF-8
    # When it is uploaded
    response = client.post("/v1/uploads", files=[("files", (name, png()))], headers=alice.headers)
    # Then it is a 422 on `files` that says why, and nothing is stored
    error = _assert_invalid(response, "files")
    assert reason in error["message"]
    assert _stored_uploads(local_settings, alice) == []


def test_an_upload_name_of_255_bytes_is_accepted(client: TestClient, alice: Caller) -> None:
    # Given a file name of exactly 255 bytes
    name = "a" * (MAX_NAME_BYTES - len(".png")) + ".png"
    # When it is uploaded
    response = client.post("/v1/uploads", files=[("files", (name, png()))], headers=alice.headers)
    # Then it is stored under that name
    assert response.status_code == 201, response.text
    assert response.json()["files"][0]["path"] == name


@pytest.mark.parametrize(
    "entry",
    [
        "x" * 256 + ".png",  # was 500
        "class/" + "é" * 130 + ".png",  # 264 bytes in the second name
        "d\x01/a.png",  # a control character in a folder
        "a\nb.png",
    ],
)
def test_a_zip_entry_name_over_255_bytes_or_with_a_control_character_is_422(
    client: TestClient, alice: Caller, local_settings: Settings, entry: str
) -> None:
    # Given a zip with one such entry
    archive = zip_of({entry: png(), "ok.png": png()})
    # When it is uploaded
    response = client.post("/v1/uploads", files=[("files", ("set.zip", archive))], headers=alice.headers)
    # Then it is a 422 on `files`, and nothing is stored
    _assert_invalid(response, "files")
    assert _stored_uploads(local_settings, alice) == []


@pytest.mark.parametrize(
    "filename",
    [
        ("abc/" * 149 + "x.png").encode(),  # 601 characters of short names: was 503 (the column holds 500)
        b"a\x01b.png",  # was 201
        b"a\nb.png",  # was 201
        b"a\x00b.png",  # was already 422
        b"d\x00/b.png",  # was 503: NUL outside the last name reached Postgres
        "a\u0085b.png".encode(),  # a C1 control: was 201
    ],
)
def test_a_multipart_file_name_too_long_or_with_a_control_character_is_422(
    client: TestClient, alice: Caller, local_settings: Settings, filename: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a multipart file part with such a name
    # When it is uploaded
    with caplog.at_level(logging.WARNING, logger=APP_LOGGER):
        response = raw_upload(client, alice, filename, png())
    # Then it is a 422 on `files`, nothing is left stored, and no outage is logged
    _assert_invalid(response, "files")
    assert _stored_uploads(local_settings, alice) == []
    assert not [r for r in caplog.records if "database unavailable" in r.getMessage()]


# --- database errors: input is 422, outages are 503, bugs are 500 -----------------------------


@pytest.mark.parametrize("route", ["/test/refused-value", "/test/nul-value"])
def test_a_value_the_database_refuses_is_422_not_503(
    client: TestClient, alice: Caller, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a route that sends the database a value it refuses (a DataError)
    # When it is called
    with caplog.at_level(logging.INFO, logger=APP_LOGGER):
        response = client.get(route, headers=alice.headers)
    # Then the caller gets a 422 with the database's reason, and no outage is logged
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert "cannot be stored" in response.json()["error"]["message"]
    assert "retry-after" not in response.headers
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_dropped_database_connection_is_still_503(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    # Given a route whose database connection is terminated under it
    # When it is called
    with caplog.at_level(logging.WARNING, logger=APP_LOGGER):
        response = client.get("/test/dropped-connection")
    # Then it is the outage answer: 503 with Retry-After, and the warning
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert [r for r in caplog.records if "database unavailable" in r.getMessage()]


@pytest.mark.parametrize("route", ["/test/boom", "/test/wrong-statement"])
def test_an_unforeseen_error_is_a_json_500_with_a_request_id(
    client: TestClient, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a route with a bug (an exception, or SQL the database rejects)
    # When it is called
    with caplog.at_level(logging.ERROR, logger=APP_LOGGER):
        response = client.get(route)
    # Then the answer is JSON, with a request id in the body and in a header
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal"
    request_id = response.headers[REQUEST_ID_HEADER]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert error["request_id"] == request_id and request_id in error["message"]
    # And the log line that has the traceback carries the same id
    (record,) = [r for r in caplog.records if request_id in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "retry-after" not in response.headers


# --- artifact names: an unknown long or odd name is a 404, not an error ------------------------


@pytest.mark.parametrize("name", ["x" * 400, "é" * 300, "a/" * 200 + "b", "%25", "..%2F..%2Fetc"])
def test_odd_artifact_names_are_404(client: TestClient, alice: Caller, job_id: str, name: str) -> None:
    response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}", headers=alice.headers)
    assert response.status_code == 404, response.text


def test_a_request_id_is_fresh_per_error(client: TestClient) -> None:
    ids = {client.get("/test/boom").headers[REQUEST_ID_HEADER] for _ in range(3)}
    assert len(ids) == 3
    assert all(uuid.UUID(i) for i in ids)
