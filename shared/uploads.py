"""Checking user uploads before anything is stored: real images, pixel limits
(decompression bombs), safe archive entries (no traversal, no links), entry counts and
unpacked sizes (zip bombs). Archives are unpacked as a stream to files in a private
directory (shared/archives.py), so an upload's memory stays within its budget. No torch."""

from __future__ import annotations

import posixpath
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from shared.archives import (
    ZIP_ENTRY_ERRORS,
    ZIP_MAGIC,
    Spool,
    UnpackBudget,
    Unpacked,
    check_zip_directory,
    copy_entry,
    file_size,
    unpack_archive,
)
from shared.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia
from shared.names import check_name

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
JUNK_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db"})
MAX_PATH_CHARS = 300
MAX_PATH_DEPTH = 8
# The most bytes a file can take per pixel it holds: 16-bit RGBA stored uncompressed (TIFF, PNG).
MAX_FILE_BYTES_PER_PIXEL = 8
IMAGE_METADATA_BYTES = 16 * 1024 * 1024  # headers, palettes, ICC profiles and EXIF beside the pixels
DECODED_BYTES_PER_PIXEL = 4  # PIL holds every mode it decodes in at most 4 bytes a pixel
STORE_COPIES = 2  # a file being stored is in memory twice: its bytes and the S3 SDK's request body


