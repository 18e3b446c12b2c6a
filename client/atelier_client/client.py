"""The clients: ``Atelier`` (sync) and ``AsyncAtelier`` (async), and the job handles they return.

Both send the same ``calls`` (built in atelier_client/calls.py) through the same retry decisions
(retry.py) and follow jobs with the same state (follow.py); each only does its own kind of I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from atelier_client import calls, config
from atelier_client.calls import Call
from atelier_client.downloads import ArtifactWriter, artifact_path, etag_sha256, is_current
from atelier_client.errors import APIError, AtelierError, Unauthorized, WaitTimeout
from atelier_client.follow import DONE_EVENT, EventFollower, snapshot_events
from atelier_client.models import (
    Artifact,
    Deletion,
    Event,
    Job,
    MetricSeries,
    Model,
    Page,
    Sweep,
    Upload,
    Usage,
    WebhookDelivery,
    WebhookSecret,
)
from atelier_client.retry import Deadline, RetryPolicy
from atelier_client.uploads import Part, file_part, folder_part, multipart, picture_parts, plan_folder

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 1.0  # between polls when no event stream can be had
SETTLE_INTERVAL_S = 0.2  # between reads after `done`, while a cached read may still show the job running
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
NO_CONTENT = 204  # GET .../events after a finished job's last event: nothing will follow
DEFAULT_STYLE_WAIT_S = 60
DEFAULT_SAMPLES = 64
STYLE_APPLY = "style.apply"


def _version() -> str:
    try:
        return metadata.version("atelier-client")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"atelier-client/{_version()}"


# --- what both clients share -----------------------------------------------------------------


def _job_fields(job: Job) -> dict[str, Any]:
    return {f.name: getattr(job, f.name) for f in fields(Job)}


def _parse(call: Call[T], response: httpx.Response) -> T:
    try:
        return call.parse(response)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise APIError(
            f"unexpected answer to {call.method} {call.path}: {exc}", code="bad_response", status=response.status_code
        ) from exc


def _expected_size(response: httpx.Response) -> int | None:
    """The body's length when the bytes read will be exactly those sent (no content coding)."""
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit() or response.headers.get("Content-Encoding"):
        return None
    return int(length)


def local_file(value: str | Path) -> Path | None:
    """``value`` as a file to upload, or None when it names no file (a built-in image or an upload id)."""
    path = Path(value)
    return path if isinstance(value, Path) or path.is_file() else None


def sample_params(job_id: str, n: int, seed: int | None) -> dict[str, Any]:
    """The params of a gan.sample job."""
    params: dict[str, Any] = {"source_job": job_id, "n": n}
    if seed is not None:
        params["seed"] = seed
    return params


