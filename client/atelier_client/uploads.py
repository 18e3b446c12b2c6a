"""Building upload bodies: a folder zipped on the fly (class sub-folders kept as archive paths,
hidden files and non-images left out), streamed in chunks as it is written, never whole in
memory; and the multipart body around it or around plain files."""

from __future__ import annotations

import io
import mimetypes
import os
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from atelier_client.errors import AtelierError

CHUNK_BYTES = 256 * 1024
FORM_FIELD = "files"
ZIP_CONTENT_TYPE = "application/zip"
OCTET_STREAM = "application/octet-stream"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"})
# Already compressed: stored as they are (deflating them again costs CPU and saves nothing).
COMPRESSED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
PICTURES_ZIP = "pictures.zip"  # files and folders sent together as one upload


@dataclass(frozen=True)
class FolderPlan:
    """What zipping a folder takes: (file, archive path) pairs in a stable order, and what was left out."""

    root: Path
    entries: list[tuple[Path, str]]
    skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """The bytes of the files to send (before zipping)."""
        return sum(path.stat().st_size for path, _name in self.entries)


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in JUNK_NAMES


def plan_folder(root: Path) -> FolderPlan:
    """The images under ``root`` with their paths relative to it (``cats/1.png``); hidden files and others are skipped."""
    if not root.is_dir():
        raise AtelierError(f"{root} is not a folder", code="not_a_folder")
    entries: list[tuple[Path, str]] = []
    skipped: list[str] = []
    for folder, dirs, files in os.walk(root):  # symlinked folders are not followed
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in sorted(files):
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if _hidden(name):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                skipped.append(relative)
                continue
            entries.append((path, relative))
    if not entries:
        raise AtelierError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})", code="no_images")
    return FolderPlan(root=root, entries=entries, skipped=skipped)


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream that collects what zipfile writes until it is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


def iter_zip(entries: Sequence[tuple[Path, str]], *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A zip of ``entries`` as a stream of chunks, written as it is read (sizes go in data descriptors)."""
    sink = _Sink()
    # zipfile writes to an unseekable stream without seeking back: each entry's sizes follow its data.
    with zipfile.ZipFile(cast(IO[bytes], sink), mode="w", allowZip64=True) as archive:
        for source, name in entries:
            info = zipfile.ZipInfo.from_file(source, name, strict_timestamps=False)
            compressed = source.suffix.lower() in COMPRESSED_SUFFIXES
            info.compress_type = zipfile.ZIP_STORED if compressed else zipfile.ZIP_DEFLATED
            with source.open("rb") as src, archive.open(info, mode="w") as dest:
                while chunk := src.read(chunk_bytes):
                    dest.write(chunk)
                    if len(sink.buffer) >= chunk_bytes:
                        yield sink.take()
            if sink.buffer:
                yield sink.take()
    yield sink.take()  # the central directory, written on close


def iter_file(path: Path, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A file's bytes in chunks."""
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            yield chunk


@dataclass(frozen=True)
class Part:
    """One file of a multipart body: its name, type, and a fresh stream of its bytes on each call."""

    filename: str
    content_type: str
    chunks: Callable[[], Iterator[bytes]]


def file_part(path: Path) -> Part:
    """A file on disk as a multipart part."""
    if not path.is_file():
        raise AtelierError(f"{path} is not a file", code="not_a_file")
    guessed = mimetypes.guess_type(path.name)[0]
    return Part(path.name, guessed or OCTET_STREAM, lambda: iter_file(path))


def folder_part(plan: FolderPlan) -> Part:
    """A planned folder as one zip part, named after the folder."""
    name = (plan.root.resolve().name or "upload") + ".zip"
    return Part(name, ZIP_CONTENT_TYPE, lambda: iter_zip(plan.entries))


def _unique(names: Sequence[str]) -> None:
    """Refuse names that two pictures would share inside one upload."""
    shared = sorted(name for name, count in Counter(names).items() if count > 1)
    if shared:
        raise AtelierError(f"two pictures would both be named {shared[0]} in the upload", code="duplicate_name")


def picture_parts(paths: Sequence[Path]) -> list[Part]:
    """Local pictures as the parts of ONE upload: files as they are, one folder zipped, or files and folders zipped together."""
    if not paths:
        raise AtelierError("no local pictures to upload", code="no_images")
    if not any(path.is_dir() for path in paths):
        parts = [file_part(path) for path in paths]
        _unique([part.filename for part in parts])
        return parts
    if len(paths) == 1:
        return [folder_part(plan_folder(paths[0]))]
    entries: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            prefix = path.resolve().name
            entries += [(source, f"{prefix}/{name}") for source, name in plan_folder(path).entries]
        elif path.is_file():
            entries.append((path, path.name))
        else:
            raise AtelierError(f"{path} is not a file", code="not_a_file")
    _unique([name for _source, name in entries])
    return [Part(PICTURES_ZIP, ZIP_CONTENT_TYPE, lambda: iter_zip(entries))]


def _quoted(filename: str) -> str:
    # As browsers do: the name stays readable, and cannot break out of its quotes or its line.
    return "".join("%22" if c == '"' else "%5C" if c == "\\" else "" if c in "\r\n" else c for c in filename)


def multipart(parts: Sequence[Part], *, field_name: str = FORM_FIELD) -> tuple[str, Callable[[], Iterator[bytes]]]:
    """The Content-Type and a body factory for ``parts``, each sent under ``field_name``."""
    boundary = f"atelier-{uuid.uuid4().hex}"

    def body() -> Iterator[bytes]:
        for part in parts:
            head = (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{field_name}"; filename="{_quoted(part.filename)}"\r\n'
                f"Content-Type: {part.content_type}\r\n\r\n"
            )
            yield head.encode()
            yield from part.chunks()
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", body
