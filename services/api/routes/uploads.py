"""/v1/uploads: image sets (multipart images or a zip/tar archive) used as datasets or
content/style images."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from services.api.schemas import ErrorOut, UploadOut, UploadPage
from shared.db import queries
from shared.errors import InvalidInput, PayloadTooLarge
from shared.storage import ObjectStore, upload_key
from shared.uploads import CheckedWeights, UploadLimits, check_weights, is_weights_upload, unpack

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

MULTIPART_OVERHEAD_BYTES = 64 * 1024
READ_CHUNK = 1024 * 1024
DEFAULT_PAGE = 20
WEIGHTS_CONTENT_TYPE = "application/octet-stream"

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    404: {"model": ErrorOut},
    413: {"model": ErrorOut, "description": "Too large: body, unpacked archive, file count or pixel count"},
    415: {"model": ErrorOut, "description": "Not an image, a zip/tar of images, or a torch.save weights file"},
    422: {"model": ErrorOut, "description": "Corrupt image or unsafe archive entry"},
}


def _check_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"upload is {declared} bytes; the limit is {limit}", field="files")


async def _read_all(files: list[UploadFile], limit: int) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    total = 0
    for item in files:
        parts = []
        while chunk := await item.read(READ_CHUNK):
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"upload is over the limit of {limit} bytes", field="files")
            parts.append(chunk)
        out.append((item.filename or "image", b"".join(parts)))
    return out


@router.post("", status_code=201, response_model=UploadOut, responses=ERRORS)
async def create_upload(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Images, or one zip/tar archive of (class folders of) images")],
    session: SessionDep,
    tenant_id: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
) -> UploadOut:
    """Upload images (sub-folders in an archive become class labels), or one ``.pt``/``.pth``
    weights file written by ``torch.save`` (a VGG state_dict for style.transfer's ``weights``)."""
    _check_length(request, settings.max_upload_bytes)
    raw = await _read_all(files, settings.max_upload_bytes)
    if not raw:
        raise InvalidInput("files: no file was sent", field="files")
    limits = UploadLimits(
        max_files=settings.max_upload_files,
        max_unpacked_bytes=settings.max_unpacked_bytes,
        max_compression_ratio=settings.max_compression_ratio,
        max_image_pixels=settings.max_image_pixels,
    )
    upload_id = uuid.uuid4()
    if is_weights_upload(raw):
        weights = check_weights(raw[0][0], raw[0][1], limits)
        return await _store_weights(session, store, tenant_id=tenant_id, upload_id=upload_id, weights=weights)
    images, classes = await run_in_threadpool(unpack, raw, limits)
    manifest: list[dict[str, Any]] = []

    def store_all() -> None:
        try:
            for image in images:
                key = upload_key(tenant_id, upload_id, image.path)
                store.put(key, image.data, content_type=f"image/{image.format.lower()}")
                manifest.append(
                    {
                        "path": image.path,
                        "key": key,
                        "width": image.width,
                        "height": image.height,
                        "bytes": len(image.data),
                    }
                )
        except Exception:
            store.delete_prefix(f"uploads/{tenant_id}/{upload_id}/")
            raise

    await run_in_threadpool(store_all)
    filename = raw[0][0] if len(raw) == 1 else f"{len(raw)} files"
    with _removed_on_failure(store, tenant_id, upload_id):
        upload = queries.create_upload(
            session, upload_id=upload_id, tenant_id=tenant_id, filename=filename, manifest=manifest, classes=classes
        )
        session.commit()
    return UploadOut.of(upload)


@contextlib.contextmanager
def _removed_on_failure(store: ObjectStore, tenant_id: uuid.UUID, upload_id: uuid.UUID) -> Iterator[None]:
    """Delete the upload's stored files if recording it fails, so nothing unreferenced is left."""
    try:
        yield
    except BaseException:
        store.delete_prefix(f"uploads/{tenant_id}/{upload_id}/")
        raise


async def _store_weights(
    session: Session, store: ObjectStore, *, tenant_id: uuid.UUID, upload_id: uuid.UUID, weights: CheckedWeights
) -> UploadOut:
    key = upload_key(tenant_id, upload_id, weights.path)
    await run_in_threadpool(store.put, key, weights.data, content_type=WEIGHTS_CONTENT_TYPE)
    manifest = [{"path": weights.path, "key": key, "width": 0, "height": 0, "bytes": len(weights.data)}]
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
    if limit > settings.page_size_max:
        raise InvalidInput(f"limit: at most {settings.page_size_max}", field="limit")
    page = queries.list_uploads(session, tenant_id=tenant_id, limit=limit, cursor=cursor)
    return UploadPage(items=[UploadOut.of(u) for u in page.items], next_cursor=page.next_cursor)


@router.get("/{upload_id}", response_model=UploadOut, responses=ERRORS)
def get_upload(upload_id: uuid.UUID, session: SessionDep, tenant_id: TenantDep) -> UploadOut:
    """One upload and its first files."""
    return UploadOut.of(queries.get_upload(session, tenant_id=tenant_id, upload_id=upload_id))
