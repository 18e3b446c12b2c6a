"""Every SQL statement Atelier runs, one module per caller:

- ``api``: the API's reads and writes, scoped by tenant;
- ``runner``: the claim and the writes fenced by ``attempt`` (the lease's fencing token), nothing else;
- ``sweeps``: the reconciler's sweeps, and the enqueue bookkeeping submit shares with it;
- ``webhooks``: webhook deliveries (claim, attempts, the due sweep, the API's listing) and signing secrets.

Callers use ``from shared.db import queries`` and ``queries.<name>``.
"""

from shared.db.queries.api import (
    ACTIVE_STATES,
    MetricPoint,
    Page,
    authenticate,
    create_api_key,
    create_job,
    create_tenant,
    create_upload,
    get_artifact,
    get_job,
    get_tenant_by_name,
    get_upload,
    list_artifacts,
    list_jobs,
    list_uploads,
    metric_names,
    metric_series,
    request_cancel,
    revoke_api_key,
)
from shared.db.queries.runner import (
    Claim,
    SyncResult,
    add_warning,
    claim_job,
    commit_checkpoint,
    finish_job,
    flush_metrics,
    record_artifact,
    sync_runner,
    upsert_metrics,
)
from shared.db.queries.sweeps import (
    Reconciled,
    expire_leases,
    mark_enqueued,
    queued_needing_send,
)
from shared.db.queries.webhooks import (
    ClaimedDelivery,
    DeliveryRecord,
    Refusal,
    WebhookSecret,
    claim_delivery,
    deliveries_due,
    ensure_webhook_secret,
    finish_attempt,
    list_deliveries,
    rotate_webhook_secret,
)

__all__ = [
    "ACTIVE_STATES",
    "Claim",
    "ClaimedDelivery",
    "DeliveryRecord",
    "MetricPoint",
    "Page",
    "Reconciled",
    "Refusal",
    "SyncResult",
    "WebhookSecret",
    "add_warning",
    "authenticate",
    "claim_delivery",
    "claim_job",
    "commit_checkpoint",
    "create_api_key",
    "create_job",
    "create_tenant",
    "create_upload",
    "deliveries_due",
    "ensure_webhook_secret",
    "expire_leases",
    "finish_attempt",
    "finish_job",
    "flush_metrics",
    "get_artifact",
    "get_job",
    "get_tenant_by_name",
    "get_upload",
    "list_artifacts",
    "list_deliveries",
    "list_jobs",
    "list_uploads",
    "mark_enqueued",
    "metric_names",
    "metric_series",
    "queued_needing_send",
    "record_artifact",
    "request_cancel",
    "revoke_api_key",
    "rotate_webhook_secret",
    "sync_runner",
    "upsert_metrics",
]
