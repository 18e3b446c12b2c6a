"""Python client for the Atelier API: submit GAN training, sampling and style-transfer jobs,
follow their events, read their metrics and download their artifacts.

    from atelier_client import Atelier

    with Atelier() as atelier:  # ATELIER_URL / ATELIER_API_KEY, or `atelier login`'s file
        job = atelier.submit("gan.train", {"dataset": "digits", "steps": 500})
        done = job.wait()
        done.download_artifacts("out")

A webhook receiver checks what it got with ``atelier_client.webhooks.verify(secret, headers, body)``.
"""

from atelier_client.client import AsyncAtelier, AsyncJobHandle, Atelier, JobHandle
from atelier_client.errors import (
    APIError,
    AtelierError,
    ClientError,
    ConfigError,
    Conflict,
    ConnectionFailed,
    DownloadError,
    InvalidInput,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMedia,
    WaitTimeout,
    WebhookVerificationError,
)
from atelier_client.models import (
    Artifact,
    ArtifactSaved,
    Deletion,
    Done,
    Event,
    Job,
    JobError,
    MetricPoint,
    MetricSeries,
    MetricsUpdate,
    Model,
    Page,
    Progress,
    ProgressUpdate,
    StateChange,
    Sweep,
    Trial,
    Upload,
    Usage,
    WarningRaised,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSecret,
)
from atelier_client.retry import RetryPolicy

__all__ = [
    "APIError",
    "Artifact",
    "ArtifactSaved",
    "AsyncAtelier",
    "AsyncJobHandle",
    "Atelier",
    "AtelierError",
    "ClientError",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "Deletion",
    "Done",
    "DownloadError",
    "Event",
    "InvalidInput",
    "Job",
    "JobError",
    "JobFailed",
    "JobHandle",
    "MetricPoint",
    "MetricSeries",
    "MetricsUpdate",
    "Model",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "Progress",
    "ProgressUpdate",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "StateChange",
    "Sweep",
    "Trial",
    "Unauthorized",
    "UnsupportedMedia",
    "Upload",
    "Usage",
    "WaitTimeout",
    "WarningRaised",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSecret",
    "WebhookVerificationError",
]