def style_params(content: str, style: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params of a style.transfer job on one content and one style image."""
    return {"content": content, "styles": [style], **params}


def local_picture(value: str | Path) -> Path | None:
    """``value`` as a local file or folder to upload, or None when it names neither (a built-in picture or an upload id)."""
    path = Path(value)
    return path if isinstance(value, Path) or path.exists() else None


def picture_refs(values: Iterable[str | Path], upload_id: str | None) -> list[str]:
    """style.apply's ``images``: names as given, and ``upload_id`` (holding every local picture) where the first one was."""
    refs: list[str] = []
    for value in values:
        if local_picture(value) is None:
            refs.append(str(value))
        elif upload_id is None:
            raise ValueError(f"{value}: a local picture needs an upload")
        elif upload_id not in refs:
            refs.append(upload_id)
    return refs


def apply_params(
    model_id: str,
    images: Sequence[str],
    *,
    size: int | None = None,
    strength: float | None = None,
    preserve_colors: bool = False,
) -> dict[str, Any]:
    """The params of a style.apply job; what is not given is left to the server's defaults (512 px, strength 1)."""
    params: dict[str, Any] = {"model": model_id, "images": list(images)}
    if size is not None:
        params["size"] = size
    if strength is not None:
        params["strength"] = strength
    if preserve_colors:
        params["preserve_colors"] = True
    return params


class _Base:
    """Configuration and request building, the same for both clients."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        *,
        timeout: float,
        retry: RetryPolicy | None,
        config_path: Path | None,
    ) -> None:
        credentials = config.resolve(url, api_key, path=config_path)
        self.url = credentials.url
        self.retry = retry or RetryPolicy()
        self._headers = {"Authorization": f"Bearer {credentials.api_key}", "User-Agent": USER_AGENT}
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, calls.CONNECT_TIMEOUT_S))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    def _request_args(self, call: Call[Any]) -> dict[str, Any]:
        args: dict[str, Any] = {
            "method": call.method,
            "url": call.path,
            "params": call.params,
            "headers": dict(call.headers),
            "timeout": call.timeout or self._timeout,
        }
        if call.json is not None:
            args["json"] = call.json
        return args

    def _deadline(self, timeout: float | None, job_id: str) -> Deadline:
        return Deadline(timeout, clock=self.retry.clock, what=f"job {job_id}")


def _next_page(page: Page[T], cursor: str | None) -> str | None:
    """The cursor of the page after ``page``; None at the end (or if the server repeats a cursor)."""
    return page.next_cursor if page.next_cursor not in (None, cursor) else None


# --- sync --------------------------------------------------------------------------------------


class Atelier(_Base):
    """The Atelier API, synchronously. URL and key: arguments, else ``ATELIER_URL`` / ``ATELIER_API_KEY``,
    else the file ``atelier login`` writes."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        config_path: Path | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout=timeout, retry=retry, config_path=config_path)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=self._timeout, transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- sending -------------------------------------------------------------------------------

    def _exchange(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        """Send ``call`` until it succeeds or the retry policy gives up; a streamed answer must be closed."""
        state = self.retry.start()
        while True:
            content = call.body() if call.body is not None else None
            request = self._http.build_request(**self._request_args(call), content=content)
            try:
                response = self._http.send(request, stream=stream)
                if response.is_success:
                    return response
                if stream:
                    try:
                        response.read()
                    finally:
                        response.close()
            except httpx.TransportError as exc:
                self.retry.sleep(state.after_error(exc, idempotent=call.idempotent, url=str(request.url)))
                continue
            self.retry.sleep(state.after_response(response))

    def _send(self, call: Call[T]) -> T:
        return _parse(call, self._exchange(call))

    def _pages(self, make: Callable[[str | None], Call[Page[T]]]) -> Iterator[T]:
        cursor: str | None = None
        while True:
            page = self._send(make(cursor))
            yield from page.items
            cursor = _next_page(page, cursor)
            if cursor is None:
                return

    def _bind(self, job: Job) -> JobHandle:
        return JobHandle(**_job_fields(job), client=self)

    # --- jobs ----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobHandle:
        """A job's current state."""
        return self._bind(self._send(calls.get_job(job_id)))

    def jobs(
        self, *, state: str | None = None, job_type: str | None = None, page_size: int | None = None
    ) -> Iterator[JobHandle]:
        """Every job of this key's tenant, newest first, page after page."""
        for job in self._pages(lambda c: calls.list_jobs(state=state, job_type=job_type, limit=page_size, cursor=c)):
            yield self._bind(job)

    def submit(
        self,
        job_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        webhook: str | None = None,
        webhook_events_filter: Iterable[str] | None = None,
        wait: int | None = None,
        idempotency_key: str | None = None,
        priority: str | None = None,
    ) -> JobHandle:
        """Submit a job; ``wait`` (≤ 60 s) asks the server to answer when it ends or after that long;
        ``priority`` (low, normal, high) orders it among your own queued jobs."""
        call = calls.submit(
            job_type,
            params or {},
            webhook=webhook,
            webhook_events_filter=list(webhook_events_filter) if webhook_events_filter is not None else None,
            wait_s=wait,
            idempotency_key=idempotency_key,
            priority=priority,
        )
        return self._bind(self._send(call))

    def cancel(self, job_id: str) -> JobHandle:
        """Ask a job to stop: a queued one never runs, a running one checkpoints and stops within a step."""
        return self._bind(self._send(calls.cancel(job_id)))

    def usage(self) -> Usage:
        """What this key's tenant stores (against its quota) and uses."""
        return self._send(calls.usage())

    def delete_job(self, job_id: str) -> Deletion:
        """Delete a job with its loss history, artifacts and checkpoints (a running one is stopped first).

        The job is a NotFound for every read at once; its data goes in the background. Deleting again is
        fine until then; after it, NotFound."""
        return self._send(calls.delete_job(job_id))

    def metrics(
        self,
        job_id: str,
        *,
        names: Iterable[str] | None = None,
        since_step: int = -1,
        until_step: int | None = None,
        max_points: int | None = None,
    ) -> dict[str, MetricSeries]:
        """A job's metric history by name: the steps in (``since_step``, ``until_step``], downsampled past ``max_points``."""
        names = list(names) if names is not None else None
        return self._send(
            calls.metrics(job_id, names=names, since_step=since_step, until_step=until_step, max_points=max_points)
        )

    def sample(
        self, job_id: str, n: int = DEFAULT_SAMPLES, *, seed: int | None = None, wait: int | None = None
    ) -> JobHandle:
        """Submit a gan.sample job drawing ``n`` images from a finished gan.train job."""
        return self.submit("gan.sample", sample_params(job_id, n, seed), wait=wait)

    def style(
        self, content: str | Path, style: str | Path, *, wait: int | None = DEFAULT_STYLE_WAIT_S, **params: Any
    ) -> JobHandle:
        """Upload the two pictures (a built-in name or upload id is used as it is) and submit a style.transfer job."""
        content_ref, style_ref = self._image_ref(content), self._image_ref(style)
        return self.submit("style.transfer", style_params(content_ref, style_ref, params), wait=wait)

    def _image_ref(self, value: str | Path) -> str:
        path = local_file(value)
        return self.upload_files([path]).id if path is not None else str(value)

    def apply_style(
        self,
        model_id: str,
        pictures: Iterable[str | Path],
        *,
        size: int | None = None,
        strength: float | None = None,
        preserve_colors: bool = False,
        wait: int | None = DEFAULT_STYLE_WAIT_S,
    ) -> JobHandle:
        """Submit a style.apply job; local files and folders go up as one upload, other names are used as they are."""
        values = list(pictures)
        paths = [path for path in map(local_picture, values) if path is not None]
        upload_id = self.upload_pictures(paths).id if paths else None
        params = apply_params(
            model_id, picture_refs(values, upload_id), size=size, strength=strength, preserve_colors=preserve_colors
        )
        return self.submit(STYLE_APPLY, params, wait=wait)

    # --- style models --------------------------------------------------------------------------

    def model(self, model_id: str) -> Model:
        """One trained style model (NotFound for an unknown or deleted one)."""
        return self._send(calls.get_model(model_id))

    def models_page(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Model]:
        """One page of trained style models, newest first; its ``next_cursor`` (None on the last) gets the next."""
        return self._send(calls.list_models(limit=limit, cursor=cursor))

    def models(self, *, page_size: int | None = None) -> Iterator[Model]:
        """Every trained style model of this key's tenant, newest first, page after page."""
        yield from self._pages(lambda c: calls.list_models(limit=page_size, cursor=c))

    def delete_model(self, model_id: str) -> None:
        """Delete a trained style model (deleting it again is fine); NotFound for an unknown one."""
        self._send(calls.delete_model(model_id))

    # --- sweeps --------------------------------------------------------------------------------

    def create_sweep(self, body: Mapping[str, Any]) -> Sweep:
        """Start a sweep: ``type``, ``base_params``, ``grid`` or ``random`` (+ ``trials``), ``seeds``,
        ``objective`` ({metric, mode}), ``max_parallel``, as POST /v1/sweeps takes them."""
        return self._send(calls.create_sweep(body))

    def sweep(self, sweep_id: str) -> Sweep:
        """A sweep with every trial and the best."""
        return self._send(calls.get_sweep(sweep_id))

    def sweeps(self, *, page_size: int | None = None) -> Iterator[Sweep]:
        """Every sweep of this key's tenant, newest first, page after page."""
        yield from self._pages(lambda c: calls.list_sweeps(limit=page_size, cursor=c))

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """Cancel a sweep: its queued trials never run, its running ones stop within a step."""
        return self._send(calls.cancel_sweep(sweep_id))

    # --- following a job -----------------------------------------------------------------------

    def events(self, job_id: str, *, after: int | None = None) -> Generator[Event, None, None]:
        """The job's events after event ``after``, reconnecting with Last-Event-ID; ends after ``done``."""
        yield from self._stream(job_id, self._deadline(None, job_id), EventFollower(last_id=after))

    def _stream(self, job_id: str, deadline: Deadline, follower: EventFollower) -> Generator[Event, None, None]:
        drops = self.retry.start()
        while True:
            deadline.check()
            call = calls.events(
                job_id, last_event_id=follower.last_id, read_timeout_s=deadline.cap(calls.STREAM_READ_TIMEOUT_S)
            )
            response = self._exchange(call, stream=True)
            if response.status_code == NO_CONTENT:  # the job has finished and its done was seen
                response.close()
                return
            fresh, failure = False, None
            try:
                decoder = follower.decoder()
                for line in response.iter_lines():
                    deadline.check()
                    sse = decoder.feed(line)
                    event = follower.accept(sse) if sse is not None else None
                    if event is not None:
                        fresh = True
                        yield event
                        if follower.done:
                            return
            except httpx.TransportError as exc:
                failure = exc
            finally:
                response.close()
            deadline.check()
            if fresh:
                drops = self.retry.start()
            self.retry.sleep(drops.after_drop(retry_ms=follower.retry_ms, url=str(response.url), error=failure))

    def follow(self, job_id: str, *, timeout: float | None = None) -> Generator[Event, None, None]:
        """Like ``events``, but polls the job instead when no stream can be had; ends after ``done``."""
        yield from self._follow(job_id, self._deadline(timeout, job_id))

    def _follow(self, job_id: str, deadline: Deadline) -> Generator[Event, None, None]:
        follower = EventFollower()
        try:
            yield from self._stream(job_id, deadline, follower)
            return
        except (Unauthorized, WaitTimeout):
            raise
        except AtelierError:
            pass  # no usable stream (an older server, a buffering proxy): poll instead
        previous: Job | None = None
        streamed = follower.last_id is not None
        while True:
            job = self._send(calls.get_job(job_id))
            events = snapshot_events(previous, job)
            if streamed and previous is None:  # what the stream already told is not told again
                events = [e for e in events if e.type == DONE_EVENT]
            yield from events
            if job.done:
                return
            previous = job
            self.retry.sleep(deadline.cap(POLL_INTERVAL_S))
            deadline.check()

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobHandle:
        """Block until the job ends (following its events) and return its final state; WaitTimeout after ``timeout`` s."""
        deadline = self._deadline(timeout, job_id)
        job = self.get_job(job_id)
        try:
            if not job.done:
                with contextlib.closing(self._follow(job_id, deadline)) as stream:
                    for event in stream:
                        if event.type == DONE_EVENT:
                            break
            while not job.done:  # a read cached for a moment may not show the end yet
                job = self.get_job(job_id)
                if not job.done:
                    deadline.check()
                    self.retry.sleep(deadline.cap(SETTLE_INTERVAL_S))
        except WaitTimeout as exc:
            raise WaitTimeout(exc.message, job=self.get_job(job_id)) from None
        return job

    # --- artifacts -----------------------------------------------------------------------------

    def artifacts(self, job_id: str) -> Iterator[Artifact]:
        """Every artifact of a job, page after page."""
        yield from self._pages(lambda c: calls.list_artifacts(job_id, cursor=c))

    def download(self, job_id: str, name: str, path: str | Path) -> Path:
        """Stream one artifact to ``path`` (checked against its length and SHA-256)."""
        return self._fetch(calls.artifact(job_id, name), Path(path))

    def download_artifacts(self, job_id: str, directory: str | Path) -> list[Path]:
        """Stream every artifact into ``directory`` (``a/b.png`` into a sub-folder); files already there are kept.

        Every name is checked before anything is written: one that would escape the folder is a DownloadError.
        """
        root = Path(directory)
        targets = [(a, artifact_path(root, a.name)) for a in self.artifacts(job_id)]
        for item, path in targets:
            if not is_current(path, size=item.size, sha256=item.sha256):
                self._fetch(calls.artifact(job_id, item.name), path, size=item.size, sha256=item.sha256)
        return [path for _item, path in targets]

    def _fetch(self, call: Call[None], path: Path, *, size: int | None = None, sha256: str | None = None) -> Path:
        drops = self.retry.start()
        while True:
            response = self._exchange(call, stream=True)
            try:
                expected = size if size is not None else _expected_size(response)
                digest = sha256 or etag_sha256(response.headers.get("ETag"))
                with ArtifactWriter(path, size=expected, sha256=digest) as writer:
                    for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                        writer.write(chunk)
                return path
            except httpx.TransportError as exc:  # dropped mid-file: fetch it again
                delay = drops.after_error(exc, idempotent=True, url=str(response.url))
            finally:
                response.close()
            self.retry.sleep(delay)

    # --- uploads -------------------------------------------------------------------------------

    def upload_folder(self, path: str | Path) -> Upload:
        """Zip a folder on the fly (sub-folders become classes) and upload it."""
        return self._upload([folder_part(plan_folder(Path(path)))])

    def upload_files(self, paths: Iterable[str | Path]) -> Upload:
        """Upload files as they are: images, one archive, or one ``.pt``/``.pth`` weights file."""
        return self._upload([file_part(Path(p)) for p in paths])

    def upload(self, path: str | Path) -> Upload:
        """Upload a folder (zipped) or a single file."""
        return self.upload_folder(path) if Path(path).is_dir() else self.upload_files([path])

    def upload_pictures(self, paths: Iterable[str | Path]) -> Upload:
        """Upload pictures as ONE upload: files as they are, one folder zipped, or files and folders zipped together."""
        return self._upload(picture_parts([Path(p) for p in paths]))

    def _upload(self, parts: list[Part]) -> Upload:
        content_type, body = multipart(parts)
        return self._send(calls.upload(content_type, body))

    def get_upload(self, upload_id: str) -> Upload:
        """One upload."""
        return self._send(calls.get_upload(upload_id))

    def uploads(self) -> Iterator[Upload]:
        """Every upload of this key's tenant, newest first."""
        yield from self._pages(lambda c: calls.list_uploads(cursor=c))

    def delete_upload(self, upload_id: str) -> Deletion:
        """Delete an upload and its files; Conflict (naming them) while queued or running jobs use it, NotFound
        once it is gone. Jobs that used it and ended keep their outputs."""
        return self._send(calls.delete_upload(upload_id))

    # --- webhooks ------------------------------------------------------------------------------

    def webhook_deliveries(self, job_id: str, *, page_size: int | None = None) -> Iterator[WebhookDelivery]:
        """Every webhook delivery of a job, in event order, each with its attempts, page after page."""
        yield from self._pages(lambda c: calls.webhook_deliveries(job_id, limit=page_size, cursor=c))

    def webhook_secret(self) -> WebhookSecret:
        """The tenant's webhook signing secret (``whsec_…``; made on the first read)."""
        return self._send(calls.webhook_secret())

    def rotate_webhook_secret(self) -> WebhookSecret:
        """Replace the webhook signing secret; the previous one also signs until ``previous_valid_until`` (24 h)."""
        return self._send(calls.rotate_webhook_secret())


@dataclass(frozen=True, kw_only=True)
class JobHandle(Job):
    """A job's state as last read, with the calls that act on it."""

    client: Atelier = field(repr=False, compare=False)

    def refresh(self) -> JobHandle:
        """The job's current state."""
        return self.client.get_job(self.id)

    def wait(self, timeout: float | None = None) -> JobHandle:
        """Block until the job ends; its final state."""
        return self.client.wait(self.id, timeout=timeout)

    def events(self, *, after: int | None = None) -> Generator[Event, None, None]:
        """The job's events, reconnecting on a dropped connection; ends after ``done``."""
        return self.client.events(self.id, after=after)

    def follow(self, *, timeout: float | None = None) -> Generator[Event, None, None]:
        """The job's events, or the same made from polls when no stream can be had."""
        return self.client.follow(self.id, timeout=timeout)

    def cancel(self) -> JobHandle:
        """Ask the job to stop."""
        return self.client.cancel(self.id)

    def metrics(
        self,
        *,
        names: Iterable[str] | None = None,
        since_step: int = -1,
        until_step: int | None = None,
        max_points: int | None = None,
    ) -> dict[str, MetricSeries]:
        """The job's metric history."""
        return self.client.metrics(
            self.id, names=names, since_step=since_step, until_step=until_step, max_points=max_points
        )

    def artifacts(self) -> Iterator[Artifact]:
        """The job's artifacts."""
        return self.client.artifacts(self.id)

    def download(self, name: str, path: str | Path) -> Path:
        """Save one artifact to ``path``."""
        return self.client.download(self.id, name, path)

    def download_artifacts(self, directory: str | Path) -> list[Path]:
        """Save every artifact under ``directory``."""
        return self.client.download_artifacts(self.id, directory)

    def webhook_deliveries(self) -> Iterator[WebhookDelivery]:
        """The job's webhook deliveries, each with its attempts."""
        return self.client.webhook_deliveries(self.id)


# --- async -------------------------------------------------------------------------------------


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking chunk iterator (files read, a zip written) run off the event loop."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


class AsyncAtelier(_Base):
    """The Atelier API for asyncio: the same methods as ``Atelier``, awaited."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        config_path: Path | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout=timeout, retry=retry, config_path=config_path)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=self._timeout, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- sending -------------------------------------------------------------------------------

    async def _exchange(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        state = self.retry.start()
        while True:
            content = _async_chunks(call.body()) if call.body is not None else None
            request = self._http.build_request(**self._request_args(call), content=content)
            try:
                response = await self._http.send(request, stream=stream)
                if response.is_success:
                    return response
                if stream:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.TransportError as exc:
                await self.retry.async_sleep(state.after_error(exc, idempotent=call.idempotent, url=str(request.url)))
                continue
            await self.retry.async_sleep(state.after_response(response))

    async def _send(self, call: Call[T]) -> T:
        return _parse(call, await self._exchange(call))

    async def _pages(self, make: Callable[[str | None], Call[Page[T]]]) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            page = await self._send(make(cursor))
            for item in page.items:
                yield item
            cursor = _next_page(page, cursor)
            if cursor is None:
                return

    def _bind(self, job: Job) -> AsyncJobHandle:
        return AsyncJobHandle(**_job_fields(job), client=self)

    # --- jobs ----------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> AsyncJobHandle:
        """A job's current state."""
        return self._bind(await self._send(calls.get_job(job_id)))

    async def jobs(
        self, *, state: str | None = None, job_type: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[AsyncJobHandle]:
        """Every job of this key's tenant, newest first, page after page."""
        async for job in self._pages(
            lambda c: calls.list_jobs(state=state, job_type=job_type, limit=page_size, cursor=c)
        ):
            yield self._bind(job)

    async def submit(
        self,
        job_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        webhook: str | None = None,
        webhook_events_filter: Iterable[str] | None = None,
        wait: int | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncJobHandle:
        """Submit a job; ``wait`` (≤ 60 s) asks the server to answer when it ends or after that long."""
        call = calls.submit(
            job_type,
            params or {},
            webhook=webhook,
            webhook_events_filter=list(webhook_events_filter) if webhook_events_filter is not None else None,
            wait_s=wait,
            idempotency_key=idempotency_key,
        )
        return self._bind(await self._send(call))

    async def usage(self) -> Usage:
        """What this key's tenant stores (against its quota) and uses."""
        return await self._send(calls.usage())

    async def delete_job(self, job_id: str) -> Deletion:
        """Delete a job with its data (a running one is stopped first); NotFound once it is gone."""
        return await self._send(calls.delete_job(job_id))

    async def cancel(self, job_id: str) -> AsyncJobHandle:
        """Ask a job to stop."""
        return self._bind(await self._send(calls.cancel(job_id)))

    async def metrics(
        self,
        job_id: str,
        *,
        names: Iterable[str] | None = None,
        since_step: int = -1,
        until_step: int | None = None,
        max_points: int | None = None,
    ) -> dict[str, MetricSeries]:
        """A job's metric history by name: the steps in (``since_step``, ``until_step``], downsampled past ``max_points``."""
        names = list(names) if names is not None else None
        return await self._send(
            calls.metrics(job_id, names=names, since_step=since_step, until_step=until_step, max_points=max_points)
        )

    async def sample(
        self, job_id: str, n: int = DEFAULT_SAMPLES, *, seed: int | None = None, wait: int | None = None
    ) -> AsyncJobHandle:
        """Submit a gan.sample job drawing ``n`` images from a finished gan.train job."""
        return await self.submit("gan.sample", sample_params(job_id, n, seed), wait=wait)

    async def style(
        self, content: str | Path, style: str | Path, *, wait: int | None = DEFAULT_STYLE_WAIT_S, **params: Any
    ) -> AsyncJobHandle:
        """Upload the two pictures (a built-in name or upload id is used as it is) and submit a style.transfer job."""
        content_ref, style_ref = await self._image_ref(content), await self._image_ref(style)
        return await self.submit("style.transfer", style_params(content_ref, style_ref, params), wait=wait)

    async def _image_ref(self, value: str | Path) -> str:
        path = local_file(value)
        return (await self.upload_files([path])).id if path is not None else str(value)

    async def apply_style(
        self,
        model_id: str,
        pictures: Iterable[str | Path],
        *,
        size: int | None = None,
        strength: float | None = None,
        preserve_colors: bool = False,
        wait: int | None = DEFAULT_STYLE_WAIT_S,
    ) -> AsyncJobHandle:
        """Submit a style.apply job; local files and folders go up as one upload, other names are used as they are."""
        values = list(pictures)
        paths = [path for path in map(local_picture, values) if path is not None]
        upload_id = (await self.upload_pictures(paths)).id if paths else None
        params = apply_params(
            model_id, picture_refs(values, upload_id), size=size, strength=strength, preserve_colors=preserve_colors
        )
        return await self.submit(STYLE_APPLY, params, wait=wait)

    # --- style models --------------------------------------------------------------------------

    async def model(self, model_id: str) -> Model:
        """One trained style model (NotFound for an unknown or deleted one)."""
        return await self._send(calls.get_model(model_id))

    async def models_page(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Model]:
        """One page of trained style models, newest first; its ``next_cursor`` (None on the last) gets the next."""
        return await self._send(calls.list_models(limit=limit, cursor=cursor))

    async def models(self, *, page_size: int | None = None) -> AsyncIterator[Model]:
        """Every trained style model of this key's tenant, newest first, page after page."""
        async for item in self._pages(lambda c: calls.list_models(limit=page_size, cursor=c)):
            yield item

    async def delete_model(self, model_id: str) -> None:
        """Delete a trained style model (deleting it again is fine); NotFound for an unknown one."""
        await self._send(calls.delete_model(model_id))

    # --- following a job -----------------------------------------------------------------------

    async def events(self, job_id: str, *, after: int | None = None) -> AsyncGenerator[Event, None]:
        """The job's events after event ``after``, reconnecting with Last-Event-ID; ends after ``done``."""
        stream = self._stream(job_id, self._deadline(None, job_id), EventFollower(last_id=after))
        async with contextlib.aclosing(stream):
            async for event in stream:
                yield event

    async def _stream(self, job_id: str, deadline: Deadline, follower: EventFollower) -> AsyncGenerator[Event, None]:
        drops = self.retry.start()
        while True:
            deadline.check()
            call = calls.events(
                job_id, last_event_id=follower.last_id, read_timeout_s=deadline.cap(calls.STREAM_READ_TIMEOUT_S)
            )
            response = await self._exchange(call, stream=True)
            if response.status_code == NO_CONTENT:  # the job has finished and its done was seen
                await response.aclose()
                return
            fresh, failure = False, None
            try:
                decoder = follower.decoder()
                async for line in response.aiter_lines():
                    deadline.check()
                    sse = decoder.feed(line)
                    event = follower.accept(sse) if sse is not None else None
                    if event is not None:
                        fresh = True
                        yield event
                        if follower.done:
                            return
            except httpx.TransportError as exc:
                failure = exc
            finally:
                await response.aclose()
            deadline.check()
            if fresh:
                drops = self.retry.start()
            delay = drops.after_drop(retry_ms=follower.retry_ms, url=str(response.url), error=failure)
            await self.retry.async_sleep(delay)

    async def follow(self, job_id: str, *, timeout: float | None = None) -> AsyncGenerator[Event, None]:
        """Like ``events``, but polls the job instead when no stream can be had; ends after ``done``."""
        async with contextlib.aclosing(self._follow(job_id, self._deadline(timeout, job_id))) as stream:
            async for event in stream:
                yield event

    async def _follow(self, job_id: str, deadline: Deadline) -> AsyncGenerator[Event, None]:
        follower = EventFollower()
        try:
            async with contextlib.aclosing(self._stream(job_id, deadline, follower)) as stream:
                async for event in stream:
                    yield event
            return
        except (Unauthorized, WaitTimeout):
            raise
        except AtelierError:
            pass  # no usable stream: poll instead
        previous: Job | None = None
        streamed = follower.last_id is not None
        while True:
            job = await self._send(calls.get_job(job_id))
            events = snapshot_events(previous, job)
            if streamed and previous is None:
                events = [e for e in events if e.type == DONE_EVENT]
            for event in events:
                yield event
            if job.done:
                return
            previous = job
            await self.retry.async_sleep(deadline.cap(POLL_INTERVAL_S))
            deadline.check()

    async def wait(self, job_id: str, *, timeout: float | None = None) -> AsyncJobHandle:
        """Wait until the job ends (following its events) and return its final state; WaitTimeout after ``timeout`` s."""
        deadline = self._deadline(timeout, job_id)
        job = await self.get_job(job_id)
        try:
            if not job.done:
                async with contextlib.aclosing(self._follow(job_id, deadline)) as stream:
                    async for event in stream:
                        if event.type == DONE_EVENT:
                            break
            while not job.done:
                job = await self.get_job(job_id)
                if not job.done:
                    deadline.check()
                    await self.retry.async_sleep(deadline.cap(SETTLE_INTERVAL_S))
        except WaitTimeout as exc:
            raise WaitTimeout(exc.message, job=await self.get_job(job_id)) from None
        return job

    # --- artifacts -----------------------------------------------------------------------------

    async def artifacts(self, job_id: str) -> AsyncIterator[Artifact]:
        """Every artifact of a job, page after page."""
        async for item in self._pages(lambda c: calls.list_artifacts(job_id, cursor=c)):
            yield item

    async def download(self, job_id: str, name: str, path: str | Path) -> Path:
        """Stream one artifact to ``path``."""
        return await self._fetch(calls.artifact(job_id, name), Path(path))

    async def download_artifacts(self, job_id: str, directory: str | Path) -> list[Path]:
        """Stream every artifact into ``directory``; a name that would escape it is a DownloadError."""
        root = Path(directory)
        targets = [(a, artifact_path(root, a.name)) async for a in self.artifacts(job_id)]
        for item, path in targets:
            if not is_current(path, size=item.size, sha256=item.sha256):
                await self._fetch(calls.artifact(job_id, item.name), path, size=item.size, sha256=item.sha256)
        return [path for _item, path in targets]

    async def _fetch(self, call: Call[None], path: Path, *, size: int | None = None, sha256: str | None = None) -> Path:
        drops = self.retry.start()
        while True:
            response = await self._exchange(call, stream=True)
            try:
                expected = size if size is not None else _expected_size(response)
                digest = sha256 or etag_sha256(response.headers.get("ETag"))
                with ArtifactWriter(path, size=expected, sha256=digest) as writer:
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
                        writer.write(chunk)
                return path
            except httpx.TransportError as exc:
                delay = drops.after_error(exc, idempotent=True, url=str(response.url))
            finally:
                await response.aclose()
            await self.retry.async_sleep(delay)

    # --- uploads -------------------------------------------------------------------------------

    async def upload_folder(self, path: str | Path) -> Upload:
        """Zip a folder on the fly (sub-folders become classes) and upload it."""
        plan = await asyncio.to_thread(plan_folder, Path(path))
        return await self._upload([folder_part(plan)])

    async def upload_files(self, paths: Iterable[str | Path]) -> Upload:
        """Upload files as they are: images, one archive, or one weights file."""
        return await self._upload([file_part(Path(p)) for p in paths])

    async def upload(self, path: str | Path) -> Upload:
        """Upload a folder (zipped) or a single file."""
        return await (self.upload_folder(path) if Path(path).is_dir() else self.upload_files([path]))

    async def upload_pictures(self, paths: Iterable[str | Path]) -> Upload:
        """Upload pictures as ONE upload: files as they are, one folder zipped, or files and folders zipped together."""
        parts = await asyncio.to_thread(picture_parts, [Path(p) for p in paths])
        return await self._upload(parts)

    async def _upload(self, parts: list[Part]) -> Upload:
        content_type, body = multipart(parts)
        return await self._send(calls.upload(content_type, body))

    async def delete_upload(self, upload_id: str) -> Deletion:
        """Delete an upload and its files; Conflict while queued or running jobs use it."""
        return await self._send(calls.delete_upload(upload_id))

    async def get_upload(self, upload_id: str) -> Upload:
        """One upload."""
        return await self._send(calls.get_upload(upload_id))

    async def uploads(self) -> AsyncIterator[Upload]:
        """Every upload of this key's tenant, newest first."""
        async for item in self._pages(lambda c: calls.list_uploads(cursor=c)):
            yield item

    # --- webhooks ------------------------------------------------------------------------------

    async def webhook_deliveries(self, job_id: str, *, page_size: int | None = None) -> AsyncIterator[WebhookDelivery]:
        """Every webhook delivery of a job, in event order, each with its attempts, page after page."""
        async for item in self._pages(lambda c: calls.webhook_deliveries(job_id, limit=page_size, cursor=c)):
            yield item

    async def webhook_secret(self) -> WebhookSecret:
        """The tenant's webhook signing secret (``whsec_…``; made on the first read)."""
        return await self._send(calls.webhook_secret())

    async def rotate_webhook_secret(self) -> WebhookSecret:
        """Replace the webhook signing secret; the previous one also signs until ``previous_valid_until`` (24 h)."""
        return await self._send(calls.rotate_webhook_secret())


@dataclass(frozen=True, kw_only=True)
class AsyncJobHandle(Job):
    """A job's state as last read, with the (async) calls that act on it."""

    client: AsyncAtelier = field(repr=False, compare=False)

    async def refresh(self) -> AsyncJobHandle:
        """The job's current state."""
        return await self.client.get_job(self.id)

    async def wait(self, timeout: float | None = None) -> AsyncJobHandle:
        """Wait until the job ends; its final state."""
        return await self.client.wait(self.id, timeout=timeout)

    def events(self, *, after: int | None = None) -> AsyncIterator[Event]:
        """The job's events, reconnecting on a dropped connection; ends after ``done``."""
        return self.client.events(self.id, after=after)

    def follow(self, *, timeout: float | None = None) -> AsyncIterator[Event]:
        """The job's events, or the same made from polls when no stream can be had."""
        return self.client.follow(self.id, timeout=timeout)

    async def cancel(self) -> AsyncJobHandle:
        """Ask the job to stop."""
        return await self.client.cancel(self.id)

    async def metrics(
        self,
        *,
        names: Iterable[str] | None = None,
        since_step: int = -1,
        until_step: int | None = None,
        max_points: int | None = None,
    ) -> dict[str, MetricSeries]:
        """The job's metric history."""
        return await self.client.metrics(
            self.id, names=names, since_step=since_step, until_step=until_step, max_points=max_points
        )

    def artifacts(self) -> AsyncIterator[Artifact]:
        """The job's artifacts."""
        return self.client.artifacts(self.id)

    async def download(self, name: str, path: str | Path) -> Path:
        """Save one artifact to ``path``."""
        return await self.client.download(self.id, name, path)

    async def download_artifacts(self, directory: str | Path) -> list[Path]:
        """Save every artifact under ``directory``."""
        return await self.client.download_artifacts(self.id, directory)

    def webhook_deliveries(self) -> AsyncIterator[WebhookDelivery]:
        """The job's webhook deliveries, each with its attempts."""
        return self.client.webhook_deliveries(self.id)
