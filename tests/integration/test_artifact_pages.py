"""GET /v1/jobs/{id}/artifacts is cursor-paginated by name, like the other lists, and keeps its
``items`` key: a client that reads only ``items`` still sees every artifact of a usual job.

Each test reads Given / When / Then."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from services.api.routes.jobs import DEFAULT_ARTIFACT_PAGE
from shared.config import Settings
from shared.db.models import Artifact
from shared.db.session import transaction
from tests.conftest import Caller

pytestmark = pytest.mark.integration

ARTIFACTS = 23
PAGE = 5


def _job_with_artifacts(client: TestClient, sessions: sessionmaker[Session], caller: Caller, count: int) -> str:
    job_id = str(client.post("/v1/jobs", json={"type": "gan.train"}, headers=caller.headers).json()["id"])
    with transaction(sessions) as session:
        for i in range(count):
            name = f"samples/step-{i:07d}.png" if i % 2 else f"outputs/{i:03d}.bin"
            session.add(
                Artifact(
                    job_id=uuid.UUID(job_id),
                    kind="sample",
                    name=name,
                    key=f"jobs/{job_id}/x/a1/{name}",
                    size=1,
                    sha256="0" * 64,
                    content_type="image/png",
                    attempt=1,
                )
            )
    return job_id


def test_pages_cover_every_artifact_once_in_name_order(
    client: TestClient, sessions: sessionmaker[Session], alice: Caller
) -> None:
    # Given a job with 23 artifacts
    job_id = _job_with_artifacts(client, sessions, alice, ARTIFACTS)
    # When they are read 5 at a time, following next_cursor
    names: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"/v1/jobs/{job_id}/artifacts", params=params, headers=alice.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= PAGE
        names += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Then every artifact came exactly once, by name, in ceil(23 / 5) pages
    assert pages == -(-ARTIFACTS // PAGE)
    assert names == sorted(names) and len(set(names)) == ARTIFACTS


def test_one_default_page_holds_a_usual_job(client: TestClient, sessions: sessionmaker[Session], alice: Caller) -> None:
    # Given a job with 23 artifacts
    job_id = _job_with_artifacts(client, sessions, alice, ARTIFACTS)
    # When the list is read without a limit, as clients did before it was paginated
    page = client.get(f"/v1/jobs/{job_id}/artifacts", headers=alice.headers).json()
    # Then `items` holds them all and there is no next page
    assert len(page["items"]) == ARTIFACTS <= DEFAULT_ARTIFACT_PAGE
    assert page["next_cursor"] is None


def test_a_bad_cursor_or_limit_is_422_and_another_tenants_job_404(
    client: TestClient, sessions: sessionmaker[Session], alice: Caller, bob: Caller, settings: Settings
) -> None:
    # Given alice's job with artifacts
    job_id = _job_with_artifacts(client, sessions, alice, 3)
    url = f"/v1/jobs/{job_id}/artifacts"
    # Then a cursor the API did not return, a limit over the maximum, and bob asking are refused
    for params in ({"cursor": "not-base64!"}, {"cursor": "AA=="}, {"limit": settings.page_size_max + 1}, {"limit": 0}):
        response = client.get(url, params=params, headers=alice.headers)
        assert response.status_code == 422, (params, response.text)
    assert client.get(url, headers=bob.headers).status_code == 404
