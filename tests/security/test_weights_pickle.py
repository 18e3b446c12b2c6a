"""A pickle posing as weights never executes: every place Atelier loads a torch file refuses it.

The payload's ``__reduce__`` would create a marker file. The test first shows that an unsafe
``torch.load`` does run it (so the payload is live), then routes it through each real loader:
a gan.sample job's source generator.pt, a gan.train and a style.transfer job resuming from a
checkpoint pointer (both run by the worker runtime in process, on the real services), the
VGG weights cache, and an uploaded style-weights file. Each job fails with a recorded error;
no marker appears.
Each test reads Given / When / Then."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.models import Job
from shared.db.session import transaction
from shared.storage import S3ObjectStore, job_key
from tests.conftest import Caller

torch = pytest.importorskip("torch")

from workers.engines import execute  # noqa: E402 - needs torch
from workers.gan.sample import load_generator  # noqa: E402
from workers.runtime import WorkerContext, run_job  # noqa: E402
from workers.style.vgg import WeightsUnavailableError, build_vgg  # noqa: E402

pytestmark = pytest.mark.integration

TINY_GAN = {"dataset": "digits", "steps": 4, "batch_size": 8, "image_size": 16, "nz": 8, "ngf": 8, "ndf": 8}
TINY_STYLE = {"content": "astronaut", "styles": ["coffee"], "size": 32, "steps": 2, "weights": "random"}


class CreatesAFile:
    """Unpickling this calls open(path, 'w'): the file appearing means the pickle executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (self.path, "w"))


def legacy_pickle(marker: Path) -> bytes:
    """torch.save's legacy (pre-zip) format: a bare pickle stream, shaped like a generator file."""
    buffer = io.BytesIO()
    torch.save(
        {"version": 1, "arch": CreatesAFile(marker), "state_dict": {}}, buffer, _use_new_zipfile_serialization=False
    )
    return buffer.getvalue()


def torch_zip_pickle(marker: Path) -> bytes:
    """torch.save's zip format with the payload in data.pkl."""
    buffer = io.BytesIO()
    torch.save({"version": 1, "step": 3, "netG": CreatesAFile(marker)}, buffer)
    return buffer.getvalue()


PAYLOADS = {"legacy": legacy_pickle, "torch-zip": torch_zip_pickle}


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    """The worker runtime in this process, on the real Postgres and S3 server."""
    yield WorkerContext.build(settings.model_copy(update={"worker_name": "pickle-test"}))


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_the_payload_is_live(tmp_path: Path, kind: str) -> None:
    # Given the payload, When it is loaded the unsafe way, Then it runs (so its absence below means something)
    marker = tmp_path / "pwned"
    torch.load(io.BytesIO(PAYLOADS[kind](marker)), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_load_generator_refuses_it(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match=r"not a usable generator\.pt"):
        load_generator(PAYLOADS[kind](marker))
    assert not marker.exists()


def test_vgg_weights_cache_refuses_it(tmp_path: Path) -> None:
    # Given the VGG19 ImageNet weights file in the cache replaced by the payload
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    marker = tmp_path / "pwned"
    (checkpoints / "vgg19-dcbb9e9d.pth").write_bytes(torch_zip_pickle(marker))
    # When a style encoder is built from it, Then it is refused and nothing ran
    with pytest.raises(WeightsUnavailableError):
        build_vgg("vgg19", "imagenet", seed=0, layers=["relu1_1"], weights_dir=tmp_path, allow_download=False)
    assert not marker.exists()


def _fails_without_running(
    worker: WorkerContext,
    sessions: sessionmaker[Session],
    caller: Caller,
    job_id: uuid.UUID,
    marker: Path,
    *,
    code: str,
    reason: str,
) -> None:
    """Run the job: it must fail with ``code`` and ``reason`` in its error, and the payload's marker must not exist."""
    outcome = run_job(worker, job_id, execute, exact=True)
    job = _finished(sessions, caller, job_id)
    assert (outcome, job.state, job.error_code) == ("failed", "failed", code), job.error_message
    assert reason in (job.error_message or "")
    assert not marker.exists()


def _finished(sessions: sessionmaker[Session], caller: Caller, job_id: uuid.UUID) -> Job:
    with transaction(sessions) as session:
        job = queries.get_job(session, tenant_id=caller.tenant_id, job_id=job_id)
        session.expunge(job)
        return job


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_gan_sample_of_a_poisoned_generator_fails_cleanly(
    client: TestClient,
    alice: Caller,
    sessions: sessionmaker[Session],
    store: S3ObjectStore,
    worker: WorkerContext,
    tmp_path: Path,
    kind: str,
) -> None:
    # Given a succeeded gan.train job of alice's whose generator.pt is the payload
    marker = tmp_path / "pwned"
    source = client.post("/v1/jobs", json={"type": "gan.train", "params": TINY_GAN}, headers=alice.headers).json()
    source_id = uuid.UUID(source["id"])
    key = job_key(source_id, "outputs", "a1/generator.pt")
    blob = PAYLOADS[kind](marker)
    store.put(key, blob)
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == source_id).values(state="running", attempt=1))
        queries.record_artifact(
            session, job_id=source_id, attempt=1, name="generator.pt", kind="weights", key=key,
            size=len(blob), sha256="0" * 64, content_type="application/octet-stream",
        )  # fmt: skip
        session.execute(update(Job).where(Job.id == source_id).values(state="succeeded"))
    # When alice samples from it and a worker runs the job
    created = client.post(
        "/v1/jobs", json={"type": "gan.sample", "params": {"source_job": source["id"], "n": 4}}, headers=alice.headers
    )
    assert created.status_code == 201, created.text
    # Then the job fails with a clear reason and the payload never ran
    _fails_without_running(worker, sessions, alice, uuid.UUID(created.json()["id"]), marker,
                           code="bad_input", reason="not a usable generator.pt")  # fmt: skip


