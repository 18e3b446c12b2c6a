"""Atelier settings: one pydantic-settings object, env prefix ATELIER_, built at each entry point."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.webhooks import RETRY_SCHEDULE_S

DEFAULT_DATA_DIR = Path(".atelier")
SHARED_MEMORY_DIR = Path("/dev/shm")  # noqa: S108 - the worker registry is host-wide on purpose
WORKER_REGISTRY_NAME = "atelier-workers"
MIN_CALL_DEADLINE_S = 2.0  # no network deadline is shorter: a loaded host must not trip it
MAX_SOCKET_TIMEOUT_S = 30.0
KEEPALIVE_PROBES = 3
MIN_UPLOAD_MEMORY_BUDGET_BYTES = 16 * 1024 * 1024  # a few read chunks and one small image
DEFAULT_WORKER_DEVICE_MEMORY_BYTES = 16 * 1024**3  # a 16 GiB GPU (T4, V100 16 GB): refuses what fits few GPUs


class Settings(BaseSettings):
    """Every runtime knob of Atelier. Build it once per process and pass it down."""

    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore")

    environment: Literal["dev", "test", "production"] = "dev"
    data_dir: Path = DEFAULT_DATA_DIR

    # --- connections -------------------------------------------------------
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/atelier"
    redis_url: str = "redis://127.0.0.1:6379/0"

    # --- storage -----------------------------------------------------------
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path | None = None  # local backend; defaults to <data_dir>/objects
    s3_endpoint: str = "127.0.0.1:9000"  # host:port, as the minio SDK wants it
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_bucket: str = "atelier"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    presign_expiry_s: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    storage_retry_deadline_s: float = Field(default=120.0, gt=0)

    # --- leases, heartbeats, reconciler -------------------------------------
    lease_s: float = Field(default=60.0, gt=0)
    heartbeat_s: float = Field(default=10.0, gt=0)
    reconcile_period_s: float = Field(default=15.0, gt=0)
    resend_grace_s: float = Field(default=30.0, ge=0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    # Fair share (shared/db/queries/scheduling.py): a tenant's usage counts worker-seconds inside this window.
    fair_share_window_s: float = Field(default=3600.0, gt=0)
    metrics_flush_s: float = Field(default=2.0, gt=0)
    # The orphan collector (workers/lifecycle.py): objects no row points to, older than the grace, go; the grace
    # must be longer than any upload or checkpoint in flight (its object is written before its row).
    orphan_grace_s: float = Field(default=24 * 3600.0, ge=60)
    orphan_gc_period_s: float = Field(default=3600.0, gt=0)
    retention_period_s: float = Field(default=3600.0, gt=0)  # how often tenants' retention settings are applied
    visibility_timeout_s: int = Field(default=48 * 3600, ge=60)
    beat_schedule_file: Path | None = None  # defaults to <data_dir>/celerybeat-schedule

    # --- deadlines and the watchdog (docs/DESIGN.md, "Deadlines", "Watchdog") --
    # Every network call has a deadline, chosen from the lease so that a silent peer is noticed
    # well inside one lease (see the properties below). A database call that outlives
    # db_call_deadline_s (default: lease / 3, at least MIN_CALL_DEADLINE_S) has its socket shut
    # and fails as a dropped connection; the API's own queries get api_db_call_deadline_s.
    db_call_deadline_s: float | None = Field(default=None, gt=0)
    api_db_call_deadline_s: float = Field(default=30.0, gt=0)
    # A pool process whose job lost its lease, or whose main thread reached no stop check for
    # watchdog_stall_s, is asked to stop; if it has not within watchdog_grace_s (default: half a
    # lease) it exits and Celery replaces it. The stall time covers the longest step-free stretch
    # (a storage retry deadline, a dataset download), so it is long by default.
    watchdog_stall_s: float = Field(default=600.0, gt=0)
    watchdog_grace_s: float | None = Field(default=None, gt=0)

    # --- limits -------------------------------------------------------------
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)  # any other request body (JSON)
    max_upload_files: int = Field(default=10_000, gt=0)
    max_unpacked_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    max_compression_ratio: float = Field(default=200.0, gt=1)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    # Archives are unpacked as a stream to temp files (shared/archives.py). One upload may hold at
    # most this much memory in the API: read buffers, the one image being decoded (4 bytes a pixel)
    # and the one file being stored (twice); an image that needs more is refused with 413.
    upload_memory_budget_bytes: int = Field(default=256 * 1024 * 1024, ge=MIN_UPLOAD_MEMORY_BUDGET_BYTES)
    # Uploads one API process unpacks at once, in all and per tenant; one more gets 429 with Retry-After.
    upload_unpack_concurrency: int = Field(default=4, ge=1)
    upload_unpack_per_tenant: int = Field(default=2, ge=1)
    max_style_size: int = Field(default=2048, ge=32)
    # Device memory of each worker (its GPU's; docs/DESIGN.md, "Memory admission"). A job whose estimated
    # peak (shared/jobs/memory.py) is over it gets a 422 at submit. Never unset: the default is a 16 GiB
    # GPU's; set it to your workers' (an H100 80 GB: 85899345920). Workers check again against what is free.
    worker_device_memory_bytes: int = Field(default=DEFAULT_WORKER_DEVICE_MEMORY_BYTES, gt=0)
    # The same for style.transfer jobs only, where their workers differ. None: worker_device_memory_bytes.
    style_device_memory_bytes: int | None = Field(default=None, gt=0)
    # Trained style models a worker keeps loaded for style.apply (least recently used go first), in bytes of
    # weights on the device. 0 keeps none: every apply loads its model again.
    style_model_cache_bytes: int = Field(default=512 * 1024**2, ge=0)
    # Per job: a job whose artifacts (sample grids, snapshots, outputs) could pass these gets a 422 at
    # submit; a worker fails a job that reaches them anyway (error code artifact_limit).
    max_job_artifacts: int = Field(default=1000, ge=1)
    max_job_artifact_bytes: int = Field(default=4 * 1024**3, gt=0)
    page_size_max: int = Field(default=200, ge=1)
    # Requests per second per tenant (a token bucket in Redis), and how many may come at once;
    # 0 disables. Over it: 429 with Retry-After. If Redis is down, requests are let through.
    rate_limit_per_s: float = Field(default=200.0, ge=0)
    rate_limit_burst: int = Field(default=400, ge=1)
    # Failed authentications (an unknown, revoked or missing API key) per second per client
    # address (request.client.host; an IPv6 /64 counts as one), and how many may come at once;
    # 0 disables. Over it: 429 with Retry-After for the address's keyed requests, before any key
    # lookup, until a token is free; keys that authenticated in that API process still pass.
    unknown_key_rate_per_s: float = Field(default=5.0, ge=0)
    unknown_key_burst: int = Field(default=20, ge=1)
    # GET /v1/jobs/{id} reuses a read this long (per key and job; 0 disables). Job rows change
    # once per heartbeat at most; a revoked key may still read for this long.
    job_read_cache_s: float = Field(default=0.2, ge=0, le=5.0)

    # --- the HTTP edge (services/api/edge.py) --------------------------------
    # A connection must deliver a whole request head within http_header_timeout_s of opening (or
    # of its previous response), and body bytes at least every http_body_timeout_s while the API
    # reads a body; otherwise it is closed. At most http_max_idle_per_client connections of one
    # client address may wait for a request at once; one more closes its oldest (0: no cap).
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    http_body_timeout_s: float = Field(default=30.0, gt=0)
    http_max_idle_per_client: int = Field(default=64, ge=0)

    # --- live events and webhooks (docs/DESIGN.md, "Job events") --------------
    # An SSE stream sends a comment line this often when it has no event to send, so that proxies
    # keep it open and clients see it is alive; a client that reads nothing for events_send_timeout_s
    # while the API has something to send is disconnected.
    events_heartbeat_s: float = Field(default=15.0, gt=0)
    events_send_timeout_s: float = Field(default=30.0, gt=0)
    # POST /v1/jobs with "Prefer: wait=N" holds the request at most this long.
    max_prefer_wait_s: int = Field(default=60, ge=1, le=300)
    # Webhook targets must resolve to public addresses only (shared/webhooks.py), except these hosts
    # (exact names or IPs; a JSON list in the environment, e.g. '["127.0.0.1","localhost"]').
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    # One attempt (resolve, connect, send, read the answer's head) has this long in all.
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    # Seconds between attempts (each +-20 % jitter); after the last wait's attempt fails, the delivery
    # is failed. The default waits about 2 h in all.
    webhook_retry_schedule_s: tuple[float, ...] = Field(default=RETRY_SCHEDULE_S, min_length=1, max_length=30)
    # Deliveries of one tenant in flight at once, so one slow receiver can't hold every cpu worker.
    webhook_per_tenant_concurrency: int = Field(default=2, ge=1)

    # --- worker -------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = "auto"
    worker_name: str | None = None
    torch_home: Path | None = None  # where torchvision weights are cached
    # Intra-op threads per worker child. None: each takes its share of the cores it may use, among the
    # torch workers registered in worker_registry_dir (workers/threads.py), re-counted at every job start.
    torch_threads: int | None = Field(default=None, ge=1, le=256)
    worker_registry_dir: Path | None = None  # host-wide; defaults to /dev/shm/atelier-workers (or the temp dir)
    allow_weight_download: bool = True  # fetch ImageNet weights when they are not cached
    # torchvision datasets (mnist, fashion-mnist, cifar10) live here; default <data_dir>/datasets.
    data_cache_dir: Path | None = None
    allow_data_download: bool = True  # fetch a torchvision dataset that is not in the cache
    # At most this much device memory counts as available to a job (default: what the device
    # reports free); a style job whose estimate is over what is available fails before it starts.
    device_memory_limit_bytes: int | None = Field(default=None, gt=0)

    # --- metrics (Prometheus; docs/DESIGN.md, "Metrics") --------------------------
    # GET /metrics on the API is open by default (keep it off the public network); when this is set,
    # it answers only requests with `Authorization: Bearer <metrics_token>`.
    metrics_token: str | None = Field(default=None, min_length=1)
    # A worker's Celery parent process serves its pool processes' metrics (prometheus-client's
    # multiprocess mode, PROMETHEUS_MULTIPROC_DIR) on this port at /metrics. None: not served.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("s3_endpoint")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        """Accept http://host:port too; the minio SDK wants host:port."""
        for prefix in ("http://", "https://"):
            if value.startswith(prefix):
                return value[len(prefix) :].rstrip("/")
        return value.rstrip("/")

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _positive_waits(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        """Every wait between webhook attempts is positive."""
        if any(step <= 0 for step in value):
            raise ValueError("every wait must be greater than 0")
        return value

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.environment == "production" and self.storage_backend == "s3" and self.s3_secret_key == "minioadmin":
            raise ValueError("ATELIER_S3_SECRET_KEY must be changed from the default in production")
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("ATELIER_HEARTBEAT_S must be shorter than ATELIER_LEASE_S")
        return self

    @property
    def db_deadline_s(self) -> float:
        """Longest one database call of a worker may take before its connection is dropped."""
        return self.db_call_deadline_s or max(MIN_CALL_DEADLINE_S, self.lease_s / 3)

    @property
    def keepalive_idle_s(self) -> int:
        """TCP keepalive: idle seconds before the first probe (then KEEPALIVE_PROBES, 1 probe per this / 2)."""
        return max(1, int(self.lease_s / 6))

    @property
    def redis_timeout_s(self) -> float:
        """Socket timeout of every Redis connection (the broker's included)."""
        return max(MIN_CALL_DEADLINE_S, min(MAX_SOCKET_TIMEOUT_S, self.lease_s / 6))

    @property
    def s3_read_timeout_s(self) -> float:
        """Longest an S3 request may wait for the server's next bytes."""
        return max(MIN_CALL_DEADLINE_S, min(MAX_SOCKET_TIMEOUT_S, self.lease_s / 3))

    @property
    def watchdog_grace(self) -> float:
        """How long a pool process asked to stop may take to reach a stop check before it exits."""
        return self.watchdog_grace_s or self.lease_s / 2

    @property
    def style_memory_budget(self) -> int:
        """Device memory a style.transfer job may need at most (its 422 limit at submit)."""
        return self.style_device_memory_bytes or self.worker_device_memory_bytes

    @property
    def objects_dir(self) -> Path:
        """Root of the local object store."""
        return self.storage_dir or (self.data_dir / "objects")

    @property
    def datasets_dir(self) -> Path:
        """Where workers find (or download) torchvision datasets."""
        return self.data_cache_dir or (self.data_dir / "datasets")

    @property
    def worker_registry_path(self) -> Path:
        """Where torch worker processes register, so each takes a share of the host's cores."""
        if self.worker_registry_dir is not None:
            return self.worker_registry_dir
        base = SHARED_MEMORY_DIR if SHARED_MEMORY_DIR.is_dir() else Path(tempfile.gettempdir())
        return base / WORKER_REGISTRY_NAME

    @property
    def beat_schedule_path(self) -> Path:
        """Where celery beat keeps its schedule state (never committed)."""
        return self.beat_schedule_file or (self.data_dir / "celerybeat-schedule")
