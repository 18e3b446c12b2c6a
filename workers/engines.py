"""Executors: turn a claimed job into a call of a pure engine (workers/gan, workers/style),
resolving datasets and images from built-ins, uploads and earlier jobs."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import torch
from PIL import Image

from shared.db import queries
from shared.db.session import transaction
from shared.errors import JobFailed, NotFound
from shared.jobs.gan_sample import GanSampleParams
from shared.jobs.gan_train import GanTrainParams
from shared.jobs.memory import (
    describe_bytes,
    gan_memory_bytes,
    gan_sample_memory_bytes,
    style_apply_memory_bytes,
    style_memory_bytes,
    style_train_memory_bytes,
)
from shared.jobs.params import BUILTIN_DATASETS, MIN_CLASSES, TORCHVISION_DATASETS, is_upload_ref
from shared.jobs.style_apply import BATCH_OUTPUT, SINGLE_OUTPUT, StyleApplyParams
from shared.jobs.style_train import CONTENT_BUILTIN, MODEL_ARTIFACT, StyleTrainParams
from shared.jobs.style_transfer import StyleTransferParams
from shared.storage import prepared_prefix, retry_storage
from workers.gan import data as gan_data
from workers.gan.coverage import MIN_CLASSES as COVERAGE_MIN_CLASSES
from workers.gan.coverage import (
    SET_CLASSIFIER_VERSION,
    ClassJudge,
    load_set_classifier,
    reference_shares,
    set_classifier_bytes,
    train_set_classifier,
)
from workers.gan.evaluation import EVAL_IMAGES
from workers.gan.features import (
    CLASSIFIER_KEY,
    MIN_EVAL_IMAGES,
    FeatureSpace,
    ImageEvaluator,
    TrainedClassifier,
    classifier_bytes,
    load_classifier,
    train_digits_classifier,
)
from workers.gan.loop import GENERATOR_ARTIFACT
from workers.gan.loop import train as gan_train
from workers.gan.sample import sample as gan_sample
from workers.hooks import StopRequested
from workers.model_cache import ModelCache
from workers.oom import too_large_on_oom
from workers.runtime import Executor, JobRunner, WorkerContext
from workers.style.adain import AdainModel, stylize_adain, train_adain
from workers.style.apply import Forward, output_name, style_picture
from workers.style.content import ContentSet, builtin_content, content_from_images
from workers.style.images import decode_image, load_builtin_image, to_tensor
from workers.style.johnson import train_johnson
from workers.style.model_file import load_style_model
from workers.style.transfer import transfer as style_transfer
from workers.style.vgg import WeightsUnavailableError, load_state_dict_file
from workers.training import NPY_CONTENT_TYPE, OUTPUT_KIND, PNG_CONTENT_TYPE, SAMPLE_KIND, DivergenceError

MEMINFO: Final = "/proc/meminfo"
RESIDENT_SHARE: Final = 0.25  # of free device memory a dataset may take to live on the GPU
log = logging.getLogger(__name__)
# The digits feature classifier per object store (a worker has one; tests build several).
_CLASSIFIERS: dict[int, TrainedClassifier] = {}
# Labelled sets' classifiers (class coverage) by (store, key); a few hundred KB each, oldest dropped first.
SET_CLASSIFIER_CACHE: Final = 16
_SET_CLASSIFIERS: dict[tuple[int, str], TrainedClassifier] = {}


def pick_device(preference: str) -> torch.device:
    """cuda when asked for or available under 'auto', else cpu."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def available_memory_bytes(device: torch.device, limit: int | None = None) -> int:
    """Memory a job may use on ``device``: free CUDA memory (plus what torch has cached but not
    in use), or the host's MemAvailable; at most ``limit``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        have = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        have = _host_memory_available()
    return min(have, limit) if limit is not None else have


def _host_memory_available() -> int:
    with open(MEMINFO) as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _check_memory(need: int, device: torch.device, limit: int | None, *, what: str, remedy: str) -> None:
    """Fail the job (too_large) before it allocates when its estimate is over what the device has free."""
    have = available_memory_bytes(device, limit)
    if need > have:
        raise JobFailed(
            f"{what} needs about {describe_bytes(need)} of {device.type} memory (estimate), "
            f"but this worker has {describe_bytes(have)} available; {remedy}",
            code="too_large",
        )


STYLE_REMEDY = "lower size or style_scale, or use optimizer adam"


def _check_style_memory(params: StyleTransferParams, device: torch.device, limit: int | None) -> None:
    _check_memory(
        style_memory_bytes(params),
        device,
        limit,
        what=f"params.size: {params.size} px",
        remedy=STYLE_REMEDY,
    )


GAN_REMEDY = "lower batch_size, image_size, ngf or ndf"


def _fetch(ctx: WorkerContext, key: str, what: str) -> bytes:
    return retry_storage(lambda: ctx.store.get(key), deadline_s=ctx.settings.storage_retry_deadline_s, what=what)


def _upload_files(ctx: WorkerContext, tenant_id: uuid.UUID, upload_id: str) -> list[tuple[str, bytes]]:
    with transaction(ctx.sessions) as session:
        try:
            upload = queries.get_upload(session, tenant_id=tenant_id, upload_id=uuid.UUID(upload_id))
        except NotFound as exc:
            raise JobFailed(f"upload {upload_id} no longer exists", code="missing_input") from exc
        manifest = list(upload.manifest)
    return [(f["path"], _fetch(ctx, f["key"], f"upload file {f['path']}")) for f in manifest]


def _image(ctx: WorkerContext, tenant_id: uuid.UUID, ref: str) -> Image.Image:
    if not is_upload_ref(ref):
        return load_builtin_image(ref)
    path, data = _upload_files(ctx, tenant_id, ref)[0]
    try:
        return decode_image(data)
    except ValueError as exc:
        raise JobFailed(f"upload {ref}: {path} cannot be decoded: {exc}", code="bad_input") from exc


def run_gan_train(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner) -> None:
    """gan.train: load the dataset, then the adversarial loop."""
    params = GanTrainParams.from_stored(claim.params)
    channels = params.resolved_channels()
    labels: torch.Tensor | None = None
    classes: tuple[str, ...] | list[str] = ()
    if params.points:
        images = gan_data.load_points(params.dataset)
    elif params.dataset in TORCHVISION_DATASETS:
        try:
            named = gan_data.load_torchvision(
                params.dataset,
                root=ctx.settings.datasets_dir,
                image_size=params.image_size,
                channels=channels,
                allow_download=ctx.settings.allow_data_download,
            )
        except gan_data.DatasetUnavailableError as exc:
            raise JobFailed(str(exc), code="dataset_unavailable") from exc
        images, labels, classes = named.images, named.labels, named.classes
    elif params.dataset in BUILTIN_DATASETS:
        builtin = gan_data.load_builtin_labelled(params.dataset, image_size=params.image_size, channels=channels)
        images, labels, classes = builtin.images, builtin.labels, builtin.classes
    else:
        prepared = _prepared_upload(
            ctx, claim.tenant_id, params.dataset, image_size=params.image_size, channels=channels
        )
        images, labels, classes = prepared.images, prepared.labels, prepared.classes
    if params.conditional and len(classes) < MIN_CLASSES:
        raise JobFailed(
            f"params.conditional: the dataset has {len(classes)} classes; conditioning needs {MIN_CLASSES} or more "
            "(an upload's classes are its sub-folders)",
            code="bad_input",
        )
    evaluator = None
    if params.image_metrics and not params.points:
        if images.shape[0] >= MIN_EVAL_IMAGES:
            judge = _class_judge(ctx, claim.tenant_id, params, images, labels, classes, channels=channels)
            evaluator = _image_evaluator(ctx, images, seed=params.seed, judge=judge)
        else:
            runner.warn(
                f"image metrics (fd, kid, precision, recall) need at least {MIN_EVAL_IMAGES} images; "
                f"this dataset has {images.shape[0]}, so they are not recorded"
            )
    device = pick_device(ctx.settings.device)
    _check_memory(
        gan_memory_bytes(params, num_classes=len(classes)),
        device,
        ctx.settings.device_memory_limit_bytes,
        what=f"params.batch_size: a batch of {params.batch_size} at {params.image_size} px",
        remedy=GAN_REMEDY,
    )
    images, labels = _resident(images, labels, device)
    try:
        with too_large_on_oom(
            device, what=f"at batch_size {params.batch_size}, {params.image_size} px", remedy=GAN_REMEDY
        ):
            gan_train(
                params,
                images,
                runner,
                device=device,
                labels=labels,
                num_classes=len(classes),
                evaluator=evaluator,
            )
    except DivergenceError as exc:
        raise JobFailed(str(exc), code="diverged") from exc
    except ValueError as exc:  # a checkpoint that doesn't fit these params, or unusable data
        raise JobFailed(str(exc), code="bad_input") from exc


def prepared_key(tenant_id: uuid.UUID, upload_id: str, *, image_size: int, channels: int) -> str:
    """Where an upload decoded at one size and channel count is kept for later jobs."""
    return f"{prepared_prefix(tenant_id, upload_id)}{image_size}px-{channels}ch-v{gan_data.PACKED_VERSION}.pt"


def _prepared_upload(
    ctx: WorkerContext, tenant_id: uuid.UUID, upload_id: str, *, image_size: int, channels: int
) -> gan_data.Labelled:
    """An uploaded image set, decoded, resized and packed once per (size, channels), then reused."""
    key = prepared_key(tenant_id, upload_id, image_size=image_size, channels=channels)
    try:
        return gan_data.unpack_packed(_fetch(ctx, key, "the prepared dataset"))
    except (NotFound, ValueError):
        pass  # not prepared yet (or unreadable): prepare it now
    files = _upload_files(ctx, tenant_id, upload_id)
    try:
        images, labels, classes = gan_data.load_image_files(files, image_size=image_size, channels=channels)
    except ValueError as exc:
        raise JobFailed(str(exc), code="bad_input") from exc
    labelled = gan_data.Labelled(images, labels, tuple(classes))
    packed = gan_data.pack(labelled)
    retry_storage(
        lambda: ctx.store.put(key, packed),
        deadline_s=ctx.settings.storage_retry_deadline_s,
        what="the prepared dataset",
    )
    return gan_data.unpack_packed(packed)  # exactly what later jobs will read


def _resident(
    images: torch.Tensor, labels: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move the dataset to the GPU when it takes at most RESIDENT_SHARE of the free memory: no copies per batch."""
    if device.type != "cuda" or images.numel() * images.element_size() > RESIDENT_SHARE * available_memory_bytes(
        device
    ):
        return images, labels
    return images.to(device), None if labels is None else labels.to(device)