@pytest.mark.parametrize(
    ("job_type", "params"), [("gan.train", TINY_GAN), ("style.transfer", TINY_STYLE)], ids=["gan", "style"]
)
def test_resume_from_a_poisoned_checkpoint_fails_cleanly(
    client: TestClient,
    alice: Caller,
    sessions: sessionmaker[Session],
    store: S3ObjectStore,
    worker: WorkerContext,
    tmp_path: Path,
    job_type: str,
    params: dict,
) -> None:
    # Given a queued job whose checkpoint pointer names the payload
    marker = tmp_path / "pwned"
    created = client.post("/v1/jobs", json={"type": job_type, "params": params}, headers=alice.headers)
    assert created.status_code == 201, created.text
    job_id = uuid.UUID(created.json()["id"])
    key = job_key(job_id, "checkpoints", "a0-step-1.pt")
    store.put(key, torch_zip_pickle(marker))
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(checkpoint_key=key, checkpoint_step=1))
    # When a worker runs it (and resumes from that checkpoint)
    # Then the job fails with the load error recorded, and the payload never ran
    _fails_without_running(worker, sessions, alice, job_id, marker,
                           code="bad_input", reason="checkpoint could not be loaded: Weights only load failed")  # fmt: skip


def test_an_uploaded_weights_file_never_executes(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], worker: WorkerContext, tmp_path: Path
) -> None:
    # Given the payload in torch.save's zip format, uploaded as style weights: its container is
    # well formed, so the API (which never unpickles) accepts it as a weights upload
    marker = tmp_path / "pwned"
    uploaded = client.post(
        "/v1/uploads",
        files=[("files", ("vgg19.pth", torch_zip_pickle(marker), "application/octet-stream"))],
        headers=alice.headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["kind"] == "weights"
    # When a style job uses it and a worker runs the job
    params = TINY_STYLE | {"weights": uploaded.json()["id"]}
    created = client.post("/v1/jobs", json={"type": "style.transfer", "params": params}, headers=alice.headers)
    assert created.status_code == 201, created.text
    # Then torch.load(weights_only=True) refused it: the job failed saying so, and nothing ran
    _fails_without_running(worker, sessions, alice, uuid.UUID(created.json()["id"]), marker,
                           code="weights_unavailable", reason="cannot be read by torch.load(weights_only=True)")  # fmt: skip