@dataclass(frozen=True)
class UploadLimits:
    """Limits applied to one upload request."""

    max_files: int
    max_unpacked_bytes: int
    max_compression_ratio: float
    max_image_pixels: int
    memory_budget_bytes: int

    @property
    def max_entry_bytes(self) -> int:
        """The largest one file may be: what an image within the pixel limit takes, and what the budget can store."""
        by_pixels = self.max_image_pixels * MAX_FILE_BYTES_PER_PIXEL + IMAGE_METADATA_BYTES
        return min(by_pixels, self.memory_budget_bytes // STORE_COPIES)

    def budget(self) -> UnpackBudget:
        """A fresh count of what one upload unpacks, against these limits."""
        return UnpackBudget(
            max_files=self.max_files,
            max_unpacked_bytes=self.max_unpacked_bytes,
            max_compression_ratio=self.max_compression_ratio,
        )


@dataclass(frozen=True)
class SentFile:
    """One file of a multipart upload, as received (spooled by the multipart parser)."""

    name: str
    file: BinaryIO


@dataclass(frozen=True)
class CheckedImage:
    """One image that passed every check; its bytes wait on disk until they are stored."""

    path: str
    source: Path
    size: int
    width: int
    height: int
    format: str
    mode: str

    def read(self) -> bytes:
        """The file's bytes (at most UploadLimits.max_entry_bytes)."""
        return self.source.read_bytes()


def check_image(path: str, source: Path, *, max_pixels: int, max_decoded_bytes: int) -> CheckedImage:
    """Decode fully; refuse non-images, unsupported formats, truncation and pixel bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                fmt = img.format or ""
                width, height = img.size
                if fmt not in ALLOWED_FORMATS:
                    raise UnsupportedMedia(f"{path}: {fmt or 'unknown'} images are not supported", field="files")
                if width * height > max_pixels:
                    raise PayloadTooLarge(
                        f"{path}: {width}x{height} is {width * height} pixels; the limit is {max_pixels}", field="files"
                    )
                decoded = width * height * DECODED_BYTES_PER_PIXEL
                if decoded > max_decoded_bytes:
                    raise PayloadTooLarge(
                        f"{path}: {width}x{height} takes {decoded} bytes decoded; the upload memory budget is "
                        f"{max_decoded_bytes}",
                        field="files",
                    )
                img.load()
                mode = img.mode
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise UnsupportedMedia(f"{path}: not an image", field="files") from exc
        raise PayloadTooLarge(f"{path}: image dimensions are too large", field="files") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{path}: corrupt or truncated image ({exc})", field="files") from exc
    size = source.stat().st_size
    return CheckedImage(path=path, source=source, size=size, width=width, height=height, format=fmt, mode=mode)


def safe_entry_name(name: str) -> str | None:
    """Normalised relative path of an archive entry; None for junk; InvalidInput for unsafe names."""
    if "\x00" in name or "\\" in name:
        raise InvalidInput(f"archive entry {name!r} has an unsafe name", field="files")
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise InvalidInput(f"archive entry {name!r} is an absolute path", field="files")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInput(f"archive entry {name!r} escapes the archive (../)", field="files")
    if not parts or any(p in JUNK_PARTS or p.startswith(".") for p in parts):
        return None
    clean = posixpath.join(*parts)
    if len(clean) > MAX_PATH_CHARS or len(parts) > MAX_PATH_DEPTH:
        raise InvalidInput(f"archive entry {name[:80]!r}… path is too long or deep", field="files")
    return check_name(clean, field="files", what="archive entry")  # control characters, bytes per name


def _strip_common_root(paths: list[str]) -> list[str]:
    split = [p.split("/") for p in paths]
    while all(len(s) > 1 for s in split) and len({s[0] for s in split}) == 1:
        split = [s[1:] for s in split]
    return ["/".join(s) for s in split]


def _copy_plain(sent: SentFile, spool: Spool, budget: UnpackBudget, limits: UploadLimits) -> Unpacked:
    """A file sent as it is (not an archive), copied to the spool and counted."""
    name = safe_entry_name(PurePosixPath(sent.name or "image").name) or "image"
    size = file_size(sent.file)
    if size > limits.max_entry_bytes:
        raise PayloadTooLarge(
            f"{name}: over {limits.max_entry_bytes} bytes, the most one image may take", field="files"
        )
    dest = spool.new_path()
    written = copy_entry(name, sent.file.read, dest, limit=limits.max_entry_bytes, count=budget.add)
    return Unpacked(name, dest, written)


def unpack(files: Sequence[SentFile], limits: UploadLimits, *, workdir: Path) -> tuple[list[CheckedImage], list[str]]:
    """Expand archives into ``workdir`` and check every image; returns the images and their class names.

    Classes are the first folder of each path when every image sits in one.
    """
    budget = limits.budget()
    spool = Spool(workdir)
    entries: list[Unpacked] = []
    for sent in files:
        unpacked = unpack_archive(
            sent.file,
            display=PurePosixPath(sent.name or "archive").name,
            budget=budget,
            entry_name=safe_entry_name,
            max_entry_bytes=limits.max_entry_bytes,
            spool=spool,
        )
        if unpacked is None:
            budget.add_files()
            unpacked = [_copy_plain(sent, spool, budget, limits)]
        entries.extend(unpacked)
    if not entries:
        raise InvalidInput("the upload holds no images", field="files")
    paths = _strip_common_root([e.name for e in entries])
    if len(set(paths)) != len(paths):
        raise InvalidInput("the upload holds two files with the same path", field="files")
    images = [
        check_image(p, e.path, max_pixels=limits.max_image_pixels, max_decoded_bytes=limits.memory_budget_bytes)
        for p, e in zip(paths, entries, strict=True)
    ]
    nested = [p.split("/") for p in paths]
    classes = sorted({parts[0] for parts in nested}) if all(len(parts) > 1 for parts in nested) else []
    return images, classes


WEIGHTS_SUFFIXES = frozenset({".pt", ".pth"})
TORCH_PICKLE_ENTRY = "data.pkl"
TORCH_LEGACY_HINT = (
    "save it with torch.save(state_dict, path), whose default (zip) format Atelier reads "
    "with torch.load(weights_only=True)"
)


@dataclass(frozen=True)
class CheckedWeights:
    """A torch zip-format file that passed the structural checks (it is not unpickled here)."""

    path: str
    size: int
    entries: int


def is_weights_upload(files: Sequence[SentFile]) -> bool:
    """One file named *.pt or *.pth: a weights upload rather than images."""
    return len(files) == 1 and PurePosixPath(files[0].name or "").suffix.lower() in WEIGHTS_SUFFIXES


def check_weights(sent: SentFile, limits: UploadLimits) -> CheckedWeights:
    """Check a torch.save file's container without unpickling it.

    torch.save's format is a zip with ``<archive>/data.pkl`` (the pickled structure) and
    ``<archive>/data/<n>`` (raw tensor storages), stored uncompressed. Anything else (the
    legacy bare-pickle format, an HTML page named .pt, a zip bomb) is refused here; the
    pickle itself is only ever read by the worker with ``torch.load(weights_only=True)``.
    """
    path = safe_entry_name(PurePosixPath(sent.name).name) or "weights.pt"
    size = file_size(sent.file)
    if not sent.file.read(len(ZIP_MAGIC)).startswith(ZIP_MAGIC):
        raise UnsupportedMedia(f"{path}: not a torch.save zip file; {TORCH_LEGACY_HINT}", field="files")
    check_zip_directory(sent.file, size, budget=limits.budget())
    try:
        with zipfile.ZipFile(sent.file) as archive:
            infos = archive.infolist()
    except ZIP_ENTRY_ERRORS as exc:
        raise UnsupportedMedia(f"{path}: not a readable torch.save zip file ({exc})", field="files") from exc
    if len(infos) > limits.max_files:
        raise PayloadTooLarge(f"{path}: {len(infos)} entries; the limit is {limits.max_files}", field="files")
    unpacked = sum(info.file_size for info in infos)
    if unpacked > limits.max_unpacked_bytes:
        raise PayloadTooLarge(
            f"{path}: unpacks to {unpacked} bytes; the limit is {limits.max_unpacked_bytes}", field="files"
        )
    roots = {info.filename.split("/", 1)[0] for info in infos}
    pickles = [info for info in infos if info.filename.endswith("/" + TORCH_PICKLE_ENTRY)]
    if len(roots) != 1 or len(pickles) != 1 or pickles[0].filename.count("/") != 1:
        raise UnsupportedMedia(
            f"{path}: a zip, but not torch.save's layout (one folder with {TORCH_PICKLE_ENTRY}); {TORCH_LEGACY_HINT}",
            field="files",
        )
    sent.file.seek(0)
    return CheckedWeights(path=path, size=size, entries=len(infos))
