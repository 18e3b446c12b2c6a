"""Presigned artifact URLs are short-lived: the expiry is a setting, and an expired URL stops
working at the S3 server. Each test reads Given / When / Then."""

from __future__ import annotations

import hashlib
import time
import uuid
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
from tests.support import sigv4

pytestmark = pytest.mark.integration

EXPIRY_S = 2
GRID = b"\x89PNG pretend sample grid"
GAN = {"type": "gan.train", "params": {"dataset": "digits", "steps": 10}}


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


def test_presigned_url_stops_working_after_the_configured_expiry(
    settings: Settings, alice: Caller, sessions: sessionmaker[Session], store: S3ObjectStore
) -> None:
    # Given an API whose presigned URLs live EXPIRY_S seconds, and a finished job with a sample grid
    short = settings.model_copy(update={"presign_expiry_s": EXPIRY_S})
    with TestClient(create_app(short)) as app:
        job_id = finished_job_with_artifact(app, alice, sessions, store)
        # When alice asks for a redirect
        response = app.get(
            f"/v1/jobs/{job_id}/artifacts/samples/final.png",
            params={"redirect": "true"},
            headers=alice.headers,
            follow_redirects=False,
        )
    assert response.status_code == 307, response.text
    url = response.headers["location"]
    issued = time.monotonic()
    # Then it is a URL signed for exactly the configured lifetime, on the S3 server itself
    assert urlsplit(url).netloc == settings.s3_endpoint
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(EXPIRY_S)]
    # And it works at once, without an API key
    fresh = httpx.get(url)
    assert fresh.status_code == 200 and fresh.content == GRID
    assert sigv4.refusal(url, secret_key=settings.s3_secret_key) is None
    assert sigv4.refusal(url, secret_key="not-the-secret") == "signature"
    # And it cannot be stretched: a longer X-Amz-Expires breaks the signature
    stretched = url.replace(f"X-Amz-Expires={EXPIRY_S}", "X-Amz-Expires=604800")
    assert sigv4.refusal(stretched, secret_key=settings.s3_secret_key) == "signature"
    # And once the lifetime has passed it is refused. moto does not enforce presigned expiry
    # (it serves the object still), so S3's check is made by tests/support/sigv4.py, which
    # verifies the signature and the expiry from the AWS specification.
    time.sleep(max(0.0, EXPIRY_S + 1.5 - (time.monotonic() - issued)))
    assert sigv4.refusal(url, secret_key=settings.s3_secret_key) == "expired"


def test_default_expiry_is_short(settings: Settings) -> None:
    # The default lifetime is minutes, not days
    assert Settings.model_fields["presign_expiry_s"].default <= 15 * 60
