"""Archive bombs against the API in a process of its own (uvicorn), so its memory can be read
from /proc: each bomb is refused with a 4xx naming the field while the API's peak RSS stays
within ATELIER_UPLOAD_MEMORY_BUDGET_BYTES plus a margin, and ten bombs at once leave it answering
polls while the ones over the unpack limits get 429. (The bombs: tests/support/bombs.py.)

Before the streaming unpacker the same bombs took the API from about 170 MB to 2.2 GB each
(docs/reliability.md, "Hostile input"). Each test reads Given / When / Then.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import statistics
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.storage import S3ObjectStore
from tests.conftest import Caller, make_caller
from tests.support import services
from tests.support.bombs import (
    MIB,
    deflated_zeros,
    noise_png,
    stored,
    tar_of_zeros,
    tar_pax_bomb,
    zip_archive,
    zip_directory_bomb,
)
from tests.support.images import jpeg, png, tar_of, zip_of

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
BUDGET = 64 * MIB  # small enough that one bomb read whole (1,000 MiB) is far over it
RSS_MARGIN = 48 * MIB  # the multipart parser's in-memory spool, allocator slack, response objects
CONCURRENCY = 4
PER_TENANT = 2
WAVE = 10
SERVER_READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 120.0
WAVE_TIMEOUT_S = 180.0
RSS_SAMPLE_S = 0.002
POLL_INTERVAL_S = 0.05
HELD_BYTES = 64  # each wave request holds back its body's last bytes until all are ready
NOISE_SIDE = (1000, 1100)  # a 3.3 MB random PNG: keeps a zip of zeros within the ratio limit
PAGE = 4096


@pytest.fixture(scope="module")
def settings_overrides() -> dict[str, object]:
    """A small memory budget, and room for CONCURRENCY unpacks (PER_TENANT per tenant)."""
    return {
        "upload_memory_budget_bytes": BUDGET,
        "upload_unpack_concurrency": CONCURRENCY,
        "upload_unpack_per_tenant": PER_TENANT,
    }


# --- the bombs (built once, as a stream: tests/support/bombs.py) ---------------------------


@functools.cache
def ratio_legal_zip(entries: int, entry_mib: int) -> bytes:
    """A random PNG, then ``entries`` entries of zeros: about 3.8 MB, within the 200x ratio."""
    noise = stored("noise.png", noise_png(*NOISE_SIDE))
    return zip_archive([noise] + [deflated_zeros(f"z{i:02d}.png", entry_mib * MIB) for i in range(entries)])


def many_members(kind: str) -> Callable[[], bytes]:
    """125 zero members of 8 MiB: each within the one-image limit, together 1,000 MiB."""
    return lambda: tar_of_zeros([(f"z{i:03d}.png", 8 * MIB) for i in range(125)], kind)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Bomb:
    """A hostile upload and the refusal it should get."""

    name: str
    build: Callable[[], bytes]
    status: int
    needle: str


BOMBS = [
    Bomb("big.tar.xz", lambda: tar_of_zeros([("big.png", 1000 * MIB)], "xz"), 413, "big.png: over"),
    Bomb("big.tar.gz", lambda: tar_of_zeros([("big.png", 1000 * MIB)], "gz"), 413, "big.png: over"),
    Bomb(
        "liar.zip",
        lambda: zip_archive([deflated_zeros("zeros.png", 1000 * MIB, declared=100)]),
        422,
        "'zeros.png' cannot be read: Bad CRC-32",
    ),
    Bomb("legal.zip", lambda: ratio_legal_zip(10, 50), 413, "z00.png: over"),
    Bomb("many.tar.xz", many_members("xz"), 413, "(zip bomb?)"),
    Bomb("many.tar.gz", many_members("gz"), 413, "(zip bomb?)"),
    Bomb("many.tar.bz2", many_members("bz2"), 413, "(zip bomb?)"),
    Bomb("pax.tar.xz", lambda: tar_pax_bomb(1000 * MIB, "xz"), 413, "a tar header of 1048576000 bytes"),
    Bomb("directory.zip", lambda: zip_directory_bomb(90_000), 413, "more than 10000 files"),
    # Within every limit (500 MB unpacked in 25 MiB entries): unpacked to disk, then refused as content.
    Bomb("allowed.zip", lambda: ratio_legal_zip(20, 25), 415, "z00.png: not an image"),
]
BOMB_IDS = [
    "tar.xz-one-1000MiB-zero-member",
    "tar.gz-one-1000MiB-zero-member",
    "zip-declaring-100B-inflating-1000MiB",
    "zip-ratio-legal-500MB-in-50MiB-entries",
    "tar.xz-125-members-of-8MiB",
    "tar.gz-125-members-of-8MiB",
    "tar.bz2-125-members-of-8MiB",
    "tar.xz-pax-header-of-1000MiB",
    "zip-directory-of-90000-entries",
    "zip-within-every-limit-500MB-in-25MiB-entries",
]


# --- the API in a process of its own, and its memory ----------------------------------------


@dataclass(frozen=True)
class LiveApi:
    """The API on uvicorn in its own process."""

    base_url: str
    pid: int
    proc: services.Proc


@pytest.fixture(scope="module")
def api(settings: Settings, log_dir: Path, sessions: sessionmaker[Session]) -> Iterator[LiveApi]:
    """uvicorn serving the app from ATELIER_* settings, warmed up with one good upload per format."""
    port = services.free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "services.api.app:create_app", "--factory", "--host", HOST,
        "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = services.Proc(name="api", argv=argv, env=services.settings_env(settings), log_path=log_dir / "api.log")
    proc.start()
    assert proc.proc is not None
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while True:
            assert proc.proc.poll() is None, proc.log()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"the API did not start:\n{proc.log()[-3000:]}"
            time.sleep(0.1)
        # Imports and caches that the first upload of each kind loads are not an upload's memory.
        warm = make_caller(sessions)
        for name, data in [("a.png", png()), ("b.zip", zip_of({"b.png": png()})), ("c.tgz", tar_of({"c.png": png()}))]:
            assert upload(base, warm, name, data).status_code == 201, proc.log()[-3000:]
        yield LiveApi(base, proc.proc.pid, proc)
    finally:
        proc.stop()


def status_kib(pid: int, key: str) -> int:
    """One ``VmXxx`` line of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


