"""Saving artifacts safely: a name maps to a path inside the target folder or is refused, and a
file is streamed to a temporary name, checked against its size and SHA-256, then moved into place."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from types import TracebackType

from atelier_client.errors import DownloadError

HASH_CHUNK_BYTES = 1024 * 1024
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
FORBIDDEN_CHARS = ("\x00", "\\")
DRIVE = re.compile(r"[A-Za-z]:")  # C:foo means a drive on Windows


def artifact_path(root: Path, name: str) -> Path:
    """Where artifact ``name`` goes under ``root`` (``a/b.png`` → ``root/a/b.png``); refuses names that escape it."""
    if not name or any(c in name for c in FORBIDDEN_CHARS) or name.startswith("/") or DRIVE.match(name):
        raise DownloadError(f"artifact name {name!r} is not a safe relative path", code="unsafe_name")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise DownloadError(f"artifact name {name!r} escapes the download folder", code="unsafe_name")
    base = root.resolve()
    target = base.joinpath(*parts)
    # A symlink already inside the folder could still lead out of it.
    if not target.resolve().is_relative_to(base):
        raise DownloadError(f"artifact name {name!r} leads outside {root}", code="unsafe_name")
    return target


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def is_current(path: Path, *, size: int, sha256: str) -> bool:
    """Whether ``path`` already holds exactly these bytes (so a repeated download can skip it)."""
    if not SHA256_HEX.fullmatch(sha256) or not path.is_file() or path.stat().st_size != size:
        return False
    return sha256_of(path) == sha256


def etag_sha256(etag: str | None) -> str | None:
    """The SHA-256 an artifact's ETag carries (the API sends ``"<sha256>"``), if it is one."""
    if etag is None:
        return None
    value = etag.removeprefix("W/").strip('"')
    return value if SHA256_HEX.fullmatch(value) else None


class ArtifactWriter:
    """Writes a download to a temporary file beside ``path``; on success checks it and renames it into place."""

    def __init__(self, path: Path, *, size: int | None = None, sha256: str | None = None) -> None:
        self.path = path
        self.size = size
        self.sha256 = sha256 if sha256 and SHA256_HEX.fullmatch(sha256) else None
        self.written = 0
        self._digest = hashlib.sha256()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Append a chunk."""
        self._file.write(chunk)
        self._digest.update(chunk)
        self.written += len(chunk)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.close()
        if exc_type is not None:
            self._temp.unlink(missing_ok=True)
            return
        try:
            self._verify()
        except DownloadError:
            self._temp.unlink(missing_ok=True)
            raise
        os.replace(self._temp, self.path)

    def _verify(self) -> None:
        if self.size is not None and self.written != self.size:
            raise DownloadError(
                f"{self.path.name}: got {self.written} bytes, expected {self.size}", code="incomplete_download"
            )
        if self.sha256 is not None and self._digest.hexdigest() != self.sha256:
            raise DownloadError(f"{self.path.name}: SHA-256 does not match the server's", code="checksum_mismatch")
