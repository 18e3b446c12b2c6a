"""The runtime under a job: the lease, heartbeats, fenced writes, and the TrainHooks that
training code calls. Implements invariants 1-5 of docs/DESIGN.md on top of Postgres and the
object store. Knows nothing of Celery: workers/tasks.py calls ``run_job``."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.queries.usage import describe_bytes
from shared.db.session import make_engine, make_sessionmaker, transaction
from shared.errors import JobFailed, StorageUnavailable, TransientError
from shared.events import EventPublisher
from shared.jobs.states import JobState
from shared.jobs.sweeps import Verdict, judge
from shared.queue import send_webhook_deliveries
from shared.storage import ObjectStore, job_key, make_store, retry_storage
from workers.hooks import STOP_CANCEL, STOP_EARLY, STOP_LEASE_LOST, STOP_SHUTDOWN, StopRequested
from workers.limits import JobLimits
from workers.metrics import JobMeter
from workers.watchdog import Watchdog, count_event

log = logging.getLogger(__name__)

T = TypeVar("T")
DB_RETRY_FIRST_S = 0.2
DB_RETRY_MAX_S = 5.0
DB_RETRY_DEADLINE_S = 120.0
RATE_SMOOTHING = 0.3
FILE_CHUNK_BYTES = 1024 * 1024  # save_artifact_file hashes its file this much at a time
METRICS_EVENT_EVERY_S = 0.5  # the SSE stream's metrics events: at most two a second
MAX_ERROR_CHARS = 2000
INTERNAL_ERROR = "internal_error"  # a crash Atelier did not foresee; the message holds the last frames
# Terminal escape sequences (colours, cursor moves) that some libraries put in exception text.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def clean_error_text(message: str) -> str:
    """An exception's text as stored on the job: no terminal escapes, at most MAX_ERROR_CHARS."""
    return ANSI_ESCAPE.sub("", message)[:MAX_ERROR_CHARS]


ARTIFACT_SECTIONS = {"sample": "samples", "checkpoint": "checkpoints"}
OUTCOME_REQUEUED = "requeued"  # a transient failure handed the job back; Celery retries the message
OUTCOME_ERROR = "error"
STORAGE_QUOTA = "storage_quota_exceeded"


def len_text(count: int) -> str:
    """A byte count for people (the quota messages)."""
    return describe_bytes(count)


@dataclass
class WorkerContext:
    """Per-process connections, built after the fork (never in the Celery parent)."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    owner: str
    shutdown: threading.Event = field(default_factory=threading.Event)
    watchdog: Watchdog | None = None

    @classmethod
    def build(cls, settings: Settings) -> WorkerContext:
        """Connect to Postgres and the store; name this worker process."""
        owner = settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"
        # A frozen worker (SIGSTOP, a long GC pause) must not hold the job row's lock for
        # longer than a lease: Postgres ends such a session, and the fence does the rest.
        sessions = make_sessionmaker(make_engine(settings, pool_size=2, idle_tx_timeout_s=settings.lease_s))
        EventPublisher(settings, dispatch=send_webhook_deliveries).install(sessions)
        return cls(
            settings=settings,
            sessions=sessions,
            store=make_store(settings),
            owner=owner,
            watchdog=Watchdog(
                stall_s=settings.watchdog_stall_s,
                stuck_s=settings.lease_s,
                grace_s=settings.watchdog_grace,
                on_event=count_event(settings.redis_url, timeout_s=settings.redis_timeout_s),
            ),
        )


def db_retry(
    fn: Callable[[], T],
    *,
    what: str,
    deadline_s: float = DB_RETRY_DEADLINE_S,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Run a DB transaction function, retrying while Postgres is unreachable.

    ``before_retry`` runs before each retry and may raise to give up early (a lost lease).
    """
    start = time.monotonic()
    delay = DB_RETRY_FIRST_S
    while True:
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            if not getattr(exc, "connection_invalidated", False) and not isinstance(exc, OperationalError):
                raise
            if time.monotonic() - start + delay > deadline_s:
                raise TransientError(f"database unavailable during {what}: {exc}") from exc
            if before_retry is not None:
                before_retry()
            log.warning("database unavailable during %s; retrying in %.1fs", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, DB_RETRY_MAX_S)