@dataclass
class PeakRss:
    """A process's resident set during a block: its baseline, and its peak from VmHWM (reset at the
    start through clear_refs) and from VmRSS sampled every RSS_SAMPLE_S in a thread."""

    pid: int
    baseline: int = 0
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS") * 1024)

    @contextlib.contextmanager
    def during(self) -> Iterator[PeakRss]:
        """Measure while the block runs."""
        hwm_reset = True
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            hwm_reset = False
        self.baseline = self.peak = status_kib(self.pid, "VmRSS") * 1024
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            self._stop.set()
            sampler.join(5)
            if hwm_reset:
                self.peak = max(self.peak, status_kib(self.pid, "VmHWM") * 1024)

    @property
    def growth(self) -> int:
        """Peak over baseline, in bytes."""
        return self.peak - self.baseline


# --- requests -------------------------------------------------------------------------------


def upload(base: str, caller: Caller, name: str, data: bytes) -> httpx.Response:
    """POST /v1/uploads with one file."""
    return httpx.post(
        f"{base}/v1/uploads", files=[("files", (name, data))], headers=caller.headers, timeout=REQUEST_TIMEOUT_S
    )


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """One file as a multipart/form-data body, and its content type."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Wave:
    """What a wave of simultaneous uploads got, and when (monotonic seconds)."""

    responses: list[httpx.Response]
    released: float
    finished: float


def send_wave(base: str, callers: list[Caller], name: str, data: bytes) -> Wave:
    """One upload per caller, all bodies sent but their last bytes, then those released at once."""
    body, content_type = multipart(name, data)
    barrier = threading.Barrier(len(callers) + 1, timeout=WAVE_TIMEOUT_S)
    responses: list[httpx.Response | None] = [None] * len(callers)

    def parts() -> Iterator[bytes]:
        yield body[:-HELD_BYTES]
        barrier.wait()
        yield body[-HELD_BYTES:]

    def send(index: int, caller: Caller) -> None:
        headers = {**caller.headers, "Content-Type": content_type}
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            responses[index] = client.post(f"{base}/v1/uploads", content=parts(), headers=headers)

    threads = [threading.Thread(target=send, args=(i, c), daemon=True) for i, c in enumerate(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    released = time.monotonic()
    for thread in threads:
        thread.join(max(0.0, released + WAVE_TIMEOUT_S - time.monotonic()))
    finished = time.monotonic()
    assert all(r is not None for r in responses), "a wave request did not finish in time"
    return Wave([r for r in responses if r is not None], released, finished)


@dataclass
class Poller:
    """A tenant polling GET /v1/uploads every POLL_INTERVAL_S in a thread: (sent at, latency, status)."""

    base: str
    caller: Caller
    polls: list[tuple[float, float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.caller.headers, timeout=REQUEST_TIMEOUT_S) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                status = client.get("/v1/uploads").status_code
                self.polls.append((sent, time.monotonic() - sent, status))
                self._stop.wait(POLL_INTERVAL_S)

    @contextlib.contextmanager
    def polling(self) -> Iterator[Poller]:
        """Poll while the block runs."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(REQUEST_TIMEOUT_S)

    def during(self, wave: Wave) -> list[tuple[float, float, int]]:
        """The polls sent while the wave was in flight."""
        return [p for p in self.polls if wave.released <= p[0] <= wave.finished]


