"""/v1/uploads: image sets (multipart images or a zip/tar archive) used as datasets or
content/style images."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.api.deps import SessionDep, SettingsDep, StateDep, StoreDep, TenantDep, check_page_limit
from services.api.schemas import ErrorOut, UploadDeletion, UploadOut, UploadPage
from services.api.unpackgate import UnpackGate
from shared.archives import file_size
from shared.config import Settings
from shared.db import queries
from shared.errors import Conflict, InvalidInput, PayloadTooLarge
from shared.jobs.specs import JOB_TYPES
from shared.queue import send_purge
from shared.storage import ObjectStore, upload_key
from shared.uploads import CheckedWeights, SentFile, UploadLimits, check_weights, is_weights_upload, unpack

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

MULTIPART_OVERHEAD_BYTES = 64 * 1024
DEFAULT_PAGE = 20
WEIGHTS_CONTENT_TYPE = "application/octet-stream"
WORKDIR_PREFIX = "atelier-upload-"
GATE_STATE = "upload_gate"  # the app.state attribute holding this process's UnpackGate
MAX_USERS_NAMED = 10  # jobs a 409 names before "and N more"

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    404: {"model": ErrorOut},
    413: {"model": ErrorOut, "description": "Too large: body, unpacked archive, file count or pixel count"},
    415: {"model": ErrorOut, "description": "Not an image, a zip/tar of images, or a torch.save weights file"},
    422: {"model": ErrorOut, "description": "Corrupt image or unsafe archive entry"},
    429: {"model": ErrorOut, "description": "Too many uploads being unpacked at once; retry after Retry-After"},
}


def _check_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"upload is {declared} bytes; the limit is {limit}", field="files")


def _received(files: list[UploadFile], limit: int) -> list[SentFile]:
    """The files as the multipart parser spooled them (never read into memory here), within ``limit`` in all."""
    sent = [SentFile(name=item.filename or "image", file=item.file) for item in files]
    if sum(file_size(s.file) for s in sent) > limit:
        raise PayloadTooLarge(f"upload is over the limit of {limit} bytes", field="files")
    return sent


async def get_gate(request: Request, settings: SettingsDep) -> UnpackGate:
    """This process's UnpackGate, made on first use (on the event loop, so only once)."""
    gate: UnpackGate | None = getattr(request.app.state, GATE_STATE, None)
    if gate is None:
        gate = UnpackGate(limit=settings.upload_unpack_concurrency, per_tenant=settings.upload_unpack_per_tenant)
        setattr(request.app.state, GATE_STATE, gate)
    return gate


GateDep = Annotated[UnpackGate, Depends(get_gate)]


def _limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_files=settings.max_upload_files,
        max_unpacked_bytes=settings.max_unpacked_bytes,
        max_compression_ratio=settings.max_compression_ratio,
        max_image_pixels=settings.max_image_pixels,
        memory_budget_bytes=settings.upload_memory_budget_bytes,
    )


def _unpack_and_store(
    sent: Sequence[SentFile], limits: UploadLimits, store: ObjectStore, *, tenant_id: uuid.UUID, upload_id: uuid.UUID
) -> tuple[list[dict[str, Any]], list[str]]:
    """Unpack into a private temp dir, check every image, store them one at a time; (manifest, classes)."""
    manifest: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX) as workdir:
        images, classes = unpack(sent, limits, workdir=Path(workdir))
        try:
            for image in images:
                key = upload_key(tenant_id, upload_id, image.path)
                store.put(key, image.read(), content_type=f"image/{image.format.lower()}")
                manifest.append(
                    {"path": image.path, "key": key, "width": image.width, "height": image.height, "bytes": image.size}
                )
        except Exception:
            store.delete_prefix(f"uploads/{tenant_id}/{upload_id}/")
            raise
    return manifest, classes


@router.post("", status_code=201, response_model=UploadOut, responses=ERRORS)
async def create_upload(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Images, or one zip/tar archive of (class folders of) images")],
    session: SessionDep,
    tenant_id: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    gate: GateDep,
) -> UploadOut:
    """Upload images (sub-folders in an archive become class labels), or one ``.pt``/``.pth``
    weights file written by ``torch.save`` (a VGG state_dict for style.transfer's ``weights``)."""
    _check_length(request, settings.max_upload_bytes)
    sent = await run_in_threadpool(_received, files, settings.max_upload_bytes)
    if not sent:
        raise InvalidInput("files: no file was sent", field="files")
    _check_storage(session, tenant_id, sum(file_size(s.file) for s in sent))  # before anything is stored
    limits = _limits(settings)
    upload_id = uuid.uuid4()
    with gate.slot(tenant_id):
        if is_weights_upload(sent):
            weights = await run_in_threadpool(check_weights, sent[0], limits)
            return await _store_weights(
                session, store, tenant_id=tenant_id, upload_id=upload_id, weights=weights, sent=sent[0]
            )
        manifest, classes = await run_in_threadpool(
            _unpack_and_store, sent, limits, store, tenant_id=tenant_id, upload_id=upload_id
        )
    filename = sent[0].name if len(sent) == 1 else f"{len(sent)} files"
    with _removed_on_failure(store, tenant_id, upload_id):
        _check_storage(session, tenant_id, sum(int(f["bytes"]) for f in manifest))  # unpacked: maybe more
        upload = queries.create_upload(
            session, upload_id=upload_id, tenant_id=tenant_id, filename=filename, manifest=manifest, classes=classes
        )
        session.commit()
    return UploadOut.of(upload)


