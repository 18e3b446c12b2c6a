"""Schema fuzzing: schemathesis generates requests for every operation in /openapi.json, valid
(positive) and invalid (negative) ones, each sent with a valid API key (the caller's own ids
in the path, to reach past the 404), a wrong key and none, to a real uvicorn server. Not one
may get a 5xx. A bounded number of examples per case keeps the run to a minute or two.

(schemathesis's own pytest loader, ``from_fixture``, does not run under this pytest, so each
operation's hypothesis strategy is driven directly.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from shared.config import Settings
from shared.db.models import Tenant
from shared.db.session import transaction
from tests.conftest import Caller, make_caller
from tests.security.conftest import live_server
from tests.support.images import png

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 15  # per operation, generation mode and key kind
FUZZ_ACTIVE_JOBS = 1_000_000  # so submissions reach validation rather than the quota
SERVER_ERROR = 500
REQUEST_TIMEOUT_S = 30.0
STREAM_TIMEOUT_S = 1.0
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
KEY_KINDS = ("valid", "wrong", "none")

# The spec is static: building the app connects to nothing (that happens in its lifespan).
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CASES = [
    pytest.param(op, mode, key, id=f"{op.method.upper()} {op.path} {mode.value} {key}-key")
    for op in OPERATIONS
    # the public routes take no input at all: there is nothing to make invalid, nor a key to send
    for mode in ((GenerationMode.POSITIVE,) if (op.method.upper(), op.path) in PUBLIC else GenerationMode)
    for key in (("none",) if (op.method.upper(), op.path) in PUBLIC else KEY_KINDS)
]


@pytest.fixture(scope="module")
def fuzz_settings(settings: Settings) -> Settings:
    """The module's settings without a rate limit (a fuzzer is a burst)."""
    return settings.model_copy(update={"rate_limit_per_s": 0.0, "unknown_key_rate_per_s": 0.0})


@pytest.fixture(scope="module")
def server(fuzz_settings: Settings) -> Iterator[str]:
    """The API on a real uvicorn server in a thread; yields its base URL."""
    with live_server(fuzz_settings) as (host, port):
        yield f"http://{host}:{port}"


@pytest.fixture(scope="module")
def fuzzer(sessions: sessionmaker[Session], fuzz_settings: Settings) -> tuple[Caller, dict[str, str]]:
    """A tenant with no job quota, one job and one upload; returns it and its real path ids."""
    caller = make_caller(sessions)
    with transaction(sessions) as session:
        session.execute(update(Tenant).where(Tenant.id == caller.tenant_id).values(max_active_jobs=FUZZ_ACTIVE_JOBS))
    with TestClient(create_app(fuzz_settings)) as client:
        job = client.post("/v1/jobs", json={"type": "gan.train"}, headers=caller.headers).json()["id"]
        upload = client.post("/v1/uploads", files=[("files", ("a.png", png()))], headers=caller.headers).json()["id"]
    return caller, {"job_id": job, "upload_id": upload}


def test_every_operation_is_fuzzed(client: TestClient) -> None:
    # The fuzzed operations are exactly those the running app publishes
    spec = client.get("/openapi.json").json()
    assert {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops} == {
        (op.method.upper(), op.path) for op in OPERATIONS
    }


@pytest.mark.parametrize(("operation", "mode", "key_kind"), CASES)
def test_no_server_errors(
    operation: schemathesis.schemas.APIOperation,
    mode: GenerationMode,
    key_kind: str,
    server: str,
    fuzzer: tuple[Caller, dict[str, str]],
) -> None:
    caller, ids = fuzzer
    session = requests.Session()

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        headers = {
            "valid": caller.headers,
            "wrong": {"Authorization": f"Bearer atl_{uuid.uuid4().hex}"},
            "none": {},
        }[key_kind]
        if key_kind == "valid" and case.path_parameters and mode is GenerationMode.POSITIVE:
            case.path_parameters = {k: ids.get(k, v) for k, v in case.path_parameters.items()}
        # schemathesis reads an event stream until the timeout; a live job's stream never ends by itself.
        timeout = STREAM_TIMEOUT_S if operation.path.endswith("/events") else REQUEST_TIMEOUT_S
        response = case.call(base_url=server, session=session, headers=headers, timeout=timeout)
        assert response.status_code < SERVER_ERROR, (
            f"{response.status_code}: {response.text[:500]}\n{case.as_curl_command()}"
        )

    with session:
        fuzz()
