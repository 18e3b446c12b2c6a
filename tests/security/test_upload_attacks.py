"""Upload attacks: each gets a 4xx naming the problem, stores nothing, and leaves the server up.

(An HTML file named .png, a truncated JPEG sent alone, ../ and absolute entry names and a
really large PNG are covered in tests/integration/test_api.py; here are the rest.)
Each test reads Given / When / Then."""

from __future__ import annotations

import gzip
import io
import select
import socket
import struct
import tarfile
import zipfile
import zlib

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.config import Settings
from shared.storage import S3ObjectStore
from tests.conftest import Caller
from tests.security.conftest import live_server
from tests.support.images import jpeg, png, zip_of

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZIP_BOMB_ZEROS = 20 * 1024 * 1024  # compresses ~1000x
LYING_DECLARED_SIZE = 100
CHUNK_BYTES = 1024 * 1024
SOCKET_TIMEOUT_S = 10.0
READ_BYTES = 65536


# --- payloads -----------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims ``width`` x ``height`` RGB pixels (never allocated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def tar_with(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    """A gzipped tar of prepared members (links, odd types); regular ones get ``data``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in members:
            payload = (data or {}).get(info.name)
            if payload is not None:
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
            else:
                archive.addfile(info)
    return buffer.getvalue()


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    """A tar symlink or hard link entry."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def regular(name: str) -> tarfile.TarInfo:
    """A regular tar entry (its data comes from tar_with)."""
    return tarfile.TarInfo(name)


def zip_symlink() -> bytes:
    """A zip whose entry carries the Unix symlink mode bits."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.png", png())
        info = zipfile.ZipInfo("passwd.png")
        info.create_system = 3  # Unix
        info.external_attr = (0o120777 << 16) | 0
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def zip_bomb() -> bytes:
    """One entry of zeros that expands ~1000x."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("zeros.png", b"\0" * ZIP_BOMB_ZEROS)
    return buffer.getvalue()


def zip_lying_about_size() -> bytes:
    """A zip bomb whose headers declare a tiny size, to slip past a declared-size check."""
    blob = bytearray(zip_bomb())
    declared = struct.pack("<I", LYING_DECLARED_SIZE)
    local = blob.find(b"PK\x03\x04")
    blob[local + 22 : local + 26] = declared  # local header: uncompressed size
    central = blob.find(b"PK\x01\x02")
    blob[central + 24 : central + 28] = declared  # central directory: uncompressed size
    return bytes(blob)


def zip_overlapping(copies: int) -> bytes:
    """A non-recursive zip bomb: many central-directory entries share one compressed body."""
    body = zip_bomb()
    local = body.find(b"PK\x03\x04")
    central = body.find(b"PK\x01\x02")
    end = body.find(b"PK\x05\x06")
    record = body[central:end]
    name_len = struct.unpack("<H", record[28:30])[0]
    records = []
    for i in range(copies):
        name = f"z{i:04d}.png".encode()
        rec = bytearray(record[:46]) + name + record[46 + name_len :]
        rec[28:30] = struct.pack("<H", len(name))
        rec[42:46] = struct.pack("<I", local)
        records.append(bytes(rec))
    directory = b"".join(records)
    eocd = bytearray(body[end : end + 22])
    eocd[8:10] = eocd[10:12] = struct.pack("<H", copies)
    eocd[12:16] = struct.pack("<I", len(directory))
    eocd[16:20] = struct.pack("<I", central)
    return body[:central] + directory + bytes(eocd)


def tar_of_zeros(size: int) -> bytes:
    """A gzipped tar of one zero-filled member (about 1000x smaller gzipped)."""
    return tar_with([regular("big.png")], {"big.png": b"\0" * size})


def tar_declaring(size: int) -> bytes:
    """A gzipped tar whose one member header declares ``size`` bytes (the data is not there)."""
    info = regular("big.png")
    info.size = size
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as handle:
        handle.write(info.tobuf(format=tarfile.GNU_FORMAT))
    return buffer.getvalue()


def many_tiny_files(count: int) -> bytes:
    """A zip of ``count`` one-byte entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(f"f{i}.png", b"x")
    return buffer.getvalue()


