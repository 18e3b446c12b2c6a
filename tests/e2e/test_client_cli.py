"""End to end: the users' `atelier` CLI, run as a subprocess against the API on a real server
(uvicorn) with a real Celery worker, Postgres, Redis and the S3 server: submit --watch, download,
sample, a job that fails, style transfer on two uploaded pictures, and a job's webhook delivered
to a receiver on loopback (which the test settings allow) and listed by `atelier webhooks`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from atelier_client.webhooks import verify
from PIL import Image

from shared.config import Settings
from tests.conftest import Caller
from tests.support import services
from tests.support.edge_server import HOST, uvicorn_in_thread
from tests.support.webhook_receiver import receiver

pytestmark = pytest.mark.e2e

ATELIER = Path(sys.executable).parent / "atelier"
TRAIN_TIMEOUT_S = 300.0  # a few seconds of training on one CPU thread, plus the worker's first imports
FAIL_TIMEOUT_S = 180.0
STYLE_TIMEOUT_S = 240.0
QUICK_TIMEOUT_S = 60.0
# The smallest gan.train the integration tests use, with samples and a checkpoint halfway.
TINY_GAN: dict[str, object] = {
    "dataset": "digits",
    "image_size": 16,
    "steps": 20,
    "batch_size": 16,
    "ngf": 8,
    "ndf": 8,
    "nz": 8,
    "sample_every": 10,
    "checkpoint_every": 10,
    "image_metrics": "false",
}
STYLE_PICTURE_PX = 48
FAIL_AFTER_S = 5  # long enough for `atelier watch` to start and follow the job while it runs
DELIVERY_TIMEOUT_S = 60.0  # from the job's end to the receiver's 200 being recorded
POLL_S = 0.5
# A row of `atelier webhooks`: the completed event, delivered, an attempt answered 200.
DELIVERED_ROW = re.compile(r"^completed\s+(\d+)\s+delivered\s+#\d+ 200 in \d+ ms", re.MULTILINE)


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    """The API on uvicorn, on a free loopback port."""
    with uvicorn_in_thread(settings) as port:
        yield f"http://{HOST}:{port}"


def cli(
    *args: str, url: str, caller: Caller, cwd: Path, timeout: float = QUICK_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run `atelier ARGS` with the API's URL and the caller's key in its environment; fails at ``timeout``."""
    assert ATELIER.is_file(), f"{ATELIER} is missing: pip install -e './client[cli]'"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_") and k != "NO_COLOR"}
    env |= {
        "ATELIER_URL": url,
        "ATELIER_API_KEY": caller.key,
        "ATELIER_CONFIG": str(cwd / "no-config.toml"),
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [str(ATELIER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def gan_args(**overrides: object) -> list[str]:
    """The tiny job's params as the CLI's key=value pairs, with ``overrides``."""
    return [f"{key}={value}" for key, value in (TINY_GAN | overrides).items()]


def explain(done: subprocess.CompletedProcess[str]) -> str:
    """What a failed command printed, for the assertion message."""
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"


def assert_png(path: Path) -> None:
    """The file is a readable PNG."""
    with Image.open(path) as image:
        assert image.format == "PNG", path
        image.verify()


def test_submit_watch_then_download_and_sample(
    api_url: str, alice: Caller, worker: services.Proc, tmp_path: Path
) -> None:
    # Given a tiny gan.train job submitted with --watch
    watched = cli(
        "submit", "gan.train", *gan_args(), "--watch", url=api_url, caller=alice, cwd=tmp_path, timeout=TRAIN_TIMEOUT_S
    )
    # Then the command followed it to the end and exited 0, printing the id first, then the losses
    assert watched.returncode == 0, explain(watched)
    job_id = watched.stdout.splitlines()[0].strip()
    assert len(job_id) == 36, watched.stdout
    assert "step 20/20" in watched.stdout and "D(x)" in watched.stdout and "D(G(z))" in watched.stdout
    assert "artifact: samples/" in watched.stdout
    assert f"job {job_id} succeeded" in watched.stderr
    # When its artifacts are downloaded
    fetched = cli("download", job_id, "-o", "out", url=api_url, caller=alice, cwd=tmp_path)
    # Then every artifact is on disk, sample grids in their sub-folder
    assert fetched.returncode == 0, explain(fetched)
    out = tmp_path / "out"
    assert (out / "generator.pt").stat().st_size > 0
    assert_png(out / "plots" / "losses.png")
    grids = sorted((out / "samples").glob("*.png"))
    assert grids, fetched.stdout
    assert_png(grids[-1])
    # And the loss history and the job list show it
    history = cli(
        "metrics", job_id, "--format", "csv", "--names", "d_loss,g_loss", url=api_url, caller=alice, cwd=tmp_path
    )
    assert history.returncode == 0, explain(history)
    assert history.stdout.splitlines()[0] == "step,d_loss,g_loss" and len(history.stdout.splitlines()) == 21
    listed = cli("ls", "--state", "succeeded", url=api_url, caller=alice, cwd=tmp_path)
    assert listed.returncode == 0 and job_id in listed.stdout, explain(listed)
    # And `atelier sample` draws from its generator and saves the grid
    sampled = cli(
        "sample", job_id, "-n", "16", "-o", "drawn", url=api_url, caller=alice, cwd=tmp_path, timeout=TRAIN_TIMEOUT_S
    )
    assert sampled.returncode == 0, explain(sampled)
    assert_png(tmp_path / "drawn" / "samples.png")
    assert (tmp_path / "drawn" / "samples.npy").is_file()


def test_watching_a_job_that_fails_exits_non_zero_with_its_error(
    api_url: str, alice: Caller, worker: services.Proc, tmp_path: Path
) -> None:
    # Given a job that may run for only a few seconds but wants 200,000 steps
    long_run = gan_args(steps=200_000, sample_every=200_000, checkpoint_every=200_000, max_runtime_s=FAIL_AFTER_S)
    submitted = cli("submit", "gan.train", *long_run, url=api_url, caller=alice, cwd=tmp_path)
    assert submitted.returncode == 0, explain(submitted)
    job_id = submitted.stdout.strip()
    # When it is watched
    watched = cli("watch", job_id, url=api_url, caller=alice, cwd=tmp_path, timeout=FAIL_TIMEOUT_S)
    # Then it followed the job to its failure and exited 1 with the job's error code and message
    assert watched.returncode == 1, explain(watched)
    assert "state: failed" in watched.stdout, explain(watched)
    assert "error: runtime_exceeded: " in watched.stderr and "max_runtime_s" in watched.stderr, explain(watched)
    assert "Traceback" not in watched.stderr


def test_style_transfers_two_uploaded_pictures_into_out_png(
    api_url: str, alice: Caller, worker: services.Proc, tmp_path: Path
) -> None:
    # Given two small generated pictures
    Image.new("RGB", (STYLE_PICTURE_PX, STYLE_PICTURE_PX), (200, 40, 40)).save(tmp_path / "content.png")
    Image.radial_gradient("L").resize((STYLE_PICTURE_PX, STYLE_PICTURE_PX)).convert("RGB").save(tmp_path / "style.png")
    # When `atelier style` runs a short transfer on them (random weights: no download)
    done = cli(
        "style", "content.png", "style.png", "-o", "out.png", "size=48", "steps=10", "weights=random",
        url=api_url, caller=alice, cwd=tmp_path, timeout=STYLE_TIMEOUT_S,
    )  # fmt: skip
    # Then it saved the output picture where asked
    assert done.returncode == 0, explain(done)
    assert done.stdout.strip() == "out.png"
    assert_png(tmp_path / "out.png")


# The smallest style.train: a model in a few seconds on one CPU thread.
TINY_STYLE_TRAIN = [
    'styles=["coffee"]',
    "size=32",
    "steps=3",
    "batch_size=1",
    "width=8",
    "residual_blocks=1",
    "weights=random",
]


def test_a_trained_model_styles_local_pictures_and_is_listed_then_removed(
    api_url: str, alice: Caller, worker: services.Proc, tmp_path: Path
) -> None:
    # Given a style model trained from the CLI
    trained = cli(
        "submit", "style.train", *TINY_STYLE_TRAIN, "--watch", url=api_url, caller=alice, cwd=tmp_path,
        timeout=TRAIN_TIMEOUT_S,
    )  # fmt: skip
    assert trained.returncode == 0, explain(trained)
    model = trained.stdout.splitlines()[0].strip()
    listed = cli("models", "ls", url=api_url, caller=alice, cwd=tmp_path)
    assert listed.returncode == 0 and model in listed.stdout, explain(listed)
    # When `atelier style --model` styles one local picture, then two pictures and a built-in
    Image.new("RGB", (STYLE_PICTURE_PX, STYLE_PICTURE_PX), (30, 160, 60)).save(tmp_path / "photo.png")
    Image.new("RGB", (STYLE_PICTURE_PX, 32), (30, 60, 160)).save(tmp_path / "other.png")
    one = cli(
        "style", "--model", model, "photo.png", "--size", "40", url=api_url, caller=alice, cwd=tmp_path,
        timeout=STYLE_TIMEOUT_S,
    )  # fmt: skip
    batch = cli(
        "style", "--model", model, "photo.png", "other.png", "astronaut", "-o", "batch.zip", url=api_url,
        caller=alice, cwd=tmp_path, timeout=STYLE_TIMEOUT_S,
    )  # fmt: skip
    # Then one picture gives styled-photo.png at the size asked for, and the batch one zip of three PNGs
    assert one.returncode == 0, explain(one)
    assert one.stdout.strip() == "styled-photo.png"
    with Image.open(tmp_path / "styled-photo.png") as image:
        assert image.format == "PNG" and max(image.size) == 40
    assert batch.returncode == 0, explain(batch)
    with zipfile.ZipFile(tmp_path / "batch.zip") as archive:
        assert len(archive.namelist()) == 3 and "astronaut.png" in archive.namelist(), archive.namelist()
    # And `atelier models rm` removes the model, after which styling with it is refused
    removed = cli("models", "rm", model, url=api_url, caller=alice, cwd=tmp_path)
    assert removed.returncode == 0, explain(removed)
    again = cli("style", "--model", model, "photo.png", url=api_url, caller=alice, cwd=tmp_path)
    assert again.returncode != 0 and "params.model" in again.stderr, explain(again)


def test_a_webhook_submitted_from_the_cli_is_delivered_and_listed(
    api_url: str, alice: Caller, worker: services.Proc, tmp_path: Path
) -> None:
    with receiver() as hook:
        # Given a tiny job submitted with a webhook to a receiver on loopback, filtered to `completed`
        submitted = cli(
            "submit", "gan.train", *gan_args(), "--webhook", hook.url, "--webhook-events", "completed", "--watch",
            url=api_url, caller=alice, cwd=tmp_path, timeout=TRAIN_TIMEOUT_S,
        )  # fmt: skip
        assert submitted.returncode == 0, explain(submitted)
        job_id = submitted.stdout.splitlines()[0].strip()
        # When its completed event reaches the receiver
        hook.wait_for(lambda got: any(r.event == "job.completed" for r in got), DELIVERY_TIMEOUT_S)
        # Then `atelier webhooks` lists that one delivery, delivered with a 200 (once the worker recorded it)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            listed = cli("webhooks", job_id, url=api_url, caller=alice, cwd=tmp_path)
            assert listed.returncode == 0, explain(listed)
            if DELIVERED_ROW.search(listed.stdout) or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        assert DELIVERED_ROW.search(listed.stdout), explain(listed)
        rows = [line for line in listed.stdout.splitlines()[1:] if line and not line[0].isspace()]
        assert len(rows) == 1, listed.stdout  # the filter kept every other event out
        received = hook.snapshot()
    # And only completed events came, each signed with the secret `atelier webhook-secret` prints
    assert {r.event for r in received} == {"job.completed"}
    secret = cli("webhook-secret", url=api_url, caller=alice, cwd=tmp_path)
    assert secret.returncode == 0 and secret.stdout.startswith("whsec_"), explain(secret)
    for delivery in received:
        payload = verify(secret.stdout.strip(), delivery.headers, delivery.body)
        assert payload["data"]["job"]["id"] == job_id