def stored_objects(store: S3ObjectStore, caller: Caller) -> list[str]:
    """Every object under the caller's uploads prefix."""
    prefix = f"uploads/{caller.tenant_id}/"
    return [o.object_name or "" for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)]


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("bomb", BOMBS, ids=BOMB_IDS)
def test_a_bomb_is_refused_naming_the_field_within_the_memory_budget(
    api: LiveApi, alice: Caller, store: S3ObjectStore, settings: Settings, bomb: Bomb
) -> None:
    # Given a bomb that fits in one request (the body limit is not what stops it)
    data = bomb.build()
    assert len(data) <= settings.max_upload_bytes
    # When alice uploads it, the API's memory measured from /proc
    with PeakRss(api.pid).during() as rss:
        response = upload(api.base_url, alice, bomb.name, data)
    # Then it is refused naming the field and the entry or the limit...
    assert response.status_code == bomb.status, response.text
    error = response.json()["error"]
    assert error["field"] == "files"
    assert bomb.needle in error["message"], error
    # ...the API's peak stays within the upload memory budget (plus a margin)...
    assert rss.growth < BUDGET + RSS_MARGIN, (
        f"RSS went {rss.baseline / MIB:.0f} -> {rss.peak / MIB:.0f} MiB (+{rss.growth / MIB:.0f} MiB); "
        f"the budget is {BUDGET / MIB:.0f} MiB"
    )
    # ...and nothing is stored
    assert stored_objects(store, alice) == []
    assert httpx.get(f"{api.base_url}/v1/uploads", headers=alice.headers).json()["items"] == []
    print(f"{bomb.name}: {len(data)} bytes -> {response.status_code}; RSS +{rss.growth / MIB:.1f} MiB")


@pytest.fixture
def wave_bomb() -> bytes:
    """A zip within every limit that takes a second or more to unpack: the slow path, so a wave overlaps."""
    return ratio_legal_zip(10, 25)


def test_ten_bombs_at_once_from_one_tenant_leave_polls_answered(
    api: LiveApi, alice: Caller, bob: Caller, store: S3ObjectStore, wave_bomb: bytes
) -> None:
    # Given bob polling his uploads
    with Poller(api.base_url, bob).polling() as poller, PeakRss(api.pid).during() as rss:
        time.sleep(10 * POLL_INTERVAL_S)
        # When alice sends ten bombs at once
        wave = send_wave(api.base_url, [alice] * WAVE, "allowed.zip", wave_bomb)
    # Then PER_TENANT of them are unpacked (and refused as content), the rest get 429 with Retry-After
    statuses = sorted(r.status_code for r in wave.responses)
    assert statuses == [415] * PER_TENANT + [429] * (WAVE - PER_TENANT), [r.text for r in wave.responses]
    for response in wave.responses:
        assert response.json()["error"]["field"] == "files"
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert f"already has {PER_TENANT} uploads being unpacked" in response.json()["error"]["message"]
    # ...bob's polls were answered 200 all along...
    during = poller.during(wave)
    assert during, "no poll was sent while the bombs were in flight"
    assert {status for _sent, _latency, status in poller.polls} == {200}
    # ...the API's memory stayed within the budget of the uploads it unpacked at once, and nothing is stored
    assert rss.growth < PER_TENANT * BUDGET + RSS_MARGIN, f"RSS +{rss.growth / MIB:.0f} MiB"
    assert stored_objects(store, alice) == []
    p50 = statistics.median(latency for _sent, latency, _status in during)
    print(f"wave {wave.finished - wave.released:.1f} s; {len(during)} polls during it, p50 {p50 * 1000:.1f} ms")


