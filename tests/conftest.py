"""Fixtures on real services: Postgres, Redis, an S3 server over HTTP, Celery processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from shared.config import Settings
from shared.db import queries
from shared.db.migrate import upgrade
from shared.db.session import make_engine, make_sessionmaker, transaction
from shared.storage import S3ObjectStore, make_store
from tests.support import local_services, services

# Short leases and periods so faults are detected in seconds, not minutes.
TEST_TIMINGS = {
    "lease_s": 3.0,
    "heartbeat_s": 0.5,
    "metrics_flush_s": 0.5,
    "reconcile_period_s": 1.0,
    "resend_grace_s": 2.0,
    "max_upload_bytes": 8 * 1024 * 1024,
}
# Test webhook receivers listen on loopback, which the SSRF guard refuses unless allowed.
TEST_WEBHOOK_HOSTS = ["127.0.0.1", "localhost"]
TEST_DB_DEADLINE_S = 30.0  # the tests' own queries: generous, so a loaded host never trips it


@pytest.fixture(scope="session")
def s3_server() -> Iterator[services.S3Server]:
    """A moto S3 server on a free loopback port."""
    server = services.S3Server(port=services.free_port())
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Endpoints:
    """Where the app and workers reach Postgres, Redis and S3 (fault tests put proxies here)."""

    pg_host: str
    pg_port: int
    s3: str
    redis_url: str | None = None  # None: a private db index on the shared test Redis


@pytest.fixture(scope="module")
def endpoints(s3_server: services.S3Server) -> Endpoints:
    """The real services, directly."""
    pg_host, pg_port = services.pg_address()
    return Endpoints(pg_host=pg_host, pg_port=pg_port, s3=f"127.0.0.1:{s3_server.port}")


@pytest.fixture(scope="module")
def settings_overrides() -> dict[str, object]:
    """Settings a test module changes from the defaults below (none by default)."""
    return {}


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, endpoints: Endpoints, settings_overrides: dict[str, object]
) -> Iterator[Settings]:
    """Per test module: a fresh database, a private Redis db and a bucket of its own."""
    db_name, _direct_url = services.create_database()
    redis_url = endpoints.redis_url or services.claim_redis_db()
    data_dir = tmp_path_factory.mktemp("atelier-data")
    built = Settings(
        environment="test",
        data_dir=data_dir,
        database_url=f"postgresql+psycopg://postgres@{endpoints.pg_host}:{endpoints.pg_port}/{db_name}",
        redis_url=redis_url,
        storage_backend="s3",
        s3_endpoint=endpoints.s3,
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_bucket=f"atelier-{uuid.uuid4().hex[:12]}",
        device="cpu",
        allow_weight_download=False,
        torch_threads=1,  # two cores, shared by the test process, API and workers
        **{**TEST_TIMINGS, "webhook_allowed_hosts": TEST_WEBHOOK_HOSTS, **settings_overrides},  # type: ignore[arg-type]
    )
    upgrade(built)
    store = make_store(built)
    assert isinstance(store, S3ObjectStore)
    store.ensure_bucket()
    yield built
    if endpoints.redis_url is None:
        services.release_redis_db(redis_url)
    services.drop_database(db_name)


@pytest.fixture(scope="module")
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A session factory on the test database."""
    engine = make_engine(settings, pool_size=2, call_deadline_s=TEST_DB_DEADLINE_S)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def store(settings: Settings) -> S3ObjectStore:
    """The S3 store the API and workers use."""
    built = make_store(settings)
    assert isinstance(built, S3ObjectStore)
    return built


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """The API app, in process, over the real services."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@dataclass(frozen=True)
class Caller:
    """A tenant and its API key, ready to send requests."""

    tenant_id: uuid.UUID
    key: str

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header for this caller."""
        return {"Authorization": f"Bearer {self.key}"}


def make_caller(sessions: sessionmaker[Session]) -> Caller:
    """A new tenant with one key."""
    with transaction(sessions) as session:
        tenant = queries.create_tenant(session, name=f"t-{uuid.uuid4().hex[:8]}")
        _row, raw = queries.create_api_key(session, tenant_id=tenant.id)
        return Caller(tenant_id=tenant.id, key=raw)


@pytest.fixture
def alice(sessions: sessionmaker[Session]) -> Caller:
    """Tenant A."""
    return make_caller(sessions)


@pytest.fixture
def bob(sessions: sessionmaker[Session]) -> Caller:
    """Tenant B."""
    return make_caller(sessions)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where worker and beat logs go."""
    return tmp_path_factory.mktemp("logs")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which Postgres and Redis the session used, when it used any (tests/support/local_services.py)."""
    for line in local_services.used():
        terminalreporter.write_line(line)