def _digits_classifier(ctx: WorkerContext) -> TrainedClassifier:
    """The feature classifier for image metrics: from this process, else the store, else trained and stored."""
    cached = _CLASSIFIERS.get(id(ctx.store))
    if cached is not None:
        return cached
    try:
        cached = load_classifier(_fetch(ctx, CLASSIFIER_KEY, "the digits classifier"))
    except (NotFound, ValueError) as exc:  # never stored (or unreadable): train it once, store it for everyone
        log.info("training the digits feature classifier (%s)", exc)
        cached = train_digits_classifier()
        data = classifier_bytes(cached)
        retry_storage(
            lambda: ctx.store.put(CLASSIFIER_KEY, data),
            deadline_s=ctx.settings.storage_retry_deadline_s,
            what="the digits classifier",
        )
    _CLASSIFIERS[id(ctx.store)] = cached
    return cached


def _image_evaluator(
    ctx: WorkerContext, images: torch.Tensor, *, seed: int, judge: ClassJudge | None = None
) -> ImageEvaluator:
    """Scores samples against up to EVAL_IMAGES real images drawn (seeded) from the dataset."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(images.shape[0], generator=generator)[:EVAL_IMAGES]
    return ImageEvaluator(FeatureSpace(_digits_classifier(ctx).model), images.index_select(0, pick), judge)


def set_classifier_key(tenant_id: uuid.UUID, dataset: str, *, image_size: int, channels: int) -> str:
    """Where a labelled set's classifier is kept: beside an upload's decoded copies (deleted with it), or
    under assets/ for a built-in or torchvision set."""
    name = f"classifier-{image_size}px-{channels}ch-v{SET_CLASSIFIER_VERSION}.pt"
    if is_upload_ref(dataset):
        return f"{prepared_prefix(tenant_id, dataset)}{name}"
    return f"assets/classifiers/{dataset}-{name}"


def _class_judge(
    ctx: WorkerContext,
    tenant_id: uuid.UUID,
    params: GanTrainParams,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    classes: tuple[str, ...] | list[str],
    *,
    channels: int,
) -> ClassJudge | None:
    """The class-coverage judge of a labelled dataset (two or more classes), else None: the digits
    classifier for digits, else the set's own classifier, from this process, the store, or trained and stored."""
    if labels is None or len(classes) < COVERAGE_MIN_CLASSES:
        return None
    reference = reference_shares(labels, len(classes), conditional=params.conditional)
    if params.dataset == gan_data.DIGITS:
        return ClassJudge(_digits_classifier(ctx), 1, classes, reference)
    key = set_classifier_key(tenant_id, params.dataset, image_size=params.image_size, channels=channels)
    cached = _SET_CLASSIFIERS.get((id(ctx.store), key))
    if cached is None:
        try:
            cached = load_set_classifier(_fetch(ctx, key, "the set's classifier"), channels=channels, names=classes)
        except (NotFound, ValueError) as exc:  # never stored (or unreadable): train it once, store it
            log.info("training the classifier of %s for class coverage (%s)", params.dataset, exc)
            cached = train_set_classifier(images, labels, len(classes), channels=channels)
            data = set_classifier_bytes(cached, channels=channels, names=classes)
            retry_storage(
                lambda: ctx.store.put(key, data),
                deadline_s=ctx.settings.storage_retry_deadline_s,
                what="the set's classifier",
            )
        if len(_SET_CLASSIFIERS) >= SET_CLASSIFIER_CACHE:
            _SET_CLASSIFIERS.pop(next(iter(_SET_CLASSIFIERS)))
        _SET_CLASSIFIERS[(id(ctx.store), key)] = cached
    return ClassJudge(cached, channels, classes, reference)


