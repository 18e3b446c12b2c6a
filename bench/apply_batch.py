"""style.apply batch throughput and memory: N pictures through one job, against a batch 10x smaller.

A style model (Johnson's network at its default width 32 and 5 residual blocks; untrained weights cost
the same as trained ones) styles every picture of an image upload in one ``style.apply`` job, run by the
real worker runtime (``workers.runtime.run_job``: Postgres, the local object store, fenced writes,
progress) in a fresh process per job, on one torch thread. The bench reports each job's pictures per
second and the peak growth of the worker's anonymous resident memory while the job runs (sampled every
2 ms, as tests/support/peak_memory.py does), and the ratio of the large batch's peak to the small one's:
a worker that held every output until the end would grow with the batch; one that streams them into the
zip on disk (workers/engines.py) stays flat. Target: the large batch's peak within 1.5x the small one's.

The pictures are generated (smooth colour fields with edges, 320 x 240 PNG, seeded) and stored with an
upload row as ``POST /v1/uploads`` would store them. Needs the test Postgres and Redis, like bench-api.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bench.api import bench_env, guarded_run
from shared.db import queries
from shared.db.models import Job
from shared.db.session import transaction
from shared.jobs.params import QUEUE_GPU
from shared.jobs.states import JobState
from shared.jobs.style_apply import BATCH_OUTPUT, StyleApplyParams
from shared.jobs.style_train import MODEL_ARTIFACT, StyleTrainParams
from shared.storage import ObjectStore, job_key, make_store, upload_key
from tests.support.peak_memory import ANON_SOURCE, MEASURE_ENV

SMALL_BATCH = 100
LARGE_BATCH = 1000
SIZE = 256
PICTURE_W, PICTURE_H = 320, 240
MAX_PEAK_RATIO = 1.5
CHILD_TIMEOUT_S = 3600
MIB = 1024 * 1024


def picture(index: int) -> bytes:
    """A seeded 320 x 240 PNG: a smooth colour field with a few hard edges."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:PICTURE_H, 0:PICTURE_W] / max(PICTURE_W, PICTURE_H)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    field = np.stack([0.5 + 0.5 * np.sin(6 * (x + y) + p) for p in phases], axis=-1)
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.2)
    field[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(0, 1, size=3)
    buffer = io.BytesIO()
    Image.fromarray((field * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def seed_model(sessions: sessionmaker[Session], store: ObjectStore, tenant_id: uuid.UUID) -> uuid.UUID:
    """A succeeded style.train job with a model file of the default network; returns its id (the model's)."""
    import hashlib

    from workers.style.johnson import TransformerNet, model_bytes

    params = StyleTrainParams.model_validate({"styles": ["coffee"], "weights": "random"})
    data = model_bytes(TransformerNet(width=params.width, residual_blocks=params.residual_blocks, seed=0))
    with transaction(sessions) as session:
        job, _ = queries.create_job(
            session, tenant_id=tenant_id, job_type="style.train", params=params.model_dump(mode="json"),
            queue=QUEUE_GPU, total=params.steps, max_attempts=3, idempotency_key=None,
        )  # fmt: skip
        key = job_key(job.id, "outputs", f"a1/{MODEL_ARTIFACT}")
        store.put(key, data)
        session.execute(update(Job).where(Job.id == job.id).values(state=JobState.RUNNING.value, attempt=1))
        queries.record_artifact(
            session, job_id=job.id, attempt=1, name=MODEL_ARTIFACT, kind="output", key=key, size=len(data),
            sha256=hashlib.sha256(data).hexdigest(), content_type="application/octet-stream",
        )  # fmt: skip
        session.execute(update(Job).where(Job.id == job.id).values(state=JobState.SUCCEEDED.value))
        return job.id


def seed_upload(sessions: sessionmaker[Session], store: ObjectStore, tenant_id: uuid.UUID, count: int) -> uuid.UUID:
    """An image upload of ``count`` generated pictures, stored as POST /v1/uploads stores them."""
    upload_id = uuid.uuid4()
    manifest = []
    for index in range(count):
        data, path = picture(index), f"photos/p{index:05d}.png"
        key = upload_key(tenant_id, upload_id, path)
        store.put(key, data, content_type="image/png")
        manifest.append({"path": path, "key": key, "width": PICTURE_W, "height": PICTURE_H, "bytes": len(data)})
    with transaction(sessions) as session:
        queries.create_upload(
            session, upload_id=upload_id, tenant_id=tenant_id, filename="photos.zip", manifest=manifest, classes=[]
        )
    return upload_id


def submit_apply(sessions: sessionmaker[Session], tenant_id: uuid.UUID, model: uuid.UUID, upload: uuid.UUID) -> str:
    """A queued style.apply job over the whole upload."""
    params = StyleApplyParams.model_validate({"model": str(model), "images": [str(upload)], "size": SIZE})
    with transaction(sessions) as session:
        job, _ = queries.create_job(
            session, tenant_id=tenant_id, job_type="style.apply", params=params.model_dump(mode="json"),
            queue=QUEUE_GPU, total=1, max_attempts=3, idempotency_key=None,
        )  # fmt: skip
        return str(job.id)


CHILD = (
    ANON_SOURCE
    + """
import sys, time, uuid
import torch
torch.set_num_threads(1)
from bench.api import bench_settings
from pathlib import Path
from workers.engines import execute
from workers.runtime import WorkerContext, run_job

root, db_url, redis_url, job_id = sys.argv[1:5]
ctx = WorkerContext.build(bench_settings(Path(root), db_url, redis_url))
started = time.perf_counter()
print_growth(lambda: run_job(ctx, uuid.UUID(job_id), execute, exact=True))
print(json.dumps({"seconds": time.perf_counter() - started}))
"""
)


@dataclass(frozen=True)
class Run:
    """One measured job."""

    pictures: int
    seconds: float
    growth: int

    @property
    def per_s(self) -> float:
        """Pictures per second."""
        return self.pictures / self.seconds


def measure(root: Path, db_url: str, redis_url: str, job_id: str, pictures: int) -> Run:
    """Run the job in a fresh worker process; its time and peak memory growth."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), db_url, redis_url, job_id],
        cwd=Path(__file__).resolve().parents[1],
        env=MEASURE_ENV,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the worker process failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    growth = next(line["growth"] for line in lines if "growth" in line)
    seconds = next(line["seconds"] for line in lines if "seconds" in line)
    return Run(pictures=pictures, seconds=seconds, growth=growth)


def check_output(
    sessions: sessionmaker[Session], store: ObjectStore, tenant_id: uuid.UUID, job_id: str, n: int
) -> None:
    """The job succeeded with a zip of ``n`` PNGs."""
    with transaction(sessions) as session:
        job = queries.get_job(session, tenant_id=tenant_id, job_id=uuid.UUID(job_id))
        if job.state != JobState.SUCCEEDED.value:
            raise RuntimeError(f"job {job_id} ended {job.state}: {job.error_code} {job.error_message}")
        key = queries.get_artifact(session, job_id=job.id, name=BATCH_OUTPUT).key
    with zipfile.ZipFile(io.BytesIO(store.get(key))) as archive:
        if len(archive.namelist()) != n:
            raise RuntimeError(f"outputs.zip holds {len(archive.namelist())} pictures, expected {n}")


def run(args: argparse.Namespace, stack: contextlib.ExitStack[None]) -> bool:
    """Seed, measure both batches (small first), report; True when the target is met."""
    env = bench_env(stack, prefix="atelier-bench-apply-")
    settings = env.settings
    store = make_store(settings)
    with transaction(env.sessions) as session:
        tenant = queries.create_tenant(session, name=f"bench-{uuid.uuid4().hex[:8]}")
        tenant_id = tenant.id
    model = seed_model(env.sessions, store, tenant_id)
    runs: list[Run] = []
    for count in (args.small, args.large):
        started = time.perf_counter()
        upload = seed_upload(env.sessions, store, tenant_id, count)
        job_id = submit_apply(env.sessions, tenant_id, model, upload)
        print(f"seeded {count} pictures in {time.perf_counter() - started:.1f} s; running job {job_id}", flush=True)
        result = measure(env.root, settings.database_url, settings.redis_url, job_id, count)
        check_output(env.sessions, store, tenant_id, job_id, count)
        runs.append(result)
        print(
            f"  {count} pictures at {SIZE} px: {result.seconds:.1f} s, {result.per_s:.2f} pictures/s, "
            f"peak memory growth {result.growth / MIB:.0f} MiB",
            flush=True,
        )
    small, large = runs
    ratio = large.growth / max(small.growth, 1)
    ok = ratio <= MAX_PEAK_RATIO
    print(
        f"peak growth {large.pictures} pictures / {small.pictures} pictures: {ratio:.2f}x (target <= "
        f"{MAX_PEAK_RATIO}x: {'PASS' if ok else 'FAIL'}); throughput {large.per_s:.2f} pictures/s "
        f"({large.per_s / small.per_s:.2f}x the small batch's)"
    )
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are what docs/benchmarks.md reports."""
    parser = argparse.ArgumentParser(prog="python -m bench.apply_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=SMALL_BATCH, help="pictures in the reference job")
    parser.add_argument("--large", type=int, default=LARGE_BATCH, help="pictures in the measured job")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    if not 2 <= args.small < args.large:
        parser.error("need 2 <= --small < --large (a batch of one is output.png, not a zip)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; everything it made is removed on any exit."""
    args = parse_args(argv)
    outcome = guarded_run(lambda stack: run(args, stack), header=f"load average {os.getloadavg()[0]:.1f}, ")
    if isinstance(outcome, int):
        return outcome
    ok, seconds = outcome
    print(f"total {seconds:.0f} s, load average {os.getloadavg()[0]:.2f}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
