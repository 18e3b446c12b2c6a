"""Admin CLI, ``atelier-admin`` (or ``python -m shared.cli``):
``{migrate,create-tenant,set-tenant,create-key,revoke-key,ensure-dev-key,counters}``. The users' CLI is ``atelier`` (client/)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from shared import counters
from shared.config import Settings
from shared.db import queries
from shared.db.migrate import upgrade
from shared.db.models import Tenant
from shared.db.session import make_engine, make_sessionmaker, transaction
from shared.errors import AtelierError

DEV_TENANT = "dev"
UNSET = object()  # an option not given (None means "no limit")
KEY_FILE_MODE = 0o600


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier-admin", description="Atelier administration")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations up to head")
    tenant = sub.add_parser("create-tenant", help="create a tenant")
    tenant.add_argument("name")
    _tenant_options(tenant)
    limits = sub.add_parser("set-tenant", help="change a tenant's quota, fair-share weight or running limit")
    limits.add_argument("name")
    _tenant_options(limits)
    key = sub.add_parser("create-key", help="mint an API key for a tenant; prints it once")
    key.add_argument("--tenant", required=True)
    key.add_argument("--label", default="")
    revoke = sub.add_parser("revoke-key", help="revoke keys by their display prefix")
    revoke.add_argument("prefix")
    dev = sub.add_parser("ensure-dev-key", help="make sure a working dev key is stored in a file")
    dev.add_argument("--path", type=Path, required=True)
    sub.add_parser("counters", help="print the workers' event counters (e.g. watchdog stops and exits)")
    return parser


def _positive_weight(value: str) -> float:
    weight = float(value)
    if not weight > 0:
        raise argparse.ArgumentTypeError(f"the weight must be above 0, got {value}")
    return weight


def _running_limit(value: str) -> int | None:
    if value == "none":
        return None
    limit = int(value)
    if limit < 1:
        raise argparse.ArgumentTypeError(f"the running limit must be 1 or more (or none), got {value}")
    return limit


BYTE_UNITS = {"": 1, "B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}
QUOTA = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]iB|B)?", re.IGNORECASE)


def _storage_quota(value: str) -> int | None:
    """``none``, a byte count, or one with a binary unit: ``500MiB``, ``20GiB``."""
    text = value.strip()
    if text.lower() == "none":
        return None
    if text.startswith("-"):
        raise argparse.ArgumentTypeError(f"a storage quota cannot be negative; got {value}")
    match = QUOTA.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"a storage quota is a number of bytes, or one with KiB, MiB, GiB or TiB (e.g. 20GiB), or none; got {value}"
        )
    return int(float(match["number"]) * BYTE_UNITS[(match["unit"] or "").upper()])


def _days(value: str) -> int | None:
    """``none`` (keep for ever) or a number of days, 0 or more."""
    if value.strip().lower() == "none":
        return None
    try:
        days = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"days are a whole number, or none; got {value}") from exc
    if days < 0:
        raise argparse.ArgumentTypeError(f"days cannot be negative; got {value}")
    return days


def _points(value: str) -> int:
    points = int(value)
    if points < MIN_POINTS_KEPT:
        raise argparse.ArgumentTypeError(f"retention keeps at least {MIN_POINTS_KEPT} points a series; got {value}")
    return points


MIN_POINTS_KEPT = 10
RETENTION_OPTIONS = (
    ("--keep-checkpoints-days", "keep_checkpoints_days", "days an ended job keeps its checkpoint (outputs stay)"),
    ("--keep-full-metrics-days", "keep_full_metrics_days", "days an ended job keeps every metric row, then "
     "each series is downsampled to --metrics-points"),
    ("--keep-jobs-days", "keep_jobs_days", "days an ended job is kept at all, then it is deleted"),
)  # fmt: skip


def _tenant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-active-jobs", type=int, default=None, help="quota of queued + running jobs")
    parser.add_argument(
        "--weight",
        type=_positive_weight,
        default=None,
        help="fair-share weight: backlogged tenants get worker time in proportion to it (default 1)",
    )
    parser.add_argument(
        "--max-running-jobs",
        type=_running_limit,
        default=UNSET,
        help="at most this many of its jobs run at once on each queue; none: no limit (the default)",
    )
    for flag, _column, text in RETENTION_OPTIONS:
        parser.add_argument(flag, type=_days, default=UNSET, help=f"{text}; none: for ever (the default)")
    parser.add_argument(
        "--metrics-points", type=_points, default=None, help="points per series retention keeps (10 or more; 1000)"
    )
    parser.add_argument(
        "--max-storage",
        type=_storage_quota,
        default=UNSET,
        help="bytes its artifacts, checkpoints and uploads may hold (e.g. 20GiB); none: no quota (the default)",
    )


def _apply_tenant_options(tenant: Tenant, args: argparse.Namespace) -> None:
    if args.max_active_jobs is not None:
        tenant.max_active_jobs = args.max_active_jobs
    if args.weight is not None:
        tenant.share_weight = args.weight
    if args.max_running_jobs is not UNSET:
        tenant.max_running_jobs = args.max_running_jobs
    if args.max_storage is not UNSET:
        tenant.max_storage_bytes = args.max_storage
    for _flag, column, _text in RETENTION_OPTIONS:
        if getattr(args, column) is not UNSET:
            setattr(tenant, column, getattr(args, column))
    if args.metrics_points is not None:
        tenant.metrics_points_kept = args.metrics_points


def _describe_tenant(tenant: Tenant) -> str:
    running = "none" if tenant.max_running_jobs is None else str(tenant.max_running_jobs)
    return (
        f"tenant {tenant.name} {tenant.id} max_active_jobs={tenant.max_active_jobs} weight={tenant.share_weight:g} "
        f"max_running_jobs={running} max_storage_bytes={'none' if tenant.max_storage_bytes is None else tenant.max_storage_bytes}"
    )


def _print_counters(settings: Settings) -> int:
    for name, value in sorted(counters.read_all(settings.redis_url, timeout_s=settings.redis_timeout_s).items()):
        print(f"{name} {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one admin command; returns the exit status."""
    args = _parser().parse_args(argv)
    settings = Settings()
    if args.command == "migrate":
        upgrade(settings)
        print("database is at head")
        return 0
    if args.command == "counters":
        return _print_counters(settings)
    engine = make_engine(settings, pool_size=1, call_deadline_s=settings.api_db_call_deadline_s)
    factory = make_sessionmaker(engine)
    try:
        with transaction(factory) as session:
            if args.command == "create-tenant":
                tenant = queries.create_tenant(session, name=args.name)
                _apply_tenant_options(tenant, args)
                session.flush()
                print(_describe_tenant(tenant))
            elif args.command == "set-tenant":
                tenant = queries.get_tenant_by_name(session, name=args.name)
                _apply_tenant_options(tenant, args)
                session.flush()
                print(_describe_tenant(tenant))
            elif args.command == "create-key":
                tenant = queries.get_tenant_by_name(session, name=args.tenant)
                _row, raw = queries.create_api_key(session, tenant_id=tenant.id, label=args.label)
                print(raw)
            elif args.command == "revoke-key":
                count = queries.revoke_api_key(session, prefix=args.prefix)
                print(f"revoked {count} key(s)")
                return 0 if count else 1
            elif args.command == "ensure-dev-key":
                print(_ensure_dev_key(session, args.path))
    except AtelierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _ensure_dev_key(session: Session, path: Path) -> str:
    if path.is_file():
        existing = path.read_text().strip()
        if existing and queries.authenticate(session, raw_key=existing) is not None:
            return existing
    try:
        tenant = queries.get_tenant_by_name(session, name=DEV_TENANT)
    except AtelierError:
        tenant = queries.create_tenant(session, name=DEV_TENANT)
    _row, raw = queries.create_api_key(session, tenant_id=tenant.id, label="dev key (make up)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        handle.write(raw + "\n")
    return raw


if __name__ == "__main__":
    sys.exit(main())