def run_style_transfer(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner) -> None:
    """style.transfer: fetch the images, then the Gatys optimisation."""
    params = StyleTransferParams.from_stored(claim.params)
    device = pick_device(ctx.settings.device)
    _check_style_memory(params, device, ctx.settings.device_memory_limit_bytes)
    content = _image(ctx, claim.tenant_id, params.content)
    styles = [_image(ctx, claim.tenant_id, ref) for ref in params.styles]
    with _style_job_errors(), too_large_on_oom(device, what=f"at {params.size} px", remedy=STYLE_REMEDY):
        style_transfer(
            params,
            content,
            styles,
            runner,
            device=device,
            weights_dir=ctx.settings.torch_home,
            allow_download=ctx.settings.allow_weight_download,
            weights_state=_weights_state(ctx, claim.tenant_id, params.weights),
        )


def _weights_state(ctx: WorkerContext, tenant_id: uuid.UUID, ref: str) -> dict[str, torch.Tensor] | None:
    """The VGG state dict of a weights upload; None for imagenet or random weights."""
    if not is_upload_ref(ref):
        return None
    _path, data = _upload_files(ctx, tenant_id, ref)[0]
    return load_state_dict_file(data)


@contextlib.contextmanager
def _style_job_errors() -> Iterator[None]:
    """A style engine's failures as the job's named errors."""
    try:
        yield
    except WeightsUnavailableError as exc:
        raise JobFailed(str(exc), code="weights_unavailable") from exc
    except DivergenceError as exc:
        raise JobFailed(str(exc), code="diverged") from exc
    except ValueError as exc:  # a checkpoint that doesn't fit these params
        raise JobFailed(str(exc), code="bad_input") from exc
    except pickle.UnpicklingError as exc:  # a checkpoint torch.load(weights_only=True) refuses to unpickle
        raise JobFailed(f"checkpoint could not be loaded: {exc}", code="bad_input") from exc


