"""Uploads and downloads: a folder zipped on the fly keeps its class sub-folders (and the API's own
unpacker agrees); downloads land in sub-folders, are checked, and never escape their folder."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import zipfile
from pathlib import Path

import httpx
import pytest
from atelier_client import AsyncAtelier, Atelier, AtelierError, DownloadError
from atelier_client.downloads import artifact_path
from atelier_client.uploads import iter_zip, plan_folder
from PIL import Image

from shared.uploads import SentFile, UploadLimits, unpack
from tests.unit.client.conftest import JOB_ID, FakeAPI

MIB = 1024 * 1024


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def file_parts(request: httpx.Request, body: bytes) -> list[tuple[str, bytes]]:
    """(filename, bytes) of each file in a multipart body."""
    boundary = request.headers["Content-Type"].split("boundary=")[1].encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _sep, data = chunk.partition(b"\r\n\r\n")
        name = head.split(b'filename="')[1].split(b'"')[0].decode()
        parts.append((name, data.removesuffix(b"\r\n")))
    return parts


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two classes of images, plus files that are not part of the set."""
    root = tmp_path / "pets"
    for name, color in [("cats/1.png", (255, 0, 0)), ("cats/2.png", (0, 255, 0)), ("dogs/3.png", (0, 0, 255))]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(color))
    (root / ".DS_Store").write_bytes(b"junk")
    (root / ".cache").mkdir()
    (root / ".cache" / "4.png").write_bytes(png((1, 1, 1)))
    (root / "notes.txt").write_text("not an image")
    return root


def test_upload_folder_streams_a_zip_that_keeps_the_class_sub_folders(
    atelier: Atelier, api: FakeAPI, dataset: Path
) -> None:
    # Given a folder of class sub-folders, and an API that records the upload
    api.on(
        "POST", "/v1/uploads", httpx.Response(201, json={"id": "up-1", "file_count": 3, "classes": ["cats", "dogs"]})
    )
    # When it is uploaded
    upload = atelier.upload_folder(dataset)
    # Then one zip was sent under the `files` field, streamed (chunked, no length known in advance)
    request, body = api.requests[0], api.bodies[0]
    assert request.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in request.headers
    assert b'name="files"' in body
    [(filename, data)] = file_parts(request, body)
    assert filename == "pets.zip"
    # holding the images at their paths under the folder, and nothing else
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["cats/1.png", "cats/2.png", "dogs/3.png"]
        assert archive.read("dogs/3.png") == (dataset / "dogs/3.png").read_bytes()
        assert all(info.flag_bits & 0x08 for info in archive.infolist())  # sizes after the data: written as a stream
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())  # PNGs are not deflated
    assert upload.id == "up-1" and upload.classes == ["cats", "dogs"]


def test_the_apis_unpacker_reads_the_streamed_zip_and_finds_the_classes(dataset: Path, tmp_path: Path) -> None:
    # Given the zip as the client streams it
    plan = plan_folder(dataset)
    data = b"".join(iter_zip(plan.entries))
    limits = UploadLimits(
        max_files=100,
        max_unpacked_bytes=MIB,
        max_compression_ratio=100,
        max_image_pixels=10_000,
        memory_budget_bytes=MIB,
    )
    # When the API's own unpacker reads it
    workdir = tmp_path / "work"
    workdir.mkdir()
    images, classes = unpack([SentFile(name="pets.zip", file=io.BytesIO(data))], limits, workdir=workdir)
    # Then it sees the three images in two classes
    assert sorted(i.path for i in images) == ["cats/1.png", "cats/2.png", "dogs/3.png"]
    assert classes == ["cats", "dogs"]
    assert plan.skipped == ["notes.txt"]


def test_a_large_file_is_zipped_in_chunks_not_whole(tmp_path: Path) -> None:
    # Given a 2 MiB file that does not compress
    big = tmp_path / "big.bmp"
    big.write_bytes(random.Random(0).randbytes(2 * MIB))
    chunk = 64 * 1024
    # When it is zipped
    chunks = list(iter_zip([(big, "big.bmp")], chunk_bytes=chunk))
    # Then it came out as many small pieces, and they make a valid zip
    assert len(chunks) > 16
    assert max(len(c) for c in chunks) <= 2 * chunk
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert archive.read("big.bmp") == big.read_bytes()


def test_an_empty_folder_is_refused_before_sending(atelier: Atelier, api: FakeAPI, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("x")
    with pytest.raises(AtelierError) as raised:
        atelier.upload_folder(tmp_path / "docs")
    assert raised.value.code == "no_images" and api.requests == []


# --- downloads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../escape.png",
        "samples/../../escape.png",
        "/etc/passwd",
        "a//b.png",
        "./a.png",
        "C:evil.png",
        "a\\b.png",
        "",
        "dir/",
        "x\x00y",
    ],
)
def test_artifact_names_that_escape_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DownloadError) as raised:
        artifact_path(tmp_path / "out", name)
    assert raised.value.code == "unsafe_name"


