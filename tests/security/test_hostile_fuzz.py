"""Property-based: hypothesis builds hostile requests for every route the API publishes and sends
them to a live uvicorn server behind EdgeProtocol (the way the API is deployed). Path and query
values carry control characters, trailing newlines, names of hundreds of (multi-byte) characters,
and values of the wrong type; JSON bodies swap any field for any JSON value (NaN and huge numbers
included); uploads carry hostile file names (raw bytes) and archive entry names. Not one request
may get a 5xx, and the catch-all 500 handler must never run.

(schemathesis's own generation, valid and invalid by the schema, is tests/security/test_schema_fuzz.py;
this one aims at the inputs that schema-valid strings can still be.)"""

from __future__ import annotations

import json
import logging
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.edge import EdgeLimits
from shared.config import Settings
from shared.db.models import Tenant
from shared.db.session import transaction
from shared.jobs.specs import JOB_TYPES
from tests.conftest import Caller, make_caller
from tests.support.edge_server import Server, edge_server
from tests.support.images import png, zip_of

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 300  # per operation
SERVER_ERROR = 500
REQUEST_TIMEOUT_S = 30.0
FUZZ_ACTIVE_JOBS = 1_000_000  # submissions reach validation, not the quota
BOUNDARY = "fuzz-boundary"
WATCHED_LOGGERS = ("services.api.app", "uvicorn.error")

SPEC = create_app(Settings()).openapi()
OPERATIONS = [(method.upper(), path) for path, ops in SPEC["paths"].items() for method in ops]

# --- hostile values ---------------------------------------------------------------------------

# NUL half the time: it is the one Postgres refuses in text, so the one that reached it as a 503.
CONTROLS = st.one_of(st.just("\x00"), st.sampled_from([chr(c) for c in (*range(1, 0x20), 0x7F, 0x80, 0x85, 0x9F)]))
LONG = st.builds(
    lambda unit, n: unit * n, st.sampled_from(["a", "é", "\U0001f600", "a/", "ab.", "%"]), st.integers(100, 700)
)
CONFUSED = st.sampled_from(
    [
        "",
        " ",
        "0",
        "-1",
        "1.5",
        "1e309",
        "-9223372036854775809",
        "99999999999999999999999999",
        "true",
        "null",
        "[]",
        "{}",
        "NaN",
        "inf",
        "%",
        "%00",
        "\\",
        "..",
        "../..",
        "/",
        "\ufffd",
        "\ufeff",
        "\u202e",
    ]
)


def _insert(value: str, char: str, at: int) -> str:
    at = min(at, len(value))
    return value[:at] + char + value[at:]


def hostile_text(valid: list[str]) -> st.SearchStrategy[str]:
    """Valid values (half the time, so that requests also get past validation), and valid values made
    hostile: control characters, trailing newlines, length, the wrong type."""
    valid_values = st.sampled_from(valid or ["x"])
    with_control = st.builds(_insert, valid_values, CONTROLS, st.integers(0, 40))
    hostile = st.one_of(
        with_control,
        with_control,  # twice: the likeliest way to reach a 5xx before this was fixed
        valid_values.map(lambda v: v + "\n"),
        LONG,
        CONFUSED,
        st.text(max_size=30),
    )
    return st.booleans().flatmap(lambda plain: valid_values if plain else hostile)


def hostile_json() -> st.SearchStrategy[Any]:
    """Any JSON value, with hostile strings, huge integers, NaN and infinities."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(),
        hostile_text(["digits", "astronaut", "coffee", "random"]),
    )
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
        max_leaves=8,
    )


def header_safe(value: str) -> str:
    """What an HTTP client can put in a header: latin-1, no CR or LF, no leading whitespace."""
    return value.replace("\r", "").replace("\n", "").encode("latin-1", "replace").decode("latin-1").lstrip()


# --- the server and the caller ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_settings(settings: Settings) -> Settings:
    """The module's settings without rate limits (a fuzzer is a burst)."""
    return settings.model_copy(update={"rate_limit_per_s": 0.0, "unknown_key_rate_per_s": 0.0})


