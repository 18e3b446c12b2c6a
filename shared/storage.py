"""Object storage: an ``ObjectStore`` protocol, an S3 implementation on the minio SDK, and a
local-directory implementation.

Key layout: ``jobs/<id>/checkpoints/…``, ``jobs/<id>/samples/…``, ``jobs/<id>/outputs/…``,
``uploads/<tenant>/<id>/…``.

minio and urllib3 are imported by the S3 store when it is used, so the local store (and
``retry_storage``) work where they are not installed: the GPU check (bench/gpu_check.py) runs
on a bare Python with torch.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from shared.errors import NotFound, StorageUnavailable

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
S3_CONNECT_TIMEOUT_S = 3.0
S3_READ_TIMEOUT_S = 30.0
RETRY_FIRST_DELAY_S = 0.2
RETRY_MAX_DELAY_S = 5.0
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket"})

T = TypeVar("T")


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing shows it."""

    key: str
    size: int
    modified: datetime  # timezone-aware


class ObjectStore(Protocol):
    """What Atelier needs from a blob store."""

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key``, replacing any previous object."""

    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> None:
        """Store the file at ``path`` under ``key`` without reading it into memory whole."""

    def get(self, key: str) -> bytes:
        """The whole object; raises NotFound."""

    def stream(self, key: str) -> Iterator[bytes]:
        """The object in chunks; raises NotFound before the first chunk."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many."""

    def listing(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under ``prefix``: key, size and when it was last written (the orphan collector's view)."""

    def delete(self, key: str) -> None:
        """Delete one object (no error if it is already gone)."""

    def presigned_get(self, key: str, *, expires_s: int) -> str | None:
        """A short-lived GET URL, or None where the backend has none."""

    def ping(self) -> None:
        """Raise if the store is unreachable."""


def job_key(job_id: object, section: str, name: str) -> str:
    """Key of a job's object: section is checkpoints, samples or outputs."""
    return f"{job_prefix(job_id)}{section}/{name}"


def job_prefix(job_id: object) -> str:
    """The prefix under which every object of a job lives (checkpoints of every attempt, samples, outputs)."""
    return f"jobs/{job_id}/"


def upload_prefix(tenant_id: object, upload_id: object) -> str:
    """The prefix under which every file of an upload lives."""
    return f"uploads/{tenant_id}/{upload_id}/"


def prepared_prefix(tenant_id: object, upload_id: object) -> str:
    """The prefix of the decoded copies workers keep of an upload (workers/engines.py prepared_key)."""
    return f"prepared/{tenant_id}/{upload_id}/"


def upload_key(tenant_id: object, upload_id: object, path: str) -> str:
    """Key of one file of an upload."""
    return f"{upload_prefix(tenant_id, upload_id)}{path}"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


class LocalObjectStore:
    """Objects as files under a root directory; writes are atomic renames."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Write to a temp file, then rename over the target."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> None:
        """Copy to a temp file, then rename over the target."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        """Read the file."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"object {key} not found") from exc

    def stream(self, key: str) -> Iterator[bytes]:
        """Read the file in chunks."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"object {key} not found")

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk

        return chunks()

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        """Remove the directory (or file) at ``prefix``."""
        path = self._path(prefix.rstrip("/"))
        if path.is_file():
            path.unlink()
            return 1
        if not path.is_dir():
            return 0
        count = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return count

    def listing(self, prefix: str) -> Iterator[StoredObject]:
        """Every file under ``prefix`` (temp files of writes in flight excluded)."""
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        paths = [base] if base.is_file() else sorted(base.rglob("*")) if base.is_dir() else []
        for path in paths:
            if path.is_file() and not path.name.startswith(".tmp-"):
                stat = path.stat()
                key = path.relative_to(self.root).as_posix()
                yield StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, tz=UTC))

    def delete(self, key: str) -> None:
        """Remove the file, if it is there."""
        self._path(key).unlink(missing_ok=True)

    def presigned_get(self, key: str, *, expires_s: int) -> str | None:
        """Local files have no URL of their own; the API streams them."""
        return None

    def ping(self) -> None:
        """The root must be a writable directory."""
        if not (self.root.is_dir() and os.access(self.root, os.W_OK)):
            raise StorageUnavailable(f"storage directory {self.root} is not writable")


class S3ObjectStore:
    """Objects in an S3 bucket (MinIO in deployment) through the minio SDK."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
        read_timeout_s: float = S3_READ_TIMEOUT_S,
    ) -> None:
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=S3_CONNECT_TIMEOUT_S, read=read_timeout_s),
            retries=urllib3.Retry(total=1, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        )
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )
        self.bucket = bucket
        self._bucket_ready = False

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""
        from minio.error import S3Error

        if self._bucket_ready:
            return
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_ready = True

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Upload in one request (multipart above the SDK's part size)."""
        self.ensure_bucket()
        self.client.put_object(self.bucket, _check_key(key), io.BytesIO(data), len(data), content_type=content_type)

    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> None:
        """Upload from the file in parts (multipart above the SDK's part size): memory stays one part."""
        self.ensure_bucket()
        self.client.fput_object(self.bucket, _check_key(key), str(path), content_type=content_type)

    def get(self, key: str) -> bytes:
        """Download the whole object."""
        return b"".join(self.stream(key))

    def stream(self, key: str) -> Iterator[bytes]:
        """Open the object, then yield its body in chunks."""
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, _check_key(key))
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                raise NotFound(f"object {key} not found") from exc
            raise

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.stream(CHUNK_BYTES)
            finally:
                response.close()
                response.release_conn()

        return chunks()

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, _check_key(key))
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                return False
            raise
        return True

    def delete_prefix(self, prefix: str) -> int:
        """List and delete everything under ``prefix``; StorageUnavailable when the server can't be reached."""
        import urllib3
        from minio.error import S3Error

        try:
            names = [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]
            for name in names:
                if name is not None:
                    self.client.remove_object(self.bucket, name)
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store unreachable: {exc}") from exc
        return len(names)

    def listing(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under ``prefix``, page by page as the server lists them."""
        import urllib3
        from minio.error import S3Error

        try:
            for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if item.object_name is not None and item.last_modified is not None:
                    yield StoredObject(item.object_name, int(item.size or 0), item.last_modified)
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store unreachable: {exc}") from exc

    def delete(self, key: str) -> None:
        """Delete one object (S3 answers a missing key with success too)."""
        import urllib3
        from minio.error import S3Error

        try:
            self.client.remove_object(self.bucket, _check_key(key))
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store unreachable: {exc}") from exc

    def presigned_get(self, key: str, *, expires_s: int) -> str | None:
        """A presigned GET URL valid for ``expires_s`` seconds."""
        return self.client.presigned_get_object(self.bucket, _check_key(key), expires=timedelta(seconds=expires_s))

    def ping(self) -> None:
        """Check that the server answers and the bucket exists."""
        import urllib3
        from minio.error import S3Error

        try:
            if not self.client.bucket_exists(self.bucket):
                raise StorageUnavailable(f"bucket {self.bucket} does not exist")
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store unreachable: {exc}") from exc


def make_store(settings: Settings) -> ObjectStore:
    """The store the settings describe."""
    if settings.storage_backend == "s3":
        return S3ObjectStore(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            bucket=settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
            read_timeout_s=settings.s3_read_timeout_s,
        )
    return LocalObjectStore(settings.objects_dir)


def retry_storage(
    fn: Callable[[], T], *, deadline_s: float, what: str, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Call ``fn`` until it succeeds, backing off, for at most ``deadline_s``; then StorageUnavailable.

    NotFound and ValueError are answers, not outages: they propagate at once.
    """
    start = time.monotonic()
    delay = RETRY_FIRST_DELAY_S
    while True:
        try:
            return fn()
        except (NotFound, ValueError):
            raise
        except Exception as exc:
            elapsed = time.monotonic() - start
            if elapsed + delay > deadline_s:
                raise StorageUnavailable(f"{what} failed for {elapsed:.0f}s, giving up: {exc}") from exc
            log.warning("storage: %s failed (%s); retrying in %.1fs", what, exc, delay)
            sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_S)
