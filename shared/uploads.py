"""Checking user uploads before anything is stored: real images, pixel limits
(decompression bombs), safe archive entries (no traversal, no links), entry counts and
unpacked sizes (zip bombs). Pure functions over bytes; no torch, no I/O."""

from __future__ import annotations

import io
import lzma
import posixpath
import stat
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from shared.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
JUNK_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db"})
MAX_PATH_CHARS = 300
MAX_PATH_DEPTH = 8
ZIP_MAGIC = b"PK\x03\x04"
ZIP_EMPTY_MAGIC = b"PK\x05\x06"
# What reading a hostile zip can raise: bad CRCs or lengths, broken deflate/bzip2/lzma streams
# (zlib.error, OSError, EOFError, lzma.LZMAError is an Exception of its own), encrypted entries
# (RuntimeError) and unknown compression methods (NotImplementedError).
ZIP_ENTRY_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)


@dataclass(frozen=True)
class UploadLimits:
    """Limits applied to one upload request."""

    max_files: int
    max_unpacked_bytes: int
    max_compression_ratio: float
    max_image_pixels: int


@dataclass(frozen=True)
class CheckedImage:
    """One image that passed every check."""

    path: str
    data: bytes
    width: int
    height: int
    format: str
    mode: str


def check_image(path: str, data: bytes, *, max_pixels: int) -> CheckedImage:
    """Decode fully; refuse non-images, unsupported formats, truncation and pixel bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
                if fmt not in ALLOWED_FORMATS:
                    raise UnsupportedMedia(f"{path}: {fmt or 'unknown'} images are not supported", field="files")
                if width * height > max_pixels:
                    raise PayloadTooLarge(
                        f"{path}: {width}x{height} is {width * height} pixels; the limit is {max_pixels}", field="files"
                    )
                img.load()
                mode = img.mode
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise UnsupportedMedia(f"{path}: not an image", field="files") from exc
        raise PayloadTooLarge(f"{path}: image dimensions are too large", field="files") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{path}: corrupt or truncated image ({exc})", field="files") from exc
    return CheckedImage(path=path, data=data, width=width, height=height, format=fmt, mode=mode)


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
    return clean


def _budget(total: int, count: int, limits: UploadLimits) -> None:
    if count > limits.max_files:
        raise PayloadTooLarge(f"the upload holds more than {limits.max_files} files", field="files")
    if total > limits.max_unpacked_bytes:
        raise PayloadTooLarge(f"the upload unpacks to more than {limits.max_unpacked_bytes} bytes", field="files")


def _read_zip(data: bytes, limits: UploadLimits) -> list[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ENTRY_ERRORS as exc:
        raise InvalidInput(f"corrupt zip archive: {exc}", field="files") from exc
    out: list[tuple[str, bytes]] = []
    total = 0
    with archive:
        infos = archive.infolist()
        _budget(0, len(infos), limits)
        declared = sum(i.file_size for i in infos)
        _budget(declared, len(infos), limits)
        if declared > limits.max_compression_ratio * max(len(data), 1):
            raise PayloadTooLarge(
                f"archive expands {declared / max(len(data), 1):.0f}x; the limit is {limits.max_compression_ratio:.0f}x"
                " (zip bomb?)",
                field="files",
            )
        for info in infos:
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InvalidInput(f"archive entry {info.filename!r} is a symbolic link", field="files")
            name = safe_entry_name(info.filename)
            if name is None:
                continue
            try:
                with archive.open(info) as handle:
                    # Never trust the declared size: read at most one byte past the budget.
                    blob = handle.read(limits.max_unpacked_bytes - total + 1)
            except ZIP_ENTRY_ERRORS as exc:
                # A CRC or length mismatch (headers that lie), a broken stream, encryption, an
                # unsupported compression method.
                raise InvalidInput(f"archive entry {info.filename!r} cannot be read: {exc}", field="files") from exc
            total += len(blob)
            _budget(total, len(out) + 1, limits)
            out.append((name, blob))
    return out


def _read_tar(data: bytes, limits: UploadLimits) -> list[tuple[str, bytes]]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"corrupt tar archive: {exc}", field="files") from exc
    out: list[tuple[str, bytes]] = []
    total = 0
    count = 0
    with archive:
        try:
            for member in archive:
                count += 1
                _budget(total, count, limits)
                if member.isdir():
                    continue
                if member.issym() or member.islnk():
                    raise InvalidInput(f"archive entry {member.name!r} is a link", field="files")
                if not member.isfile():
                    raise InvalidInput(f"archive entry {member.name!r} is not a regular file", field="files")
                name = safe_entry_name(member.name)
                if name is None:
                    continue
                total += member.size
                _budget(total, count, limits)
                handle = archive.extractfile(member)
                if handle is None:  # pragma: no cover - regular files always have a handle
                    continue
                out.append((name, handle.read(member.size + 1)[: member.size]))
        except (tarfile.TarError, EOFError, zipfile.BadZipFile) as exc:
            raise InvalidInput(f"corrupt tar archive: {exc}", field="files") from exc
    return out


def is_archive(data: bytes) -> str | None:
    """'zip', 'tar' or None, by content (never by file name)."""
    if data.startswith((ZIP_MAGIC, ZIP_EMPTY_MAGIC)):
        return "zip"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            archive.next()
        return "tar"
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile):
        return None


def _strip_common_root(paths: list[str]) -> list[str]:
    split = [p.split("/") for p in paths]
    while all(len(s) > 1 for s in split) and len({s[0] for s in split}) == 1:
        split = [s[1:] for s in split]
    return ["/".join(s) for s in split]


def unpack(files: list[tuple[str, bytes]], limits: UploadLimits) -> tuple[list[CheckedImage], list[str]]:
    """Expand archives, check every image; returns the images and their class names.

    Classes are the first folder of each path when every image sits in one.
    """
    entries: list[tuple[str, bytes]] = []
    for name, data in files:
        kind = is_archive(data)
        if kind == "zip":
            entries.extend(_read_zip(data, limits))
        elif kind == "tar":
            entries.extend(_read_tar(data, limits))
        else:
            clean = safe_entry_name(PurePosixPath(name or "image").name)
            entries.append((clean or "image", data))
        _budget(sum(len(d) for _n, d in entries), len(entries), limits)
    if not entries:
        raise InvalidInput("the upload holds no images", field="files")
    paths = _strip_common_root([n for n, _d in entries])
    if len(set(paths)) != len(paths):
        raise InvalidInput("the upload holds two files with the same path", field="files")
    images = [check_image(p, d, max_pixels=limits.max_image_pixels) for p, (_n, d) in zip(paths, entries, strict=True)]
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
    data: bytes
    entries: int


def is_weights_upload(files: list[tuple[str, bytes]]) -> bool:
    """One file named *.pt or *.pth: a weights upload rather than images."""
    return len(files) == 1 and PurePosixPath(files[0][0] or "").suffix.lower() in WEIGHTS_SUFFIXES


def check_weights(name: str, data: bytes, limits: UploadLimits) -> CheckedWeights:
    """Check a torch.save file's container without unpickling it.

    torch.save's format is a zip with ``<archive>/data.pkl`` (the pickled structure) and
    ``<archive>/data/<n>`` (raw tensor storages), stored uncompressed. Anything else (the
    legacy bare-pickle format, an HTML page named .pt, a zip bomb) is refused here; the
    pickle itself is only ever read by the worker with ``torch.load(weights_only=True)``.
    """
    path = safe_entry_name(PurePosixPath(name).name) or "weights.pt"
    if not data.startswith(ZIP_MAGIC):
        raise UnsupportedMedia(f"{path}: not a torch.save zip file; {TORCH_LEGACY_HINT}", field="files")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
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
    return CheckedWeights(path=path, data=data, entries=len(infos))
