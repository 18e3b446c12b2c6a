"""The job-type registry: each job type is defined once, in its own module (its params class),
and registered here with its queue, summary and example. The API validates with these classes
at submit time and the worker parses with the same classes. Nothing here imports torch.

A new job type adds one params module under shared/jobs/ and one entry below; submit checks
the uploads and jobs it names through its params' ``references()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.jobs.gan_sample import GanSampleParams
from shared.jobs.gan_train import GanTrainParams
from shared.jobs.params import QUEUE_GPU, JobParams, Reference
from shared.jobs.style_apply import StyleApplyParams
from shared.jobs.style_train import StyleTrainParams
from shared.jobs.style_transfer import StyleTransferParams


@dataclass(frozen=True)
class JobSpec:
    """What the system needs to know about a job type."""

    name: str
    params: type[JobParams]
    queue: str
    summary: str
    example: dict[str, Any]

    def references(self, params: JobParams) -> list[Reference]:
        """The uploads and jobs ``params`` name, for submit to check."""
        return params.references()

    def total_units(self, params: JobParams) -> int:
        """Units of progress the job reports (steps or images)."""
        total_steps = getattr(params, "total_steps", None)
        if callable(total_steps):
            return int(total_steps())
        for attr in ("steps", "n"):
            value = getattr(params, attr, None)
            if isinstance(value, int):
                return value
        return 1


JOB_TYPES: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            name="gan.train",
            params=GanTrainParams,
            queue=QUEUE_GPU,
            summary="Train a DCGAN; checkpoints, loss history, sample grids, final generator weights.",
            example={"dataset": "digits", "steps": 200, "batch_size": 64, "sample_every": 50, "seed": 1},
        ),
        JobSpec(
            name="style.transfer",
            params=StyleTransferParams,
            queue=QUEUE_GPU,
            summary="Gatys style transfer with content, Gram-matrix style and total-variation losses.",
            example={"content": "astronaut", "styles": ["coffee"], "size": 128, "steps": 100, "weights": "random"},
        ),
        JobSpec(
            name="style.train",
            params=StyleTrainParams,
            queue=QUEUE_GPU,
            summary="Train a feed-forward style network (Johnson et al. 2016) on content pictures for one style or "
            "a blend: preview grids, checkpoints, loss history, model.safetensors and its model.json card.",
            example={"styles": ["coffee"], "content": "builtin", "size": 128, "steps": 500, "weights": "random"},
        ),
        JobSpec(
            name="style.apply",
            params=StyleApplyParams,
            queue=QUEUE_GPU,
            summary="Apply a trained style model (GET /v1/models) to pictures: one forward pass each; output.png, "
            "or outputs.zip for several. Short: submit it with Prefer: wait.",
            example={"model": "00000000-0000-0000-0000-000000000000", "images": ["astronaut"], "size": 512},
        ),
        JobSpec(
            name="gan.sample",
            params=GanSampleParams,
            queue=QUEUE_GPU,
            summary="Sample N images from a finished gan.train job: a PNG grid and raw .npy outputs.",
            example={"source_job": "00000000-0000-0000-0000-000000000000", "n": 64, "seed": 0},
        ),
    )
}