class JobRunner:
    """One attempt at one job: implements TrainHooks, fenced by ``claim.attempt``."""

    def __init__(self, ctx: WorkerContext, claim: queries.Claim) -> None:
        self.ctx = ctx
        self.claim = claim
        self.settings = ctx.settings
        self._lock = threading.Lock()
        self._buffer: list[tuple[str, int, float]] = []
        self._latest: dict[str, float] = {}
        self._progress: tuple[int, int] | None = None
        self._rate: float | None = None
        self._rate_mark: tuple[float, int] | None = None
        self._sent_progress: tuple[int, int] | None = None  # what the last committed progress event said
        self._sent_latest: dict[str, float] = {}
        self._sent_latest_at = 0.0
        self._lost = threading.Event()
        self._cancel = threading.Event()
        # Early stopping (a sweep trial): its rule, read at the first sync; the ticks judged; the verdict.
        self._trial: queries.TrialRule | None = None
        self._trial_read = False
        self._judged_upto = claim.checkpoint_step or 0  # a resumed trial was judged up to its checkpoint
        self._reached = 0  # the last step at which the objective was flushed
        self.early: Verdict | None = None
        self._handback = threading.Event()
        self._stop_sync = threading.Event()
        self._main_mark = time.monotonic()  # the main thread's last stop check or progress report
        self._sync_since: float | None = None  # when the sync call in flight started
        self._thread = threading.Thread(target=self._sync_loop, name=f"sync-{claim.job_id}", daemon=True)
        self.meter = JobMeter(claim.job_type, claim.params)  # Prometheus (workers/metrics.py)
        self.limits = JobLimits(
            max_artifacts=self.settings.max_job_artifacts,
            max_artifact_bytes=self.settings.max_job_artifact_bytes,
            max_runtime_s=JobLimits.runtime_of(claim.params),
            recorded=self._recorded_artifacts,
            started_at=self._first_started_at,
        )

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start heartbeating."""
        self._thread.start()

    def close(self) -> None:
        """Stop heartbeating (does not flush)."""
        self._stop_sync.set()
        self._thread.join(timeout=self.settings.lease_s)

    def _sync_loop(self) -> None:
        tick = min(self.settings.heartbeat_s, self.settings.metrics_flush_s)
        while not self._stop_sync.wait(tick):
            self._sync_since = time.monotonic()
            try:
                self.sync()
            except Exception as exc:  # keep heartbeating through DB blips; the lease tolerates a few misses
                log.warning("job %s: heartbeat failed: %s", self.claim.job_id, exc)
            finally:
                self._sync_since = None

    # --- the watchdog's view (workers/watchdog.py) -----------------------------------

    def watchdog_reason(self, *, now: float, stall_s: float, stuck_s: float) -> str | None:
        """Why the watchdog should stop this job now, or None."""
        if self._lost.is_set():
            return "lease lost"
        if now - self._main_mark >= stall_s:
            return f"main thread reached no stop check for {now - self._main_mark:.0f}s"
        since = self._sync_since
        if since is not None and now - since >= stuck_s:
            return f"heartbeat stuck in one call for {now - since:.0f}s"
        return None

    def request_handback(self, reason: str) -> None:
        """Checkpoint and hand the job back at the next stop check."""
        self._handback.set()

    def _give_up_if_lost(self) -> None:
        """Between DB retries: a lost lease ends the attempt instead of retrying for minutes."""
        if self._lost.is_set():
            raise StopRequested(STOP_LEASE_LOST, self._progress[0] if self._progress else 0)

    def _drain(self) -> list[tuple[str, int, float]]:
        with self._lock:
            batch, self._buffer = self._buffer, []
        return batch

    def _requeue(self, batch: list[tuple[str, int, float]]) -> None:
        with self._lock:
            self._buffer[:0] = batch

    def _sync_in(self, session: Session, batch: list[tuple[str, int, float]], *, final: bool) -> bool:
        """Extend the lease, write progress and upsert ``batch`` in ``session``; False if fenced out."""
        with self._lock:
            progress, rate, latest = self._progress, self._rate, dict(self._latest)
        now, ts = time.monotonic(), time.time()
        events: list[tuple[str, dict[str, object]]] = []
        if progress is not None and progress != self._sent_progress:
            step, total = progress
            eta = max(total - step, 0) / rate if rate else None
            events.append(
                ("progress", {"step": step, "total": total, "steps_per_second": rate, "eta_seconds": eta, "ts": ts})
            )
        metrics_due = now - self._sent_latest_at >= METRICS_EVENT_EVERY_S  # the job row has the final values
        if latest and latest != self._sent_latest and metrics_due:
            events.append(("metrics", {"step": progress[0] if progress else None, "values": latest, "ts": ts}))
        result = queries.sync_runner(
            session,
            job_id=self.claim.job_id,
            attempt=self.claim.attempt,
            lease_s=self.settings.lease_s,
            metrics=batch,
            progress=progress,
            steps_per_s=None if final else rate,
            latest=latest,
            events=events,
        )
        if result.alive and result.cancel_requested:
            self._cancel.set()
        if result.alive:  # remembered at once; if the commit then fails, the next sync sends them again
            self._sent_progress = progress
            if events and events[-1][0] == "metrics":
                self._sent_latest, self._sent_latest_at = latest, now
        return result.alive

    def sync(self) -> bool:
        """Heartbeat: lease, progress and events, then the metric rows; each transaction fenced.

        False if the lease is gone. The events commit (and are published) first, on their own: a
        flush's thousands of metric rows take tens of milliseconds to upsert, which clients following
        the events should not wait for. The rows follow in a second fenced transaction.
        """
        batch = self._drain()
        try:
            with transaction(self.ctx.sessions) as session:
                alive = self._sync_in(session, [], final=False)
                if not alive:
                    session.rollback()
            if alive and batch:
                with transaction(self.ctx.sessions) as session:
                    alive = queries.flush_metrics(
                        session, job_id=self.claim.job_id, attempt=self.claim.attempt, metrics=batch
                    )
                    if not alive:
                        session.rollback()
        except Exception:
            self._requeue(batch)
            self._sent_progress = None  # the events did not commit either: send them with the next sync
            raise
        if not alive:
            log.warning("job %s attempt %d: lease lost; stopping", self.claim.job_id, self.claim.attempt)
            self._lost.set()
        else:
            self.meter.rate(self._rate)
            try:
                self._judge(batch)
            except Exception as exc:  # a read failed: judge the tick at the next sync; never fail the job for it
                log.warning("job %s: early-stopping check failed: %s", self.claim.job_id, exc)
        return alive

    def _judge(self, flushed: list[tuple[str, int, float]]) -> None:
        """A sweep trial: judge it at each early-stopping tick its flushed objective has reached.

        Runs on the heartbeat thread after the flush, so the trial's own rows are in the table; a verdict
        makes ``should_stop`` say STOP_EARLY, and the loop checkpoints and leaves.
        """
        if self.early is not None:
            return
        if not self._trial_read:
            with transaction(self.ctx.sessions) as session:
                self._trial = queries.trial_rule(session, job_id=self.claim.job_id)
            self._trial_read = True
        trial = self._trial
        if trial is None:
            return
        self._reached = max([self._reached, *(step for name, step, _ in flushed if name == trial.metric)])
        for tick in trial.rule.ticks(self._reached + 1):
            if tick <= self._judged_upto:
                continue
            with transaction(self.ctx.sessions) as session:
                own, others = queries.standings(session, rule=trial, job_id=self.claim.job_id, step=tick)
            self._judged_upto = tick
            if own is None:
                continue
            verdict = judge(trial.rule, metric=trial.metric, mode=trial.mode, step=tick, own=own, others=others)
            if verdict is not None:
                log.info("job %s: %s", self.claim.job_id, verdict.message)
                self.early = verdict
                return

    def finish(
        self,
        state: JobState,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        early_stop: Verdict | None = None,
    ) -> bool:
        """Flush what is buffered and move the job to ``state``, fenced."""
        self.close()
        batch = self._drain()

        def write() -> bool:
            with transaction(self.ctx.sessions) as session:
                if not self._sync_in(session, batch, final=True):
                    session.rollback()
                    return False
                return queries.finish_job(
                    session,
                    job_id=self.claim.job_id,
                    attempt=self.claim.attempt,
                    state=state,
                    error_code=error_code,
                    error_message=clean_error_text(error_message) if error_message else None,
                    early_stop=early_stop.as_json() if early_stop is not None else None,
                )

        done = db_retry(write, what="finishing the job")
        if not done:
            log.warning("job %s attempt %d: fenced out at finish", self.claim.job_id, self.claim.attempt)
        elif state == JobState.QUEUED:
            self.meter.handed_back()
        return done

    # --- TrainHooks ------------------------------------------------------------------

    def report_metrics(self, step: int, values: dict[str, float]) -> None:
        """Buffer metrics; the sync thread flushes them."""
        with self._lock:
            for name, value in values.items():
                self._buffer.append((name, step, float(value)))
                self._latest[name] = float(value)

    def report_progress(self, step: int, total: int) -> None:
        """Remember progress and a smoothed rate for the ETA."""
        now = time.monotonic()
        self._main_mark = now
        with self._lock:
            if self._rate_mark is not None and step > self._rate_mark[1] and now > self._rate_mark[0]:
                rate = (step - self._rate_mark[1]) / (now - self._rate_mark[0])
                self._rate = rate if self._rate is None else RATE_SMOOTHING * rate + (1 - RATE_SMOOTHING) * self._rate
            if self._rate_mark is None or now - self._rate_mark[0] >= 1.0 or self._rate is None:
                self._rate_mark = (now, step)
            self._progress = (step, total)

    def _hold_before_upload(self, what: str) -> None:
        """Check the lease before an upload: a worker that lost its job (a zombie whose job was then deleted and
        purged) must not put objects back under the job's prefix. Uploads come before their fenced commit, so
        without this a zombie would leave orphans behind a purge."""

        def read() -> bool:
            with transaction(self.ctx.sessions) as session:
                return queries.holds(session, job_id=self.claim.job_id, attempt=self.claim.attempt)

        if not db_retry(read, what=f"checking the lease before {what}", before_retry=self._give_up_if_lost):
            log.warning(
                "job %s attempt %d: lease lost before %s; not uploading", self.claim.job_id, self.claim.attempt, what
            )
            self._lost.set()
            raise StopRequested(STOP_LEASE_LOST, self._progress[0] if self._progress else 0)

    def _put(self, key: str, data: bytes, content_type: str, what: str) -> None:
        self._hold_before_upload(what)
        retry_storage(
            lambda: self.ctx.store.put(key, data, content_type=content_type),
            deadline_s=self.settings.storage_retry_deadline_s,
            what=what,
        )

    def _check_storage(self, adding: int, what: str, *, replacing: int = 0) -> None:
        """A tenant with a storage quota: fail the job, clearly and before anything is written, if storing
        ``adding`` bytes (in place of ``replacing``) would pass it. No quota: one primary-key read."""

        def read() -> queries.Stored | None:
            with transaction(self.ctx.sessions) as session:
                if queries.storage_quota(session, tenant_id=self.claim.tenant_id) is None:
                    return None
                return queries.stored(session, tenant_id=self.claim.tenant_id)

        use = db_retry(read, what=f"checking the storage quota before {what}", before_retry=self._give_up_if_lost)
        if use is not None and use.over(adding - replacing):
            raise JobFailed(f"{what} ({len_text(adding)}): {use.advice(adding - replacing)}", code=STORAGE_QUOTA)

    def save_checkpoint(self, step: int, data: bytes) -> None:
        """Upload first, then commit the pointer together with the metrics up to ``step``; then delete the
        checkpoint it replaces (nothing resumes from an older one), so a job keeps one."""
        key = job_key(self.claim.job_id, "checkpoints", f"a{self.claim.attempt}-step-{step:08d}.pt")
        previous = db_retry(self._pointer, what="reading the checkpoint pointer", before_retry=self._give_up_if_lost)
        self._check_storage(len(data), f"the checkpoint at step {step}", replacing=previous[1])
        upload_started = time.monotonic()
        self._put(key, data, "application/octet-stream", f"checkpoint upload at step {step}")
        self.meter.checkpoint_uploaded(time.monotonic() - upload_started)
        batch = self._drain()

        def commit() -> bool:
            with transaction(self.ctx.sessions) as session:
                ok = queries.commit_checkpoint(
                    session,
                    job_id=self.claim.job_id,
                    attempt=self.claim.attempt,
                    key=key,
                    step=step,
                    metrics=batch,
                    size=len(data),
                )
                if not ok:
                    session.rollback()
                return ok

        try:
            ok = db_retry(commit, what=f"committing checkpoint {step}", before_retry=self._give_up_if_lost)
        except Exception:
            self._requeue(batch)
            raise
        if not ok:
            self._lost.set()
            raise StopRequested(STOP_LEASE_LOST, step)
        old_key = previous[0]
        if old_key is not None and old_key != key:
            try:
                self.ctx.store.delete(old_key)
            except Exception as exc:  # the orphan collector removes it later: no row points to it
                log.warning("job %s: could not delete the replaced checkpoint %s: %s", self.claim.job_id, old_key, exc)

    def _pointer(self) -> tuple[str | None, int]:
        with transaction(self.ctx.sessions) as session:
            return queries.checkpoint_pointer(session, job_id=self.claim.job_id)

    def load_checkpoint(self) -> bytes | None:
        """The checkpoint this attempt resumes from (committed by an earlier attempt)."""
        key = self.claim.checkpoint_key
        if key is None:
            return None
        log.info("job %s: resuming from %s", self.claim.job_id, key)
        return retry_storage(
            lambda: self.ctx.store.get(key),
            deadline_s=self.settings.storage_retry_deadline_s,
            what="checkpoint download",
        )

    def save_artifact(self, name: str, data: bytes, *, kind: str, content_type: str) -> None:
        """Upload an output under this attempt's prefix, then record it (fenced); within the per-job caps."""
        self.limits.admit_artifact(name, len(data))
        self._check_storage(len(data), f"the artifact {name}")
        key = self._artifact_key(name, kind)
        self._put(key, data, content_type, f"artifact {name}")
        self._record_artifact(name, kind, key, len(data), hashlib.sha256(data).hexdigest(), content_type)

    def save_artifact_file(self, name: str, path: Path, *, kind: str, content_type: str) -> None:
        """save_artifact for an output written to a file (a batch's zip): streamed, never read whole."""
        size = path.stat().st_size
        self.limits.admit_artifact(name, size)
        self._check_storage(size, f"the artifact {name}")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(FILE_CHUNK_BYTES):
                digest.update(chunk)
        key = self._artifact_key(name, kind)
        self._hold_before_upload(f"artifact {name}")
        retry_storage(
            lambda: self.ctx.store.put_file(key, path, content_type=content_type),
            deadline_s=self.settings.storage_retry_deadline_s,
            what=f"artifact {name}",
        )
        self._record_artifact(name, kind, key, size, digest.hexdigest(), content_type)

    def _artifact_key(self, name: str, kind: str) -> str:
        return job_key(self.claim.job_id, ARTIFACT_SECTIONS.get(kind, "outputs"), f"a{self.claim.attempt}/{name}")

    def _record_artifact(self, name: str, kind: str, key: str, size: int, sha256: str, content_type: str) -> None:
        def record() -> bool:
            with transaction(self.ctx.sessions) as session:
                return queries.record_artifact(
                    session,
                    job_id=self.claim.job_id,
                    attempt=self.claim.attempt,
                    name=name,
                    kind=kind,
                    key=key,
                    size=size,
                    sha256=sha256,
                    content_type=content_type,
                    step=self._progress[0] if self._progress else None,
                )

        if not db_retry(record, what=f"recording artifact {name}", before_retry=self._give_up_if_lost):
            self._lost.set()

    def _recorded_artifacts(self) -> dict[str, int]:
        """Sizes by name of the artifacts this job's attempts recorded so far (for the per-job caps)."""

        def read() -> dict[str, int]:
            with transaction(self.ctx.sessions) as session:  # one page: past the cap, the rest doesn't matter
                page = queries.list_artifacts(
                    session, job_id=self.claim.job_id, limit=self.settings.max_job_artifacts + 1, cursor=None
                )
                return {a.name: a.size for a in page.items}

        return db_retry(read, what="reading the job's artifacts", before_retry=self._give_up_if_lost)

    def _first_started_at(self) -> datetime | None:
        """When the job's first attempt started (max_runtime_s counts from there)."""

        def read() -> datetime | None:
            with transaction(self.ctx.sessions) as session:
                return queries.get_job(session, tenant_id=self.claim.tenant_id, job_id=self.claim.job_id).started_at

        return db_retry(read, what="reading when the job started", before_retry=self._give_up_if_lost)

    def warn(self, message: str) -> None:
        """Attach a warning to the job (fenced)."""

        def write() -> bool:
            with transaction(self.ctx.sessions) as session:
                return queries.add_warning(
                    session, job_id=self.claim.job_id, attempt=self.claim.attempt, message=message
                )

        if not db_retry(write, what="recording a warning", before_retry=self._give_up_if_lost):
            self._lost.set()

    def should_stop(self) -> str | None:
        """Lease lost beats cancel beats early stopping beats shutdown (a SIGTERM, or the watchdog's hand-back)."""
        self._main_mark = time.monotonic()
        if self._lost.is_set():
            return STOP_LEASE_LOST
        if self._cancel.is_set():
            return STOP_CANCEL
        if self.early is not None:
            return STOP_EARLY
        self.limits.check_runtime()  # past max_runtime_s: JobFailed
        if self.ctx.shutdown.is_set() or self._handback.is_set():
            return STOP_SHUTDOWN
        return None


