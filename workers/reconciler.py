"""The reconciler (run by Celery beat): Postgres is the truth, Redis only transport.

1. Running jobs whose lease expired are re-queued (or failed once attempts are used up,
   or cancelled if a cancel was requested) and their ids re-sent.
2. Each queue gets as many waiting messages as it has queued jobs (a message wakes a worker, whose claim
   takes the queue's fairest job): the shortfall is re-sent for queued jobs past their grace without a
   message of their own, so a Redis flush or restart loses no job. Duplicate messages are harmless: a
   claim succeeds once, and a claim with nothing to take is skipped.
3. Deleted jobs no runner holds are purged (workers/lifecycle.py), finishing any purge that died half way.
4. Webhook deliveries that are due (a retry whose time came, a claim refused by the tenant's cap,
   or a message that never arrived) are sent to the ``cpu`` queue; an attempt's claim succeeds once.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable

import redis
from celery import Celery

from shared.db import queries
from shared.db.session import transaction
from shared.jobs.params import QUEUE_CPU, QUEUE_GPU
from shared.queue import job_id_from_task_id, send_run_job, send_webhook_deliveries
from workers.lifecycle import purge_deleted
from workers.runtime import WorkerContext

log = logging.getLogger(__name__)

RESEND_BATCH = 1000
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
PROBE_TIMEOUT_S = 5.0


def _queue_keys(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS]


def waiting_messages(client: redis.Redis, queues: Iterable[str]) -> dict[str, list[str]]:
    """Per queue, the job ids of the run_job messages waiting in its ready lists, one entry per message
    (unacked ones don't count: after the grace period they belong to a dead worker)."""
    found: dict[str, list[str]] = {}
    for queue in queues:
        ids = found.setdefault(queue, [])
        for key in _queue_keys(queue):
            for raw in client.lrange(key, 0, -1):
                try:
                    task_id = json.loads(raw)["headers"]["id"]
                except (ValueError, KeyError, TypeError):
                    continue
                job_id = job_id_from_task_id(str(task_id))
                if job_id:
                    ids.append(job_id)
    return found


def to_resend(
    candidates: list[tuple[uuid.UUID, str]], waiting: dict[str, list[str]], queued: dict[str, int]
) -> list[tuple[uuid.UUID, str]]:
    """Which queued jobs past their grace need a new message.

    A message wakes a worker for its queue and the claim takes that queue's fairest job, not necessarily the
    one it names (shared/db/queries/scheduling.py). So a queue needs as many waiting messages as it has
    queued jobs, whichever jobs they name: only the shortfall is sent, for candidates without a message of
    their own, oldest first.
    """
    resend: list[tuple[uuid.UUID, str]] = []
    for queue in sorted({q for _j, q in candidates}):
        named = set(waiting.get(queue, []))
        shortfall = queued.get(queue, 0) - len(waiting.get(queue, []))
        missing = [(j, q) for j, q in candidates if q == queue and str(j) not in named]
        resend += missing[: max(shortfall, 0)]
    return resend


def _send(ctx: WorkerContext, app: Celery, jobs: list[tuple[uuid.UUID, str]]) -> int:
    sent: list[uuid.UUID] = []
    for job_id, queue in jobs:
        try:
            send_run_job(app, job_id=job_id, queue=queue)
            sent.append(job_id)
        except Exception as exc:
            log.warning("reconciler: could not send job %s: %s", job_id, exc)
            break
    with transaction(ctx.sessions) as session:
        queries.mark_enqueued(session, job_ids=sent)
    return len(sent)


def _send_due_webhooks(ctx: WorkerContext, app: Celery) -> int:
    """Hand due webhook deliveries to the queue (each is marked sent, so the next pass skips it)."""
    with transaction(ctx.sessions) as session:
        due = queries.deliveries_due(session, grace_s=ctx.settings.resend_grace_s, limit=RESEND_BATCH)
    if not due:
        return 0
    try:
        send_webhook_deliveries(app, due)
    except Exception as exc:  # marked sent: they are re-sent once resend_grace_s has passed
        log.warning("reconciler: could not send %d webhook deliveries: %s", len(due), exc)
        return 0
    return len(due)


def reconcile(ctx: WorkerContext, app: Celery) -> dict[str, int]:
    """One pass; returns counts of what it did."""
    with transaction(ctx.sessions) as session:
        expired = queries.expire_leases(session)
        queries.prune_presence(session)  # killed workers' rows (shared/db/queries/scheduling.py)
    for job_id in expired.failed:
        log.warning("reconciler: job %s failed, attempts exhausted", job_id)
    resent = _send(ctx, app, expired.requeued)
    with transaction(ctx.sessions) as session:
        candidates = queries.queued_needing_send(session, grace_s=ctx.settings.resend_grace_s, limit=RESEND_BATCH)
    if candidates:
        client = redis.Redis.from_url(
            ctx.settings.redis_url, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S
        )
        with client:
            waiting = waiting_messages(client, (QUEUE_GPU, QUEUE_CPU))
        with transaction(ctx.sessions) as session:
            queued = queries.queued_per_queue(session)
        missing = to_resend(candidates, waiting, queued)
        resent += _send(ctx, app, missing)
        sent = {j for j, _q in missing}
        with transaction(ctx.sessions) as session:  # the rest have a message, theirs or another's: wait a grace
            queries.mark_enqueued(session, job_ids=[j for j, _q in candidates if j not in sent])
    counts = {
        "requeued": len(expired.requeued),
        "failed": len(expired.failed),
        "cancelled": len(expired.cancelled),
        "resent": resent,
        "webhooks_sent": _send_due_webhooks(ctx, app),
        "purged": purge_deleted(ctx),
    }
    if any(counts.values()):
        log.info("reconciler: %s", counts)
    return counts
