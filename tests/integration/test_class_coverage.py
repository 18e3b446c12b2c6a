"""Class coverage through the real worker runtime (Postgres, the S3 server): a digits job records class_kl and
class_confidence beside fd at its evaluation ticks; an upload with class folders gets its own classifier,
trained once and stored beside the upload's decoded copies; an upload without classes records none.

Each test reads Given / When / Then."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.config import Settings
from shared.storage import S3ObjectStore, prepared_prefix
from tests.conftest import Caller
from tests.support.images import png, zip_of

pytest.importorskip("torch")

from tests.support.runs import TINY_GAN, in_process_worker, trained
from workers import engines
from workers.gan.coverage import CLASS_CONFIDENCE_METRIC, CLASS_KL_METRIC, load_set_classifier
from workers.runtime import WorkerContext

pytestmark = pytest.mark.integration

EVALUATED = TINY_GAN | {"image_metrics": True, "eval_every": 3}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 40, 220)}


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    yield in_process_worker(settings, "coverage-test")


def series(client: TestClient, caller: Caller, job_id: str, *names: str) -> dict[str, list[Any]]:
    response = client.get(f"/v1/jobs/{job_id}/metrics", params={"names": ",".join(names)}, headers=caller.headers)
    assert response.status_code == 200, response.text
    return {name: [(p["step"], p["value"]) for p in points] for name, points in response.json()["series"].items()}


def upload(client: TestClient, caller: Caller, entries: dict[str, bytes]) -> str:
    files = [("files", ("set.zip", zip_of(entries), "application/zip"))]
    response = client.post("/v1/uploads", files=files, headers=caller.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_digits_job_records_class_coverage_at_its_evaluation_ticks(
    client: TestClient, alice: Caller, worker: WorkerContext
) -> None:
    # When a tiny digits job with image metrics runs (evaluations at steps 3 and 6)
    job_id = trained(client, alice, worker, **EVALUATED)
    # Then class_kl and class_confidence are in its history beside fd, at the same steps, in range
    got = series(client, alice, job_id, "fd", CLASS_KL_METRIC, CLASS_CONFIDENCE_METRIC)
    assert [s for s, _ in got["fd"]] == [s for s, _ in got[CLASS_KL_METRIC]] == [3, 6]
    assert all(0.0 <= v <= 2.4 for _, v in got[CLASS_KL_METRIC])  # at most log(1 / the rarest digit's share)
    assert all(0.1 <= v <= 1.0 for _, v in got[CLASS_CONFIDENCE_METRIC])


def test_an_upload_with_class_folders_gets_its_own_classifier_once(
    client: TestClient, alice: Caller, worker: WorkerContext, store: S3ObjectStore
) -> None:
    # Given an upload of three colour classes, 8 pictures each
    entries = {
        f"{name}/{i}.png": png(color=tuple(min(255, c + 3 * i) for c in rgb))
        for name, rgb in COLOURS.items()
        for i in range(8)
    }  # type: ignore[misc]
    upload_id = upload(client, alice, entries)
    params = EVALUATED | {"dataset": upload_id, "channels": 3}
    # When a job trains on it
    first = trained(client, alice, worker, **params)
    # Then its class coverage is recorded, by a classifier of the upload's three classes stored beside the upload
    assert [s for s, _ in series(client, alice, first, CLASS_KL_METRIC)[CLASS_KL_METRIC]] == [3, 6]
    key = engines.set_classifier_key(alice.tenant_id, upload_id, image_size=16, channels=3)
    assert key.startswith(prepared_prefix(alice.tenant_id, upload_id))
    stored = store.get(key)
    classifier = load_set_classifier(stored, channels=3, names=("blue", "green", "red"))
    assert classifier.held_out_accuracy == 1.0  # three solid colours
    # And a second job (this process's cache emptied) reads it back rather than training again
    modified = next(o.modified for o in store.listing(key))
    engines._SET_CLASSIFIERS.clear()
    second = trained(client, alice, worker, **params)
    assert series(client, alice, second, CLASS_KL_METRIC)[CLASS_KL_METRIC]
    assert [o.modified for o in store.listing(key)] == [modified]


def test_an_upload_without_classes_records_image_metrics_but_no_class_coverage(
    client: TestClient, alice: Caller, worker: WorkerContext
) -> None:
    # Given 24 loose pictures (no class folders)
    upload_id = upload(client, alice, {f"{i}.png": png(color=(10 * i, 100, 200)) for i in range(24)})
    # When a job trains on them
    job_id = trained(client, alice, worker, **(EVALUATED | {"dataset": upload_id, "channels": 3}))
    # Then fd is recorded and class coverage is not
    got = series(client, alice, job_id, "fd", CLASS_KL_METRIC)
    assert [s for s, _ in got["fd"]] == [3, 6]
    assert not got.get(CLASS_KL_METRIC)