Executor = Callable[[WorkerContext, queries.Claim, JobRunner], None]


def run_job(
    ctx: WorkerContext,
    job_id: uuid.UUID,
    execute: Executor,
    *,
    on_ended: Callable[[uuid.UUID], None] | None = None,
    exact: bool = False,
    capacity: int | None = None,
) -> str:
    """Claim the fairest job of ``job_id``'s queue (the message is a wake-up: shared/db/queries/scheduling.py),
    run it through ``execute`` with heartbeats, and record the outcome.

    Returns what happened: skipped (nothing claimable: a duplicate delivery, or every tenant with queued work
    at its running limit), succeeded, failed, cancelled, stopped_early (a sweep's rule), released (handed back on shutdown) or lost (fenced
    out). ``on_ended`` gets the id of the job that ran, once its attempt is over (a running-limited tenant's
    next job then needs a wake-up). ``exact`` claims ``job_id`` itself or nothing: for callers that run one
    given job in process (tests of the execution path), never for messages. ``capacity``: the device memory
    this worker has free; a job whose estimate is over it is left to a worker that has it.
    """

    if ctx.shutdown.is_set():  # shutting down: leave it queued; the reconciler re-sends it
        log.info("job %s not claimed: this worker is shutting down", job_id)
        return "skipped"

    def claim_it() -> queries.Claim | None:
        with transaction(ctx.sessions) as session:
            if exact:
                return queries.claim_job(session, job_id=job_id, owner=ctx.owner, lease_s=ctx.settings.lease_s)
            return queries.claim_next(
                session,
                job_id=job_id,
                owner=ctx.owner,
                lease_s=ctx.settings.lease_s,
                window_s=ctx.settings.fair_share_window_s,
                capacity=capacity,
            )

    claim = db_retry(claim_it, what="claiming")
    if claim is None:
        log.info(
            "job %s is not claimable (running elsewhere, finished, cancelled, or its tenant at its running limit); "
            "nothing else to run on its queue",
            job_id,
        )
        return "skipped"
    if claim.job_id != job_id:
        why = (
            "waits its turn"
            if claim.named_claimable
            else "is not claimable (running elsewhere, finished, or cancelled)"
        )
        log.info("job %s %s; its message runs job %s, the fairest of its queue", job_id, why, claim.job_id)
    log.info(
        "job %s (%s) claimed: attempt %d by %s (woken by the message for %s)",
        claim.job_id,
        claim.job_type,
        claim.attempt,
        ctx.owner,
        job_id,
    )
    runner = JobRunner(ctx, claim)
    runner.meter.attempt_started()
    runner.start()
    if ctx.watchdog is not None:
        ctx.watchdog.watch(str(claim.job_id), runner)
    try:
        return _execute(ctx, claim, runner, execute)
    finally:
        if ctx.watchdog is not None:
            ctx.watchdog.done()
        if on_ended is not None:
            on_ended(claim.job_id)