@pytest.fixture(scope="module")
def server(fuzz_settings: Settings) -> Iterator[Server]:
    """The API on uvicorn with EdgeProtocol at the configured limits."""
    with edge_server(fuzz_settings, EdgeLimits.of(fuzz_settings)) as running:
        yield running


@pytest.fixture(scope="module")
def fuzzer(sessions: sessionmaker[Session], server: Server) -> tuple[Caller, dict[str, list[str]]]:
    """A tenant with no job quota, a job, an upload and a real cursor; returns it and the valid values."""
    caller = make_caller(sessions)
    with transaction(sessions) as session:
        session.execute(update(Tenant).where(Tenant.id == caller.tenant_id).values(max_active_jobs=FUZZ_ACTIVE_JOBS))
    post = {"headers": caller.headers, "timeout": REQUEST_TIMEOUT_S}
    jobs = [requests.post(f"{server.url}/v1/jobs", json={"type": "gan.train"}, **post).json()["id"] for _ in range(2)]
    upload = requests.post(f"{server.url}/v1/uploads", files=[("files", ("a.png", png()))], **post).json()["id"]
    page = requests.get(f"{server.url}/v1/jobs", params={"limit": 1}, **post).json()
    valid = {
        "job_id": [*jobs, str(uuid.uuid4())],
        "upload_id": [upload, str(uuid.uuid4())],
        "name": ["samples/final.png", "generator.pt", "output.png"],
        "type": list(JOB_TYPES),
        "state": ["queued", "running", "succeeded"],
        "limit": ["1", "20", "200", "201", "0"],
        "cursor": [page["next_cursor"]],
        "names": ["d_loss", "g_loss", "d_loss,g_loss"],
        "since_step": ["-1", "0", "10"],
        "until_step": ["0", "11", "500"],
        "max_points": ["1", "500", "10000", "10001"],
        "redirect": ["true", "false", "1", "yes"],
        "idempotency-key": ["k-1", "retry-42"],
    }
    return caller, valid


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR records from the app (its catch-all handler) and uvicorn (an exception in the app)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.ERROR)
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield records
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).removeHandler(handler)


# --- bodies ---------------------------------------------------------------------------------------