STYLE_TRAIN_REMEDY = "lower batch_size, size or width"


def _all_pictures(ctx: WorkerContext, tenant_id: uuid.UUID, ref: str) -> list[Image.Image]:
    """A built-in picture, or every picture of an image upload."""
    if not is_upload_ref(ref):
        return [load_builtin_image(ref)]
    pictures = []
    for path, data in _upload_files(ctx, tenant_id, ref):
        try:
            pictures.append(decode_image(data))
        except ValueError as exc:
            raise JobFailed(f"upload {ref}: {path} cannot be decoded: {exc}", code="bad_input") from exc
    return pictures


def _content_set(ctx: WorkerContext, tenant_id: uuid.UUID, ref: str) -> ContentSet:
    """The built-in content pictures, or every picture of an image upload."""
    if ref == CONTENT_BUILTIN:
        return builtin_content()
    pictures = _all_pictures(ctx, tenant_id, ref)
    try:
        return content_from_images(pictures)
    except ValueError as exc:
        raise JobFailed(f"upload {ref}: {exc}", code="bad_input") from exc


def run_style_train(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner) -> None:
    """style.train: the content set and style pictures, then the feed-forward network's training."""
    params = StyleTrainParams.from_stored(claim.params)
    device = pick_device(ctx.settings.device)
    _check_memory(
        style_train_memory_bytes(params),
        device,
        ctx.settings.device_memory_limit_bytes,
        what=f"params.batch_size: {params.batch_size} crops of {params.size} px",
        remedy=STYLE_TRAIN_REMEDY,
    )
    content = _content_set(ctx, claim.tenant_id, params.content)
    with _style_job_errors(), too_large_on_oom(device, what=f"at {params.size} px", remedy=STYLE_TRAIN_REMEDY):
        if params.method == "adain":  # a style set to crop from, as the content's: every picture of an upload
            style_set = [p for ref in params.styles for p in _all_pictures(ctx, claim.tenant_id, ref)]
            train_adain(
                params,
                content,
                content_from_images(style_set),
                runner,
                device=device,
                weights_dir=ctx.settings.torch_home,
                allow_download=ctx.settings.allow_weight_download,
                weights_state=_weights_state(ctx, claim.tenant_id, params.weights),
            )
            return
        train_johnson(
            params,
            content,
            [_image(ctx, claim.tenant_id, ref) for ref in params.styles],  # a blend of single pictures
            runner,
            device=device,
            weights_dir=ctx.settings.torch_home,
            allow_download=ctx.settings.allow_weight_download,
            weights_state=_weights_state(ctx, claim.tenant_id, params.weights),
        )


