"""SIGKILL at ten random points of one gan.train job: every kill resumes from the last
checkpoint, the metric history has no gap and no duplicate, and on CPU the final weights
are bit-identical to an uninterrupted run of the same params."""

from __future__ import annotations

import io
import random
import signal

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.jobs.gan_train import GanTrainParams
from tests.conftest import Caller
from tests.e2e.conftest import wait_job
from tests.support import services
from workers.gan.data import load_builtin
from workers.gan.loop import train
from workers.hooks import InMemoryHooks

pytestmark = pytest.mark.e2e

KILLS = 10
STEPS = 400
PARAMS = {
    "dataset": "digits",
    "image_size": 16,
    "batch_size": 16,
    "ngf": 16,
    "ndf": 16,
    "seed": 21,
    "steps": STEPS,
    "checkpoint_every": 15,
    "sample_every": 1000,
}
KILL_SEED = 20261126


@pytest.fixture(scope="module")
def settings_overrides() -> dict[str, object]:
    """Enough attempts for ten crashes, and no API read cache: the job read right after a kill must
    show the row as the dead worker left it, not a poll from up to job_read_cache_s before."""
    return {"max_attempts": KILLS + 2, "job_read_cache_s": 0.0}


def uninterrupted_generator() -> dict[str, torch.Tensor]:
    """The same params trained in one go, in process, on one CPU thread like the worker."""
    params = GanTrainParams.model_validate(PARAMS)
    hooks = InMemoryHooks()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(params, load_builtin("digits", image_size=16, channels=1), hooks, device="cpu")
    finally:
        torch.set_num_threads(previous)
    state: dict[str, torch.Tensor] = torch.load(io.BytesIO(hooks.artifacts["generator.pt"][0]), weights_only=True)[
        "state_dict"
    ]
    return state


def test_ten_random_sigkills_lose_nothing(
    client: TestClient, alice: Caller, worker: services.Proc, sessions: sessionmaker[Session]
) -> None:
    job_id = client.post("/v1/jobs", json={"type": "gan.train", "params": PARAMS}, headers=alice.headers).json()["id"]
    points = sorted(random.Random(KILL_SEED).sample(range(20, STEPS - 40), KILLS))
    for kill, point in enumerate(points, start=1):
        # Given the job is running on attempt `kill` and has passed a random step
        seen = wait_job(
            client,
            alice,
            job_id,
            until=lambda j, a=kill, p=point: (
                j["attempt"] == a and j["state"] == "running" and j["progress"]["step"] >= p
            ),
            timeout=240,
        )
        # When the worker is SIGKILLed there, and a new one starts
        worker.signal_group(signal.SIGKILL)
        assert worker.proc is not None
        worker.proc.wait(10)
        at_kill = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
        assert at_kill["state"] == "running", (point, seen)
        checkpoint = at_kill["checkpoint"]["step"] if at_kill["checkpoint"] else None
        worker.start().wait_for_log("ready.", start=len(worker.log()))
        # Then the next attempt resumes from the last checkpoint
        resumed = wait_job(client, alice, job_id, until=lambda j, a=kill: j["attempt"] > a, timeout=120)
        assert resumed["resumed_from_step"] == checkpoint, (kill, point, checkpoint, resumed)
    done = wait_job(client, alice, job_id, timeout=300)
    assert done["state"] == "succeeded", done["error"]
    assert done["attempt"] == KILLS + 1
    # No gap and no duplicate in the history
    with sessions() as session:
        rows = session.execute(
            text("SELECT name, step FROM metrics WHERE job_id = :j ORDER BY name, step"), {"j": job_id}
        ).all()
    for name in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert [s for n, s in rows if n == name] == list(range(1, STEPS + 1)), name
    # And the final weights are bit-identical to an uninterrupted run
    weights = client.get(f"/v1/jobs/{job_id}/artifacts/generator.pt", headers=alice.headers)
    resumed_state = torch.load(io.BytesIO(weights.content), weights_only=True)["state_dict"]
    reference = uninterrupted_generator()
    assert resumed_state.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.equal(resumed_state[key], tensor), key