def test_ten_bombs_at_once_from_ten_tenants_are_capped_per_process(
    api: LiveApi, bob: Caller, sessions: sessionmaker[Session], wave_bomb: bytes
) -> None:
    # Given ten tenants, and bob polling
    tenants = [make_caller(sessions) for _ in range(WAVE)]
    with Poller(api.base_url, bob).polling() as poller, PeakRss(api.pid).during() as rss:
        # When each sends one bomb, all at once
        wave = send_wave(api.base_url, tenants, "allowed.zip", wave_bomb)
    # Then CONCURRENCY are unpacked and the rest get 429 naming the process-wide limit
    statuses = sorted(r.status_code for r in wave.responses)
    assert statuses == [415] * CONCURRENCY + [429] * (WAVE - CONCURRENCY), [r.text for r in wave.responses]
    refused = [r for r in wave.responses if r.status_code == 429]
    assert all(f"{CONCURRENCY} uploads are being unpacked" in r.json()["error"]["message"] for r in refused)
    assert all("Retry-After" in r.headers for r in refused)
    # ...bob is answered throughout, and memory is bounded by CONCURRENCY budgets
    assert poller.during(wave)
    assert {status for _sent, _latency, status in poller.polls} == {200}
    assert rss.growth < CONCURRENCY * BUDGET + RSS_MARGIN, f"RSS +{rss.growth / MIB:.0f} MiB"


def test_the_gate_is_released_after_each_upload(api: LiveApi, alice: Caller) -> None:
    # Given more uploads in a row than the per-tenant limit, good and bad
    for i in range(PER_TENANT * 3):
        # When alice sends them one after another
        response = upload(api.base_url, alice, f"x{i}.tar.xz", tar_of_zeros([("big.png", 1000 * MIB)], "xz"))
        # Then none is refused for concurrency: each slot was given back
        assert response.status_code == 413, response.text
    assert upload(api.base_url, alice, "ok.zip", zip_of({"ok.png": png()})).status_code == 201


# --- every format, and what cannot be streamed (in process) ---------------------------------


def tarred(entries: dict[str, bytes], mode: str) -> bytes:
    """A tar of ``entries`` written by tarfile in ``mode`` ("w", "w:gz", "w:bz2", "w:xz")."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("set.tar", lambda e: tarred(e, "w")),
        ("set.tgz", lambda e: tarred(e, "w:gz")),
        ("set.tar.bz2", lambda e: tarred(e, "w:bz2")),
        ("set.tar.xz", lambda e: tarred(e, "w:xz")),
        ("set.zip", zip_of),
    ],
)
def test_every_archive_format_is_unpacked(
    client: TestClient, alice: Caller, name: str, build: Callable[[dict[str, bytes]], bytes]
) -> None:
    # Given two class folders of images in one archive of each format
    archive = build({"set/cats/1.png": png(color=(1, 2, 3)), "set/dogs/1.png": png(), "set/dogs/2.jpg": jpeg()})
    # When alice uploads it
    response = client.post("/v1/uploads", files=[("files", (name, archive))], headers=alice.headers)
    # Then every image is stored with its class
    assert response.status_code == 201, response.text
    assert response.json()["classes"] == ["cats", "dogs"]
    assert response.json()["file_count"] == 3


def zip_with_method(method: int) -> bytes:
    """A zip of one PNG compressed with ``method`` (bzip2, lzma)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr("a.png", png())
    return buffer.getvalue()


def sparse_tar() -> bytes:
    """A gzipped tar holding one GNU sparse member."""
    header = tarfile.TarInfo("holes.png")
    header.type = tarfile.GNUTYPE_SPARSE
    header.size = 0
    return gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT) + bytes(2 * tarfile.BLOCKSIZE))


@pytest.mark.parametrize(
    ("name", "build", "status", "needle"),
    [
        ("bz.zip", lambda: zip_with_method(zipfile.ZIP_BZIP2), 422, "compression method 12"),
        ("xz.zip", lambda: zip_with_method(zipfile.ZIP_LZMA), 422, "compression method 14"),
        ("sparse.tgz", sparse_tar, 422, "'holes.png' is a sparse file"),
        ("wide.png", lambda: png(5000, 4000), 413, "takes 80000000 bytes decoded; the upload memory budget is"),
    ],
    ids=["zip-bzip2-entry", "zip-lzma-entry", "tar-sparse-member", "image-over-the-memory-budget"],
)
def test_what_cannot_be_unpacked_within_the_budget_is_refused(
    client: TestClient,
    alice: Caller,
    store: S3ObjectStore,
    name: str,
    build: Callable[[], bytes],
    status: int,
    needle: str,
) -> None:
    # When alice uploads something whose reading memory could not bound
    response = client.post("/v1/uploads", files=[("files", (name, build()))], headers=alice.headers)
    # Then it is refused naming the field, and nothing is stored
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert response.json()["error"]["field"] == "files"
    assert stored_objects(store, alice) == []