def _check_storage(session: Session, tenant_id: uuid.UUID, adding: int) -> None:
    """A tenant with a storage quota: a 413 saying what to delete if ``adding`` bytes would pass it."""
    if queries.storage_quota(session, tenant_id=tenant_id) is None:
        return
    use = queries.stored(session, tenant_id=tenant_id)
    if use.over(adding):
        raise PayloadTooLarge(f"storage quota: {use.advice(adding)}", field="files")


@contextlib.contextmanager
def _removed_on_failure(store: ObjectStore, tenant_id: uuid.UUID, upload_id: uuid.UUID) -> Iterator[None]:
    """Delete the upload's stored files if recording it fails, so nothing unreferenced is left."""
    try:
        yield
    except BaseException:
        store.delete_prefix(f"uploads/{tenant_id}/{upload_id}/")
        raise


async def _store_weights(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: uuid.UUID,
    upload_id: uuid.UUID,
    weights: CheckedWeights,
    sent: SentFile,
) -> UploadOut:
    key = upload_key(tenant_id, upload_id, weights.path)

    def put() -> None:
        sent.file.seek(0)
        # The store takes bytes: the file (at most max_upload_bytes) is in memory once, here.
        store.put(key, sent.file.read(), content_type=WEIGHTS_CONTENT_TYPE)

    await run_in_threadpool(put)
    manifest = [{"path": weights.path, "key": key, "width": 0, "height": 0, "bytes": weights.size}]
    with _removed_on_failure(store, tenant_id, upload_id):
        upload = queries.create_upload(
            session,
            upload_id=upload_id,
            tenant_id=tenant_id,
            filename=weights.path,
            manifest=manifest,
            classes=[],
            kind="weights",
        )
        session.commit()
    return UploadOut.of(upload)


@router.get("", response_model=UploadPage, responses=ERRORS)
def list_uploads(
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1)] = DEFAULT_PAGE,
    cursor: str | None = None,
) -> UploadPage:
    """The caller's uploads, newest first."""
    check_page_limit(limit, settings)
    page = queries.list_uploads(session, tenant_id=tenant_id, limit=limit, cursor=cursor)
    return UploadPage(items=[UploadOut.of(u) for u in page.items], next_cursor=page.next_cursor)


@router.delete(
    "/{upload_id}",
    status_code=202,
    response_model=UploadDeletion,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def delete_upload(upload_id: uuid.UUID, state: StateDep, session: SessionDep, tenant_id: TenantDep) -> UploadDeletion:
    """Delete an upload and every file of it. 409, naming them, while queued or running jobs use it (cancel or
    delete those first); jobs that used it and ended keep their outputs. 202 at once, after which it is a 404
    everywhere; its files go in the background (DELETE again is a 202 until then, then a 404)."""
    upload = queries.lock_upload(session, tenant_id=tenant_id, upload_id=upload_id)
    if upload.deleted_at is None:
        users = _jobs_using(session, tenant_id, str(upload_id))
        if users:
            shown = ", ".join(str(j) for j in users[:MAX_USERS_NAMED])
            more = f" and {len(users) - MAX_USERS_NAMED} more" if len(users) > MAX_USERS_NAMED else ""
            raise Conflict(
                f"upload {upload_id} is used by {len(users)} queued or running job(s): {shown}{more}; "
                "cancel or delete them first",
                field="upload_id",
            )
    queries.mark_upload_deleted(session, upload=upload)
    session.commit()
    try:
        send_purge(state.celery)
    except Exception as exc:  # Redis away: the reconciler's pass purges it
        log.warning("upload %s: could not ask for its purge now (%s); the reconciler will", upload_id, exc)
    return UploadDeletion(id=upload_id, detail="its files are being removed")


def _jobs_using(session: Session, tenant_id: uuid.UUID, upload_id: str) -> list[uuid.UUID]:
    """The tenant's queued and running jobs whose params name the upload (each job type declares what it names)."""
    users = []
    for job_id, job_type, raw in queries.active_jobs(session, tenant_id=tenant_id):
        spec = JOB_TYPES.get(job_type)
        if spec is None:
            continue
        try:
            params = spec.params.from_stored(raw)
        except ValidationError:  # stored by another version: look for the id anywhere in its params
            if upload_id in json.dumps(raw):
                users.append(job_id)
            continue
        if any(ref.job_type is None and _same_id(ref.ref, upload_id) for ref in spec.references(params)):
            users.append(job_id)
    return users


def _same_id(ref: str, upload_id: str) -> bool:
    try:
        return str(uuid.UUID(ref)) == upload_id
    except ValueError:  # a built-in dataset or picture name
        return False


@router.get("/{upload_id}", response_model=UploadOut, responses=ERRORS)
def get_upload(upload_id: uuid.UUID, session: SessionDep, tenant_id: TenantDep) -> UploadOut:
    """One upload and its first files."""
    return UploadOut.of(queries.get_upload(session, tenant_id=tenant_id, upload_id=upload_id))
