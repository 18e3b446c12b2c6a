"""Celery configuration shared by the API (which only sends) and the workers. Never imports torch.

Messages carry only a job id; Postgres holds everything else.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from celery import Celery
from kombu import Queue

from shared.config import Settings
from shared.jobs.params import QUEUE_CPU, QUEUE_GPU

RUN_JOB_TASK = "atelier.run_job"
RECONCILE_TASK = "atelier.reconcile"
DELIVER_WEBHOOK_TASK = "atelier.deliver_webhook"
PURGE_TASK = "atelier.purge_deleted"
COLLECT_ORPHANS_TASK = "atelier.collect_orphans"
RETENTION_TASK = "atelier.apply_retention"
WORKER_BOOT_TIMEOUT_S = 120.0


def task_id_for(job_id: object, nonce: str) -> str:
    """Celery task ids name the job, so the reconciler can see which jobs the broker holds."""
    return f"job:{job_id}:{nonce}"


def job_id_from_task_id(task_id: str) -> str | None:
    """Inverse of task_id_for; None for other tasks."""
    parts = task_id.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "job" else None


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from settings (explicit queues, late acks, prefetch 1)."""
    app = Celery("atelier", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        # A pool child imports torch and the engines before it reports "up"; on a loaded host
        # that takes far longer than Celery's 4 s default, after which the child is killed.
        worker_proc_alive_timeout=WORKER_BOOT_TIMEOUT_S,
        task_queues=(Queue(QUEUE_GPU), Queue(QUEUE_CPU)),
        task_default_queue=QUEUE_CPU,
        task_create_missing_queues=False,
        task_routes={
            RUN_JOB_TASK: {"queue": QUEUE_GPU},
            RECONCILE_TASK: {"queue": QUEUE_CPU},
            DELIVER_WEBHOOK_TASK: {"queue": QUEUE_CPU},
            PURGE_TASK: {"queue": QUEUE_CPU},
            COLLECT_ORPHANS_TASK: {"queue": QUEUE_CPU},
            RETENTION_TASK: {"queue": QUEUE_CPU},
        },
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Above the longest job: the Postgres lease detects dead workers much sooner.
            "visibility_timeout": settings.visibility_timeout_s,
            # A silent Redis (no reset) is noticed within a few seconds, well inside a lease.
            "socket_timeout": settings.redis_timeout_s,
            "socket_connect_timeout": settings.redis_timeout_s,
            "socket_keepalive": True,
            "health_check_interval": settings.keepalive_idle_s,
        },
        broker_connection_timeout=settings.redis_timeout_s,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": timedelta(seconds=settings.reconcile_period_s),
                "options": {"queue": QUEUE_CPU, "expires": settings.reconcile_period_s * 2},
            },
            "collect-orphans": {
                "task": COLLECT_ORPHANS_TASK,
                "schedule": timedelta(seconds=settings.orphan_gc_period_s),
                "options": {"queue": QUEUE_CPU, "expires": settings.orphan_gc_period_s},
            },
            "apply-retention": {
                "task": RETENTION_TASK,
                "schedule": timedelta(seconds=settings.retention_period_s),
                "options": {"queue": QUEUE_CPU, "expires": settings.retention_period_s},
            },
        },
        beat_schedule_filename=str(settings.beat_schedule_path),
        timezone="UTC",
    )
    return app


def send_run_job(app: Celery, *, job_id: object, queue: str) -> None:
    """Hand one job id to the broker. Raises kombu/redis errors if Redis is down."""
    app.send_task(RUN_JOB_TASK, args=[str(job_id)], queue=queue, task_id=task_id_for(job_id, uuid.uuid4().hex[:12]))


def send_webhook_deliveries(app: Celery, delivery_ids: Sequence[uuid.UUID]) -> None:
    """Hand webhook deliveries (by id) to the ``cpu`` queue. Raises kombu/redis errors if Redis is down."""
    for delivery_id in delivery_ids:
        app.send_task(DELIVER_WEBHOOK_TASK, args=[str(delivery_id)], queue=QUEUE_CPU)


def send_purge(app: Celery) -> None:
    """Ask a ``cpu`` worker to purge the deleted jobs no runner holds. Raises kombu/redis errors if Redis is down."""
    app.send_task(PURGE_TASK, queue=QUEUE_CPU)
