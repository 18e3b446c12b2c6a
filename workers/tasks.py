"""Thin Celery tasks: parse the id, call the runtime. Auto-retry only on TransientError."""

from __future__ import annotations

import logging
import signal
import uuid

from celery import Celery, Task

from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from shared.errors import TransientError
from shared.queue import (
    COLLECT_ORPHANS_TASK,
    DELIVER_WEBHOOK_TASK,
    PURGE_TASK,
    RECONCILE_TASK,
    RETENTION_TASK,
    RUN_JOB_TASK,
    send_purge,
    send_run_job,
)
from workers.runtime import WorkerContext
from workers.threads import apply_worker_threads

log = logging.getLogger(__name__)

RETRY_BACKOFF_MAX_S = 300
MAX_TRANSIENT_RETRIES = 5


class _Context:
    """The per-process WorkerContext, built lazily in the child (never in the parent)."""

    settings: Settings | None = None
    ctx: WorkerContext | None = None


def register_tasks(app: Celery, settings: Settings) -> None:
    """Define run_job, reconcile, purge_deleted, collect_orphans and deliver_webhook on ``app``."""
    _Context.settings = settings

    @app.task(
        name=RUN_JOB_TASK,
        bind=True,
        autoretry_for=(TransientError,),
        retry_backoff=True,
        retry_backoff_max=RETRY_BACKOFF_MAX_S,
        max_retries=MAX_TRANSIENT_RETRIES,
    )
    def run_job(self: Task, job_id: str) -> str:
        """Claim and run one job by id."""
        from workers.engines import execute
        from workers.runtime import run_job as run

        try:
            parsed = uuid.UUID(job_id)
        except ValueError:
            log.error("dropping message with a malformed job id %r", job_id)
            return "malformed"
        ctx = worker_context()
        apply_worker_threads(ctx.settings)  # a share of the cores among the workers alive now
        _checkpoint_on_sigterm(ctx)
        from workers.presence import probe

        capacity = probe(ctx.settings).free_bytes  # the claim takes only a job that fits
        return run(ctx, parsed, execute, on_ended=lambda ran: _after_attempt(ctx, app, ran), capacity=capacity)

    @app.task(name=RECONCILE_TASK)
    def reconcile() -> dict[str, int]:
        """Requeue lost jobs and re-send lost messages."""
        from workers.reconciler import reconcile as run_reconcile

        return run_reconcile(worker_context(), app)

    @app.task(name=PURGE_TASK)
    def purge_deleted() -> int:
        """Purge deleted jobs: their objects, metric rows and rows (workers/lifecycle.py)."""
        from workers.lifecycle import purge_deleted as purge

        return purge(worker_context())

    @app.task(name=COLLECT_ORPHANS_TASK)
    def collect_orphans() -> dict[str, int]:
        """Delete objects no row points to, older than the grace (workers/lifecycle.py)."""
        from workers.lifecycle import collect_orphans as collect

        ctx = worker_context()
        return collect(ctx, grace_s=ctx.settings.orphan_grace_s).report()

    @app.task(name=RETENTION_TASK)
    def apply_retention() -> dict[str, int]:
        """Apply tenants' retention settings to their ended jobs (workers/retention.py)."""
        from workers.retention import apply_retention as apply

        return apply(worker_context())

    @app.task(name=DELIVER_WEBHOOK_TASK)
    def deliver_webhook(delivery_id: str) -> str:
        """One attempt at a webhook delivery by id (retries come from the reconciler's sweep)."""
        from workers.webhooks import deliver

        try:
            parsed = uuid.UUID(delivery_id)
        except ValueError:
            log.error("dropping message with a malformed delivery id %r", delivery_id)
            return "malformed"
        return deliver(worker_context(), parsed)


def _after_attempt(ctx: WorkerContext, app: Celery, job_id: uuid.UUID) -> None:
    """An attempt ended: wake a worker for a held-back job; if the job was deleted meanwhile, have it purged."""
    _wake_held_back(ctx, app, job_id)
    try:
        with transaction(ctx.sessions) as session:
            deleted = queries.is_deleted(session, job_id=job_id)
        if deleted:
            send_purge(app)
    except Exception as exc:  # the reconciler purges it on its next pass
        log.warning("could not ask for the purge of deleted job %s: %s", job_id, exc)


def _wake_held_back(ctx: WorkerContext, app: Celery, job_id: uuid.UUID) -> None:
    """A running-limited tenant's job ended: wake a worker for its next queued job on the queue.

    Claims skip a tenant at its limit and spend the message they came with, so without this its held-back
    jobs would wait for the reconciler's re-send. Best effort: the reconciler remains the backstop.
    """
    try:
        with transaction(ctx.sessions) as session:
            held_back = queries.next_held_back(session, ended_job_id=job_id)
        if held_back is not None:
            send_run_job(app, job_id=held_back[0], queue=held_back[1])
    except Exception as exc:
        log.warning("could not wake a worker for a held-back job after %s: %s", job_id, exc)


def _checkpoint_on_sigterm(ctx: WorkerContext) -> None:
    """Deploys and scale-downs send SIGTERM: checkpoint at the next step and hand the job back.

    Installed when the task starts, because billiard resets the pool child's handlers after
    worker_process_init.
    """

    def on_term(_signum: int, _frame: object) -> None:
        ctx.shutdown.set()

    signal.signal(signal.SIGTERM, on_term)


def worker_context() -> WorkerContext:
    """The process's WorkerContext (created on first use, after the fork)."""
    if _Context.ctx is None:
        assert _Context.settings is not None, "register_tasks() was not called"
        _Context.ctx = WorkerContext.build(_Context.settings)
    return _Context.ctx