# The loaded style models of this worker process (one per store, as the classifiers).
_MODEL_CACHES: dict[int, ModelCache] = {}
ZIP_CONTENT_TYPE = "application/zip"
APPLY_WORKDIR_PREFIX = "atelier-apply-"


def _model_cache(ctx: WorkerContext) -> ModelCache:
    cache = _MODEL_CACHES.get(id(ctx.store))
    if cache is None:
        cache = _MODEL_CACHES[id(ctx.store)] = ModelCache(ctx.settings.style_model_cache_bytes)
    return cache


def _pictures(ctx: WorkerContext, tenant_id: uuid.UUID, refs: list[str]) -> list[tuple[str, Image.Image | str]]:
    """(name, picture) of each built-in, and (path, object key) of each picture of each upload, decoded later."""
    found: list[tuple[str, Image.Image | str]] = []
    for ref in refs:
        if not is_upload_ref(ref):
            found.append((ref, load_builtin_image(ref)))
            continue
        with transaction(ctx.sessions) as session:
            try:
                upload = queries.get_upload(session, tenant_id=tenant_id, upload_id=uuid.UUID(ref))
            except NotFound as exc:
                raise JobFailed(f"upload {ref} no longer exists", code="missing_input") from exc
            found += [(str(f["path"]), str(f["key"])) for f in upload.manifest]
    return found


def _apply_forward(
    ctx: WorkerContext, tenant_id: uuid.UUID, params: StyleApplyParams, net: torch.nn.Module, device: torch.device
) -> Forward:
    """Johnson's network as it is; AdaIN's with this job's style pictures (read once), blend and alpha."""
    if not isinstance(net, AdainModel):
        return net
    if not params.styles:
        raise JobFailed(f"params.styles: model {params.model} is an adain model: give style pictures", code="bad_input")
    styles = [to_tensor(_image(ctx, tenant_id, ref), params.size).to(device) for ref in params.styles]
    weights, alpha = params.blend(), params.alpha_or_default()
    return lambda content: stylize_adain(net, content, styles, weights=weights, alpha=alpha)