def job_bodies(valid: dict[str, list[str]]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for requests: a JSON body for POST /v1/jobs, mostly near-valid."""
    examples = [{"type": name, "params": dict(spec.example)} for name, spec in JOB_TYPES.items()]

    def swap_field(example: dict[str, Any], key_index: int, value: Any) -> dict[str, Any]:
        params = dict(example["params"])
        key = sorted(params)[key_index % len(params)]
        params[key] = value
        return {"type": example["type"], "params": params}

    near_valid = st.builds(swap_field, st.sampled_from(examples), st.integers(0, 10), hostile_json())
    extra_field = st.builds(
        lambda example, key, value: {"type": example["type"], "params": {**example["params"], key: value}},
        st.sampled_from(examples),
        hostile_text(["extra"]),
        hostile_json(),
    )
    odd_type = st.fixed_dictionaries({"type": hostile_text(valid["type"]) | hostile_json(), "params": hostile_json()})
    as_json = st.one_of(st.sampled_from(examples), near_valid, extra_field, odd_type, hostile_json()).map(
        lambda body: {"data": json.dumps(body), "headers": {"Content-Type": "application/json"}}
    )
    raw = st.binary(max_size=64).map(lambda b: {"data": b, "headers": {"Content-Type": "application/json"}})
    return st.one_of(as_json, raw)


def _zip_can_name(name: str) -> bool:
    """zipfile cuts a name at NUL and drops leading slashes; it cannot write what is left empty."""
    return zipfile.ZipInfo(name).filename != ""


def upload_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for requests: multipart uploads with hostile file and entry names."""
    names = hostile_text(["a.png", "set.zip", "class/a.png", "w.pt"])
    contents = st.one_of(
        st.just(png()),
        st.binary(max_size=64),
        st.lists(st.tuples(names.filter(_zip_can_name), st.just(png())), min_size=1, max_size=3).map(
            lambda entries: zip_of(dict(entries))
        ),
    )

    def multipart(files: list[tuple[str, bytes]]) -> dict[str, Any]:
        parts = b"".join(
            f"--{BOUNDARY}\r\n".encode()
            + b'Content-Disposition: form-data; name="files"; filename="'
            + name.encode("utf-8", "surrogatepass")
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + data
            + b"\r\n"
            for name, data in files
        )
        body = parts + f"--{BOUNDARY}--\r\n".encode()
        return {"data": body, "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}}

    return st.lists(st.tuples(names, contents), min_size=0, max_size=3).map(multipart)


# --- the test ---------------------------------------------------------------------------------


def test_every_route_is_fuzzed(server: Server) -> None:
    # The fuzzed operations are exactly those the running server publishes
    spec = requests.get(f"{server.url}/openapi.json", timeout=REQUEST_TIMEOUT_S).json()
    assert {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops} == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_hostile_requests_get_no_5xx(
    method: str,
    path: str,
    server: Server,
    fuzzer: tuple[Caller, dict[str, list[str]]],
    server_errors: list[logging.LogRecord],
) -> None:
    caller, valid = fuzzer
    parameters = SPEC["paths"][path][method.lower()].get("parameters", [])
    in_path = [p["name"] for p in parameters if p["in"] == "path"]
    in_query = [p for p in parameters if p["in"] == "query"]
    in_header = [p["name"] for p in parameters if p["in"] == "header"]
    session = requests.Session()
    statuses: Counter[int] = Counter()
    body: st.SearchStrategy[dict[str, Any]] = st.just({})
    if (method, path) == ("POST", "/v1/jobs"):
        body = job_bodies(valid)
    elif (method, path) == ("POST", "/v1/uploads"):
        body = upload_bodies()

    @given(data=st.data())
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(data: st.DataObject) -> None:
        # Given a request whose every parameter may be hostile
        values = {name: data.draw(hostile_text(valid.get(name, [])), label=name) for name in in_path}
        url = server.url + path.format(**{k: quote(v, safe="/" if k == "name" else "") for k, v in values.items()})
        query: list[tuple[str, str]] = []
        for parameter in in_query:
            name = parameter["name"]
            count = data.draw(st.sampled_from([0, 1, 1, 2 if name == "names" else 1]), label=f"{name} count")
            query += [(name, data.draw(hostile_text(valid.get(name, [])), label=name)) for _ in range(count)]
        if data.draw(st.integers(0, 3), label="unknown parameter") == 0:
            query.append((data.draw(hostile_text(["x"]), label="key"), data.draw(hostile_text(["1"]), label="value")))
        headers = dict(caller.headers) if data.draw(st.integers(0, 9), label="key kind") else {}
        for name in in_header:
            if data.draw(st.booleans(), label=f"{name} sent"):
                headers[name] = header_safe(data.draw(hostile_text(valid.get(name, [])), label=name))
        extra = data.draw(body, label="body")
        # When it is sent
        response = session.request(
            method,
            url,
            params=query,
            data=extra.get("data"),
            headers={**headers, **extra.get("headers", {})},
            timeout=REQUEST_TIMEOUT_S,
            allow_redirects=False,
        )
        statuses[response.status_code] += 1
        # Then it is never a server error
        assert response.status_code < SERVER_ERROR, f"{response.status_code}: {response.text[:500]}\n{method} {url}"

    with session:
        fuzz()
    print(f"\n{method} {path}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    # And the catch-all 500 handler never ran, nor did an exception escape the app
    assert not server_errors, [r.getMessage() for r in server_errors]