class CreatesAFile:
    """A pickle whose loading would create a marker file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


# --- the checks ---------------------------------------------------------------------------


def stored_upload_objects(store: S3ObjectStore, caller: Caller) -> list[str]:
    """Every object under the caller's uploads prefix."""
    prefix = f"uploads/{caller.tenant_id}/"
    return [o.object_name or "" for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)]


def send(client: TestClient, caller: Caller, files: list[tuple[str, bytes]]):  # type: ignore[no-untyped-def]
    return client.post("/v1/uploads", files=[("files", (n, d)) for n, d in files], headers=caller.headers)


def assert_refused_and_nothing_left(
    client: TestClient, store: S3ObjectStore, caller: Caller, response, status: int, needle: str
) -> None:  # type: ignore[no-untyped-def]
    """4xx naming the problem; no object and no upload row; the server still takes a good upload."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"], error
    assert error["field"] == "files"
    assert stored_upload_objects(store, caller) == []
    assert client.get("/v1/uploads", headers=caller.headers).json()["items"] == []
    assert client.get("/healthz").status_code == 200
    good = send(client, caller, [("fine.png", png())])
    assert good.status_code == 201, good.text


@pytest.mark.parametrize(
    ("name", "payload", "status", "needle"),
    [
        pytest.param("bomb.zip", zip_bomb, 413, "(zip bomb?)", id="zip-bomb-ratio"),
        pytest.param("liar.zip", zip_lying_about_size, 422, "zeros.png", id="zip-bomb-lying-headers"),
        pytest.param(
            "overlap.zip", lambda: zip_overlapping(200), 413, "unpacks to more than", id="zip-bomb-overlapping"
        ),
        pytest.param("many.zip", None, 413, "more than", id="thousands-of-tiny-files"),
        pytest.param("big.tgz", None, 413, "unpacks to more than", id="tar-declares-huge-member"),
        pytest.param(
            "sym.tgz",
            lambda: tar_with([regular("a.png"), link("b.png", "/etc/passwd", tarfile.SYMTYPE)], {"a.png": png()}),
            422,
            "'b.png' is a link",
            id="tar-symlink",
        ),
        pytest.param(
            "hard.tgz",
            lambda: tar_with([regular("a.png"), link("b.png", "../../etc/passwd", tarfile.LNKTYPE)], {"a.png": png()}),
            422,
            "'b.png' is a link",
            id="tar-hardlink",
        ),
        pytest.param(
            "dots.tgz",
            lambda: tar_with(
                [regular("a.png"), regular("x/../../../tmp/evil.png")],
                {"a.png": png(), "x/../../../tmp/evil.png": png()},
            ),
            422,
            "escapes the archive",
            id="tar-dotdot",
        ),
        pytest.param(
            "dev.tgz",
            lambda: tar_with([regular("a.png"), link("null.png", "", tarfile.CHRTYPE)], {"a.png": png()}),
            422,
            "not a regular file",
            id="tar-device",
        ),
        pytest.param("sym.zip", zip_symlink, 422, "symbolic link", id="zip-symlink"),
        pytest.param(
            "wide.png", lambda: png_declaring(100_000, 100_000), 413, "too large", id="png-ihdr-10-gigapixels"
        ),
        pytest.param("tall.png", lambda: png_declaring(8_000, 8_000), 413, "the limit is", id="png-ihdr-64-megapixels"),
        pytest.param(
            "mixed.zip",
            lambda: zip_of({"a.png": png(), "b.jpg": jpeg(), "c.jpg": jpeg()[:300]}),
            422,
            "c.jpg: corrupt or truncated",
            id="truncated-jpeg-among-good-ones",
        ),
        pytest.param(
            "mixed2.zip",
            lambda: zip_of({"a.png": png(), "page.png": b"<!doctype html><script>alert(1)</script>"}),
            415,
            "page.png: not an image",
            id="html-named-png-among-good-ones",
        ),
        pytest.param("generator.pt", None, 415, "not a torch.save zip file", id="pickle-posing-as-weights"),
    ],
)
def test_upload_attack_is_refused_and_leaves_nothing(
    client: TestClient,
    alice: Caller,
    store: S3ObjectStore,
    settings: Settings,
    tmp_path,  # type: ignore[no-untyped-def]
    name: str,
    payload,  # type: ignore[no-untyped-def]
    status: int,
    needle: str,
) -> None:
    # Given the attack payload
    if name == "many.zip":
        data = many_tiny_files(settings.max_upload_files + 1)
    elif name == "big.tgz":
        data = tar_declaring(settings.max_unpacked_bytes + 1)
    elif name == "generator.pt":
        import pickle

        marker = tmp_path / "pwned"
        data = pickle.dumps({"state_dict": CreatesAFile(str(marker))})
    else:
        data = payload()
    assert len(data) < settings.max_upload_bytes  # the body limit is not what stops it
    # When alice uploads it
    response = send(client, alice, [(name, data)])
    # Then it is refused, naming the problem, and nothing is left behind
    assert_refused_and_nothing_left(client, store, alice, response, status, needle)
    if name == "generator.pt":
        assert not marker.exists()


def test_real_tar_bomb_over_the_unpacked_limit(settings: Settings, alice: Caller, store: S3ObjectStore) -> None:
    # Given an app allowing 16 MiB unpacked, and a 20 KB tar.gz that unpacks to 17 MiB
    small = settings.model_copy(update={"max_unpacked_bytes": 16 * 1024 * 1024})
    bomb = tar_of_zeros(17 * 1024 * 1024)
    assert len(bomb) < 100_000
    with TestClient(create_app(small)) as limited:
        # When alice uploads it
        response = send(limited, alice, [("bomb.tgz", bomb)])
        # Then it is refused before it is unpacked, and nothing is left
        assert_refused_and_nothing_left(limited, store, alice, response, 413, "unpacks to more than 16777216 bytes")


def test_too_many_files_in_one_multipart_request(settings: Settings, alice: Caller, store: S3ObjectStore) -> None:
    # Given an app allowing 300 files per upload
    small = settings.model_copy(update={"max_upload_files": 300})
    with TestClient(create_app(small)) as limited:
        # When alice sends 301 tiny files as separate parts (no archive)
        response = send(limited, alice, [(f"f{i}.png", b"x") for i in range(301)])
        # Then the count is refused, not each file's content, and nothing is left
        assert_refused_and_nothing_left(limited, store, alice, response, 413, "more than 300 files")


def test_an_endless_chunked_upload_is_cut_off_at_the_limit(
    settings: Settings, alice: Caller, store: S3ObjectStore, client: TestClient
) -> None:
    # Given the API on a real server, and a multipart upload streamed with no Content-Length
    chunk = b"\0" * CHUNK_BYTES
    boundary = "AtelierBoundary"
    part_head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'.encode()
    sent = 0
    with live_server(settings) as (host, port), socket.create_connection((host, port)) as sock:
        sock.sendall(
            f"POST /v1/uploads HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {alice.key}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + b"%x\r\n%s\r\n" % (len(part_head), part_head)
        )
        # When alice streams four times the limit, stopping when the server answers or hangs up
        try:
            while sent < 4 * settings.max_upload_bytes and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(SOCKET_TIMEOUT_S)
        status_line = sock.recv(READ_BYTES).split(b"\r\n", 1)[0]
    # Then it is refused with a 413 once the limit is passed, not after the whole body was taken in
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert sent < 2 * settings.max_upload_bytes, f"the server read {sent} bytes before refusing"
    assert stored_upload_objects(store, alice) == []
    assert client.get("/healthz").status_code == 200


def test_a_huge_json_body_is_413_before_it_is_parsed(client: TestClient, alice: Caller, settings: Settings) -> None:
    # When a job is submitted with a body over the JSON limit, declared or streamed
    huge = b'{"type": "gan.train", "params": {"x": "' + b"a" * settings.max_request_bytes + b'"}}'
    declared = client.post("/v1/jobs", content=huge, headers={**alice.headers, "Content-Type": "application/json"})
    streamed = client.post(
        "/v1/jobs",
        content=iter([huge[:1000], huge[1000:]]),
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    # Then both are 413 naming the body, and no job was made
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"] == {
            "code": "payload_too_large",
            "message": f"request body is over the limit of {settings.max_request_bytes} bytes",
            "field": "body",
        }
    assert client.get("/v1/jobs", headers=alice.headers).json()["items"] == []