def run_style_apply(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner) -> None:
    """style.apply: the model (from this worker's cache when it has it), then one forward pass a picture."""
    params = StyleApplyParams.from_stored(claim.params)
    with transaction(ctx.sessions) as session:
        try:
            source = queries.get_job(session, tenant_id=claim.tenant_id, job_id=uuid.UUID(params.model))
            artifact = queries.get_artifact(session, job_id=source.id, name=MODEL_ARTIFACT)
        except NotFound as exc:
            raise JobFailed(f"model {params.model} no longer exists (deleted)", code="missing_input") from exc
        key, sha256, trained = artifact.key, artifact.sha256, StyleTrainParams.from_stored(source.params)
    device = pick_device(ctx.settings.device)
    _check_memory(
        style_apply_memory_bytes(trained, params.size, styles=len(params.styles or [])),
        device,
        ctx.settings.device_memory_limit_bytes,
        what=f"params.size: {params.size} px",
        remedy="lower size",
    )
    try:
        net = _model_cache(ctx).get(
            key=key, sha256=sha256, device=device, load=lambda: load_style_model(_fetch(ctx, key, "style model"))[1]
        )
    except ValueError as exc:  # load_model: not a style model file (never unpickled)
        raise JobFailed(f"model {params.model}: {exc}", code="bad_model") from exc
    forward = _apply_forward(ctx, claim.tenant_id, params, net, device)
    pictures = _pictures(ctx, claim.tenant_id, params.images)
    taken: set[str] = set()
    single: bytes | None = None
    # A batch's PNGs go straight into a zip on disk and the zip is uploaded from there: the worker holds one
    # picture at a time, whatever the batch's size.
    with tempfile.TemporaryDirectory(prefix=APPLY_WORKDIR_PREFIX) as workdir:
        batch = Path(workdir) / BATCH_OUTPUT
        with (
            zipfile.ZipFile(batch, "w", zipfile.ZIP_STORED) as archive,  # PNGs are compressed already
            too_large_on_oom(device, what=f"at {params.size} px", remedy="lower size"),
        ):
            for done, (name, picture) in enumerate(pictures, start=1):
                if isinstance(picture, str):
                    try:
                        picture = decode_image(_fetch(ctx, picture, f"picture {name}"))
                    except ValueError as exc:
                        raise JobFailed(f"{name} cannot be decoded: {exc}", code="bad_input") from exc
                png = style_picture(
                    forward,
                    picture,
                    device=device,
                    size=params.size,
                    strength=params.strength,
                    preserve_colors=params.preserve_colors,
                )
                if len(pictures) == 1:
                    single = png
                else:
                    archive.writestr(output_name(name, taken), png)
                runner.report_progress(done, len(pictures))
                reason = runner.should_stop()
                if reason is not None and done < len(pictures):
                    raise StopRequested(reason, done)
        if single is not None:
            runner.save_artifact(SINGLE_OUTPUT, single, kind=OUTPUT_KIND, content_type=PNG_CONTENT_TYPE)
        else:
            runner.save_artifact_file(BATCH_OUTPUT, batch, kind=OUTPUT_KIND, content_type=ZIP_CONTENT_TYPE)


def run_gan_sample(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner) -> None:
    """gan.sample: load the source job's generator, draw n images."""
    params = GanSampleParams.from_stored(claim.params)
    with transaction(ctx.sessions) as session:
        try:
            source = queries.get_job(session, tenant_id=claim.tenant_id, job_id=uuid.UUID(params.source_job))
            artifact = queries.get_artifact(session, job_id=source.id, name=GENERATOR_ARTIFACT)
        except NotFound as exc:
            raise JobFailed(f"source job {params.source_job} has no generator weights", code="missing_input") from exc
        key, trained = artifact.key, GanTrainParams.from_stored(source.params)
    device = pick_device(ctx.settings.device)
    _check_memory(
        gan_sample_memory_bytes(trained, params.n),
        device,
        ctx.settings.device_memory_limit_bytes,
        what=f"params.n: {params.n} images",
        remedy="lower n",
    )
    weights = _fetch(ctx, key, "generator weights")
    try:
        with too_large_on_oom(device, what=f"drawing {params.n} images", remedy="lower n"):
            grid, raw = gan_sample(weights, n=params.n, seed=params.seed, device=device)
    except ValueError as exc:
        raise JobFailed(f"source job {params.source_job}: {exc}", code="bad_input") from exc
    runner.save_artifact("samples.png", grid, kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)
    runner.save_artifact("samples.npy", raw, kind=OUTPUT_KIND, content_type=NPY_CONTENT_TYPE)
    runner.report_progress(params.n, params.n)


EXECUTORS: dict[str, Executor] = {
    "gan.train": run_gan_train,
    "style.transfer": run_style_transfer,
    "style.train": run_style_train,
    "style.apply": run_style_apply,
    "gan.sample": run_gan_sample,
}


def execute(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner) -> None:
    """Dispatch by job type."""
    executor: Callable[..., Any] | None = EXECUTORS.get(claim.job_type)
    if executor is None:
        raise JobFailed(f"this worker cannot run jobs of type {claim.job_type!r}", code="unknown_type")
    executor(ctx, claim, runner)
