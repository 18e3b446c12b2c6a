"""Admission: a job whose estimated peak memory is over the workers' device memory, or whose
artifacts would pass the per-job caps, is refused at submit with a 422 naming the field to change
(docs/DESIGN.md, "Memory admission"). Runs after the references are checked."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import queries
from shared.errors import InvalidInput
from shared.jobs.artifacts import (
    ArtifactPlan,
    gan_generator_file_bytes,
    gan_sample_plan,
    gan_train_plan,
    style_apply_plan,
    style_plan,
    style_train_plan,
)
from shared.jobs.gan_sample import GanSampleParams
from shared.jobs.gan_train import GanTrainParams
from shared.jobs.memory import (
    DEFAULT_CONDITIONAL_CLASSES,
    describe_bytes,
    gan_memory,
    gan_networks,
    gan_sample_memory_bytes,
    style_apply_memory_bytes,
    style_memory_bytes,
    style_train_memory_bytes,
)
from shared.jobs.params import is_upload_ref
from shared.jobs.style_apply import StyleApplyParams
from shared.jobs.style_train import StyleTrainParams
from shared.jobs.style_transfer import StyleTransferParams

GAN_REMEDY = "lower batch_size, image_size, ngf or ndf"


def admit(session: Session, *, tenant_id: uuid.UUID, params: BaseModel, settings: Settings) -> int | None:
    """Raise InvalidInput when ``params`` would not fit the workers' memory or the per-job artifact caps; returns
    the job's estimated peak device memory in bytes (stored on the job: a worker with less free never claims it),
    None for a type without an estimate."""
    need: int | None = None
    if isinstance(params, GanTrainParams):
        classes = _classes(session, tenant_id=tenant_id, params=params)
        need = _admit_gan_memory(params, classes, settings.worker_device_memory_bytes)
        generator = gan_generator_file_bytes(params, num_classes=classes)
        if generator > settings.max_job_artifact_bytes:
            raise InvalidInput(
                f"params.ngf: generator.pt could take up to {describe_bytes(generator)}, over this server's limit of "
                f"{describe_bytes(settings.max_job_artifact_bytes)} of artifacts a job; lower ngf, nz or image_size",
                field="params.ngf",
            )
        _admit_artifacts(gan_train_plan(params, num_classes=classes), settings)
    elif isinstance(params, StyleTransferParams):
        need = _admit_style_memory(params, settings.style_memory_budget)
        _admit_artifacts(style_plan(params), settings)
    elif isinstance(params, StyleTrainParams):
        need = _admit_style_train_memory(params, settings.style_memory_budget)
        _admit_artifacts(style_train_plan(params), settings)
    elif isinstance(params, StyleApplyParams):
        need = _admit_style_apply(session, tenant_id=tenant_id, params=params, settings=settings)
    elif isinstance(params, GanSampleParams):
        source = queries.get_job(session, tenant_id=tenant_id, job_id=uuid.UUID(params.source_job))
        trained = GanTrainParams.from_stored(source.params)
        need = gan_sample_memory_bytes(trained, params.n)
        have = settings.worker_device_memory_bytes
        if need > have:
            raise InvalidInput(
                f"params.n: {params.n} images from this generator need about {describe_bytes(need)} of device "
                f"memory (estimate), over the {describe_bytes(have)} this server's workers have; lower n",
                field="params.n",
            )
        _admit_artifacts(gan_sample_plan(trained, params.n), settings)
    return need


def _classes(session: Session, *, tenant_id: uuid.UUID, params: GanTrainParams) -> int:
    """A conditional run's class count: an upload's sub-folders, or the built-ins' at most 10."""
    if not params.conditional or not is_upload_ref(params.dataset):
        return DEFAULT_CONDITIONAL_CLASSES
    upload = queries.get_upload(session, tenant_id=tenant_id, upload_id=uuid.UUID(params.dataset))
    return len(upload.classes)


def _admit_gan_memory(params: GanTrainParams, classes: int, have: int) -> int:
    memory = gan_memory(params, num_classes=classes)
    need = memory.total
    if need <= have:
        return need
    if memory.activations >= memory.state:
        field = "params.batch_size"
        part = f"{describe_bytes(memory.activations)} of activations at batch_size {params.batch_size}"
    else:
        net_g, net_d = gan_networks(params, classes)
        field = "params.ngf" if net_g.params >= net_d.params else "params.ndf"
        part = f"{describe_bytes(memory.state)} of weights, gradients and optimiser state"
    raise InvalidInput(
        f"{field}: this {params.arch} at {params.image_size} px needs about {describe_bytes(need)} of device memory "
        f"(estimate; {part}), over the {describe_bytes(have)} this server's workers have; {GAN_REMEDY}",
        field=field,
    )


def _admit_style_memory(params: StyleTransferParams, have: int) -> int:
    need = style_memory_bytes(params)
    if need > have:
        raise InvalidInput(
            f"params.size: {params.size} px with {params.optimizer} and layers down to the deepest one used "
            f"needs about {describe_bytes(need)} of device memory (estimate), over the {describe_bytes(have)} "
            "this server's workers have; lower size or style_scale, or use optimizer adam",
            field="params.size",
        )
    return need


def _admit_style_train_memory(params: StyleTrainParams, have: int) -> int:
    need = style_train_memory_bytes(params)
    if need > have:
        field = "params.batch_size" if params.batch_size > 1 else "params.size"
        raise InvalidInput(
            f"{field}: training at {params.size} px with batch_size {params.batch_size} needs about "
            f"{describe_bytes(need)} of device memory (estimate), over the {describe_bytes(have)} this server's "
            "workers have; lower batch_size, size or width",
            field=field,
        )
    return need


def _admit_style_apply(session: Session, *, tenant_id: uuid.UUID, params: StyleApplyParams, settings: Settings) -> int:
    source = queries.get_job(session, tenant_id=tenant_id, job_id=uuid.UUID(params.model))
    trained = StyleTrainParams.from_stored(source.params)
    for field, message in params.method_problems(trained.method, model=params.model)[:1]:
        raise InvalidInput(f"{field}: {message}", field=field)
    need = style_apply_memory_bytes(trained, params.size, styles=len(params.styles or []))
    have = settings.style_memory_budget
    if need > have:
        raise InvalidInput(
            f"params.size: applying this model at {params.size} px needs about {describe_bytes(need)} of device "
            f"memory (estimate), over the {describe_bytes(have)} this server's workers have; lower size",
            field="params.size",
        )
    pictures = sum(
        queries.get_upload(session, tenant_id=tenant_id, upload_id=uuid.UUID(ref)).file_count
        if is_upload_ref(ref)
        else 1
        for ref in params.images
    )
    _admit_artifacts(style_apply_plan(params, pictures=pictures), settings)
    return need


def _admit_artifacts(plan: ArtifactPlan, settings: Settings) -> None:
    if plan.count > settings.max_job_artifacts:
        raise InvalidInput(
            f"{plan.field}: this job would store {plan.count} artifacts, over this server's limit of "
            f"{settings.max_job_artifacts} a job; {plan.remedy}",
            field=plan.field,
        )
    if plan.max_bytes > settings.max_job_artifact_bytes:
        raise InvalidInput(
            f"{plan.field}: this job's artifacts could take up to {describe_bytes(plan.max_bytes)}, over this "
            f"server's limit of {describe_bytes(settings.max_job_artifact_bytes)} a job; {plan.remedy}",
            field=plan.field,
        )
