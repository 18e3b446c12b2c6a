"""Presigned artifact URLs are short-lived: the expiry is a setting, and an expired URL stops
working at the S3 server itself.

moto (the suite's usual S3) does not check presigned signatures or their expiry, so this module
serves the artifact from ``rclone serve s3``, an S3 server that does, as MinIO and AWS do.
Each test reads Given / When / Then."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from shared.config import Settings
from shared.db import queries
from shared.db.models import Job
from shared.db.session import transaction
from shared.storage import S3ObjectStore, job_key
from tests.conftest import Caller
from tests.support.services import SigningS3Server, free_port

pytestmark = pytest.mark.integration

EXPIRY_S = 2
GRID = b"\x89PNG pretend sample grid"
GAN = {"type": "gan.train", "params": {"dataset": "digits", "steps": 10}}


@pytest.fixture(scope="module")
def signing_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningS3Server]:
    server = SigningS3Server(root=Path(tmp_path_factory.mktemp("rclone-s3")), port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def signing_settings(settings: Settings, signing_s3: SigningS3Server) -> Settings:
    """The suite's settings, with storage on the signing S3 server and URLs living EXPIRY_S seconds."""
    return settings.model_copy(
        update={
            "s3_endpoint": f"127.0.0.1:{signing_s3.port}",
            "s3_access_key": signing_s3.access_key,
            "s3_secret_key": signing_s3.secret_key,
            "presign_expiry_s": EXPIRY_S,
        }
    )


def signing_store(settings: Settings) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        bucket=settings.s3_bucket,
    )


def finished_job_with_artifact(
    client: TestClient, caller: Caller, sessions: sessionmaker[Session], store: S3ObjectStore
) -> str:
    """A succeeded job of ``caller`` with one stored artifact, samples/final.png."""
    job_id = client.post("/v1/jobs", json=GAN, headers=caller.headers).json()["id"]
    key = job_key(job_id, "samples", "a1/final.png")
    store.put(key, GRID, content_type="image/png")
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(state="running", attempt=1))
        queries.record_artifact(
            session, job_id=uuid.UUID(job_id), attempt=1, name="samples/final.png", kind="sample", key=key,
            size=len(GRID), sha256=hashlib.sha256(GRID).hexdigest(), content_type="image/png",
        )  # fmt: skip
        session.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(state="succeeded"))
    return job_id


def ask_for_redirect(app: TestClient, caller: Caller, job_id: str) -> httpx.Response:
    """GET the job's samples/final.png with redirect=true, not following the 307."""
    return app.get(
        f"/v1/jobs/{job_id}/artifacts/samples/final.png",
        params={"redirect": "true"},
        headers=caller.headers,
        follow_redirects=False,
    )


def test_presigned_url_stops_working_after_the_configured_expiry(
    signing_settings: Settings, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given an API whose presigned URLs live EXPIRY_S seconds, and a finished job with a sample grid
    store = signing_store(signing_settings)
    with TestClient(create_app(signing_settings)) as app:
        job_id = finished_job_with_artifact(app, alice, sessions, store)
        # When alice asks for a redirect
        response = ask_for_redirect(app, alice, job_id)
    assert response.status_code == 307, response.text
    url = response.headers["location"]
    issued = time.monotonic()
    # Then it is a URL on the S3 server itself, signed for exactly the configured lifetime
    assert urlsplit(url).netloc == signing_settings.s3_endpoint
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(EXPIRY_S)]
    # And it works at once, with no API key, while the object without a signature is refused
    fresh = httpx.get(url)
    assert fresh.status_code == 200 and fresh.content == GRID
    unsigned = url.split("?", 1)[0]
    assert httpx.get(unsigned).status_code in (400, 403)
    # And it cannot be stretched: a longer X-Amz-Expires breaks the signature
    stretched = url.replace(f"X-Amz-Expires={EXPIRY_S}", "X-Amz-Expires=604800")
    assert httpx.get(stretched).status_code == 403
    # And once the lifetime has passed, the server refuses it
    time.sleep(max(0.0, EXPIRY_S + 1.5 - (time.monotonic() - issued)))
    expired = httpx.get(url)
    assert expired.status_code in (400, 403), expired.text
    assert b"AccessDenied" in expired.content and GRID not in expired.content


def test_a_longer_setting_keeps_the_url_working(
    signing_settings: Settings, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given the same server, with presigned URLs living 60 s
    longer = signing_settings.model_copy(update={"presign_expiry_s": 60})
    store = signing_store(longer)
    with TestClient(create_app(longer)) as app:
        job_id = finished_job_with_artifact(app, alice, sessions, store)
        url = ask_for_redirect(app, alice, job_id).headers["location"]
    # When as long as the short URL's lifetime and more has passed
    time.sleep(EXPIRY_S + 1.5)
    # Then this one still works: the expiry is the setting, not a fixed constant
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["60"]
    later = httpx.get(url)
    assert later.status_code == 200 and later.content == GRID


def test_default_expiry_is_short() -> None:
    # The default lifetime is minutes, not days
    assert Settings.model_fields["presign_expiry_s"].default <= 15 * 60
