"""Small image and archive payloads made in-process for upload tests."""

from __future__ import annotations

import io
import tarfile
import zipfile

from PIL import Image


def png(width: int = 16, height: int = 16, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(width: int = 32, height: int = 32) -> bytes:
    """A gradient JPEG."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    """A zip archive of the given path → bytes entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_of(entries: dict[str, bytes]) -> bytes:
    """A gzipped tar of the given path → bytes entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