def _execute(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner, execute: Executor) -> str:
    """Run the claimed job, record how it ended, and observe the attempt's duration by outcome."""
    started = time.monotonic()
    outcome = OUTCOME_ERROR  # finishing itself failed (the database stayed down): the lease decides
    try:
        outcome = _run_claimed(ctx, claim, runner, execute)
    except TransientError:
        outcome = OUTCOME_REQUEUED
        raise
    finally:
        runner.meter.finished(outcome, time.monotonic() - started)
    return outcome


def _run_claimed(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner, execute: Executor) -> str:
    """Run the claimed job and record how it ended."""
    job_id = claim.job_id
    try:
        execute(ctx, claim, runner)
    except StopRequested as stop:
        return _stopped(runner, stop)
    except (JobFailed, StorageUnavailable) as exc:  # StorageUnavailable: retried up to its deadline already
        runner.finish(JobState.FAILED, error_code=exc.code, error_message=exc.message)
        return "failed"
    except TransientError:
        runner.finish(JobState.QUEUED)
        raise
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        detail = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc)[-3:])
        runner.finish(JobState.FAILED, error_code=INTERNAL_ERROR, error_message=detail)
        return "failed"
    runner.finish(JobState.SUCCEEDED)
    return "succeeded"


def _stopped(runner: JobRunner, stop: StopRequested) -> str:
    if stop.reason == STOP_LEASE_LOST:
        runner.close()
        return "lost"
    if stop.reason == STOP_CANCEL:
        runner.finish(JobState.CANCELLED)
        return "cancelled"
    if stop.reason == STOP_EARLY and runner.early is not None:  # the checkpoint of the stopping step is kept
        runner.finish(JobState.STOPPED_EARLY, early_stop=runner.early)
        return "stopped_early"
    runner.finish(JobState.QUEUED)  # shutdown: hand the job back now; it resumes from its checkpoint
    return "released"