def test_a_symlink_inside_the_folder_cannot_lead_out(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "out" / "samples").symlink_to(tmp_path / "outside")
    with pytest.raises(DownloadError):
        artifact_path(tmp_path / "out", "samples/grid.png")
    assert artifact_path(tmp_path / "out", "plots/losses.png") == (tmp_path / "out" / "plots" / "losses.png").resolve()


def _artifact(name: str, data: bytes, *, sha256: str | None = None) -> dict[str, object]:
    return {"name": name, "kind": "sample", "size": len(data), "sha256": sha256 or hashlib.sha256(data).hexdigest()}


def test_download_artifacts_fills_sub_folders_and_skips_what_is_already_there(
    atelier: Atelier, api: FakeAPI, tmp_path: Path
) -> None:
    files = {"samples/step-1.png": png((9, 9, 9)), "generator.pt": b"weights" * 100}
    api.on(
        "GET",
        f"/v1/jobs/{JOB_ID}/artifacts",
        httpx.Response(200, json={"items": [_artifact(n, d) for n, d in files.items()]}),
    )
    for name, data in files.items():
        api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts/{name}", lambda _r, data=data: httpx.Response(200, content=data))
    out = tmp_path / "out"
    paths = atelier.download_artifacts(JOB_ID, out)
    assert sorted(p.relative_to(out.resolve()).as_posix() for p in paths) == sorted(files)
    assert (out / "samples" / "step-1.png").read_bytes() == files["samples/step-1.png"]
    fetched = len(api.requests)
    # When it runs again, Then nothing is fetched but the listing
    atelier.download_artifacts(JOB_ID, out)
    assert len(api.requests) == fetched + 1
    assert not list(out.rglob("*.part"))


def test_one_unsafe_name_stops_the_download_before_anything_is_written(
    atelier: Atelier, api: FakeAPI, tmp_path: Path
) -> None:
    items = [_artifact("good.png", b"ok"), _artifact("../../etc/cron.d/evil", b"pwn")]
    api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts", httpx.Response(200, json={"items": items}))
    api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts/good.png", httpx.Response(200, content=b"ok"))
    with pytest.raises(DownloadError, match="escapes"):
        atelier.download_artifacts(JOB_ID, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert len(api.requests) == 1


def test_a_corrupted_download_is_refused_and_leaves_no_file(atelier: Atelier, api: FakeAPI, tmp_path: Path) -> None:
    items = [_artifact("output.png", b"the real bytes", sha256=hashlib.sha256(b"other bytes").hexdigest())]
    api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts", httpx.Response(200, json={"items": items}))
    api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts/output.png", httpx.Response(200, content=b"the real bytes"))
    with pytest.raises(DownloadError) as raised:
        atelier.download_artifacts(JOB_ID, tmp_path)
    assert raised.value.code == "checksum_mismatch"
    assert list(tmp_path.iterdir()) == []


def test_download_one_artifact_checks_the_etag(atelier: Atelier, api: FakeAPI, tmp_path: Path) -> None:
    data = png((5, 6, 7))
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts/output.png", httpx.Response(200, content=data, headers={"ETag": etag}))
    target = atelier.download(JOB_ID, "output.png", tmp_path / "styled.png")
    assert target.read_bytes() == data
    api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts/output.png", httpx.Response(200, content=b"x", headers={"ETag": etag}))
    with pytest.raises(DownloadError):
        atelier.download(JOB_ID, "output.png", tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_the_async_client_uploads_a_folder_and_downloads_artifacts_the_same_way(
    async_atelier: AsyncAtelier, api: FakeAPI, dataset: Path, tmp_path: Path
) -> None:
    api.on("POST", "/v1/uploads", httpx.Response(201, json={"id": "up-2", "classes": ["cats", "dogs"]}))
    grid = png((3, 3, 3))
    api.on(
        "GET", f"/v1/jobs/{JOB_ID}/artifacts", httpx.Response(200, json={"items": [_artifact("samples/g.png", grid)]})
    )
    api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts/samples/g.png", httpx.Response(200, content=grid))

    async def run() -> tuple[str, list[Path]]:
        async with async_atelier:
            upload = await async_atelier.upload_folder(dataset)
            return upload.id, await async_atelier.download_artifacts(JOB_ID, tmp_path / "out")

    upload_id, paths = asyncio.run(run())
    [(_name, data)] = file_parts(api.requests[0], api.bodies[0])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["cats/1.png", "cats/2.png", "dogs/3.png"]
    assert upload_id == "up-2"
    assert [p.read_bytes() for p in paths] == [grid]
