"""``atelier``: the users' command line (login, submit, watch, ls, show, cancel, metrics, download,
upload, sample, style, models ls/show/rm, webhooks, webhook-secret). Errors print ``error: <code>: <message> (field: x)`` on stderr and exit
non-zero, without a traceback. ``NO_COLOR`` turns colours off; output that is not a terminal gets
plain lines instead of live bars."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

import httpx
import plotext
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atelier_client import config
from atelier_client.calls import MAX_PREFER_WAIT_S, PRIORITIES, WEBHOOK_EVENTS
from atelier_client.client import STYLE_APPLY, Atelier, JobHandle, apply_params, local_picture, picture_refs
from atelier_client.errors import AtelierError, Conflict, NotFound
from atelier_client.models import Job, MetricSeries, Model, Sweep, Upload, WebhookAttempt, WebhookDelivery
from atelier_client.retry import RetryPolicy
from atelier_client.uploads import plan_folder
from atelier_client.watch import (
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    duration,
    error_line,
    exit_code,
    metric_line,
    progress_line,
    size,
    watch,
)

PROG = "atelier"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_LIST_LIMIT = 20
LIST_PAGE_SIZE = 100
PREFER_WAIT_S = MAX_PREFER_WAIT_S  # let the server hold its answer as long as it may
STYLE_OUTPUT = "output.png"  # what style.transfer saves, and style.apply on one picture
BATCH_OUTPUT = "outputs.zip"  # style.apply on several pictures
TRANSFER_OUTPUT = Path("out.png")
STYLED_PREFIX = "styled"
STYLED_BATCH = f"{STYLED_PREFIX}.zip"
DEFAULT_SAMPLES = 64
LOGIN_CHECK_DEADLINE_S = 10.0
EXIT_INTERRUPTED = 130
NO_COLOR_ENV = "NO_COLOR"
CHART_MAX_WIDTH = 100
CHART_HEIGHT = 20
CHART_MIN_WIDTH = 40
CHART_MIN_HEIGHT = 10
LOSS_SUFFIX = "loss"
PIPE_WIDTH = 200
FORMATS = ("chart", "csv", "json")


@dataclass(frozen=True)
class Options:
    """What a command needs besides its arguments (tests pass a transport; none in normal use)."""

    transport: httpx.BaseTransport | None = None
    retry: RetryPolicy | None = None


app = typer.Typer(
    name=PROG,
    help="Train GANs and run style transfer on an Atelier server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


# --- helpers -------------------------------------------------------------------------------------


def _options(ctx: typer.Context) -> Options:
    return ctx.obj if isinstance(ctx.obj, Options) else Options()


def _client(ctx: typer.Context) -> Atelier:
    options = _options(ctx)
    return Atelier(transport=options.transport, retry=options.retry)


def _console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)  # rich honours NO_COLOR itself
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH  # a pipe or a file: don't cut ids to fit 80 columns
    return console


def _live(console: Console) -> bool:
    return console.is_terminal and not console.is_dumb_terminal


def _say(text: str) -> None:
    """A line for the person at the terminal (stderr), leaving stdout to results."""
    print(text, file=sys.stderr)


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (``2000``, ``true``, ``[1, 2]``), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` pairs as params; a dotted key (``a.b=1``) makes nested objects."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise typer.BadParameter(f"{pair!r}: expected key=value (a dotted key nests: a.b=1)")
        target = params
        for depth, part in enumerate(parts[:-1]):
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                raise typer.BadParameter(f"{pair!r}: {'.'.join(parts[: depth + 1])} already has a value")
            target = node
        if isinstance(target.get(parts[-1]), dict):
            raise typer.BadParameter(f"{pair!r}: {key} already holds nested keys")
        target[parts[-1]] = parse_value(raw)
    return params


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top, nested objects merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Submission:
    """A job to submit, from ``-f`` and the command line."""

    job_type: str
    params: dict[str, Any]
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    priority: str | None = None


def read_job_file(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) job file: ``type``, ``params`` and optionally ``webhook``, ``webhook_events_filter``,
    ``priority``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected a mapping with `type` and `params`")
    if not isinstance(data.get("params", {}), dict):
        raise typer.BadParameter(f"{path}: `params` must be a mapping")
    return data


def build_submission(job_type: str | None, assignments: Sequence[str], *, job_file: Path | None = None) -> Submission:
    """Combine a job file, a job type and ``key=value`` pairs (which win) into one submission."""
    pairs = list(assignments)
    if job_type is not None and "=" in job_type:  # `atelier submit -f job.yaml steps=10`: no type given
        pairs.insert(0, job_type)
        job_type = None
    loaded = read_job_file(job_file) if job_file is not None else {}
    job_type = job_type or loaded.get("type")
    if not isinstance(job_type, str) or not job_type:
        raise typer.BadParameter("give a job type (gan.train, style.transfer, gan.sample) or -f with `type:`")
    params = merge(loaded.get("params") or {}, parse_assignments(pairs))
    events = loaded.get("webhook_events_filter")
    return Submission(
        job_type=job_type,
        params=params,
        webhook=loaded.get("webhook"),
        webhook_events_filter=list(events) if isinstance(events, list) else None,
        priority=loaded.get("priority"),
    )


def _priority(value: str | None) -> str | None:
    """``--priority`` (or ``priority:`` in the job file); a usage error for anything but low, normal, high."""
    if value is not None and value not in PRIORITIES:
        raise typer.BadParameter(f"--priority: one of {', '.join(PRIORITIES)}, got {value!r}")
    return value


def parse_events(text: str) -> list[str]:
    """``--webhook-events start,completed`` as a list; a usage error for an unknown or no event."""
    events = list(dict.fromkeys(e.strip() for e in text.split(",") if e.strip()))
    unknown = [e for e in events if e not in WEBHOOK_EVENTS]
    if unknown or not events:
        known = ", ".join(sorted(WEBHOOK_EVENTS))
        what = f"unknown event(s) {', '.join(unknown)}" if unknown else "no event given"
        raise typer.BadParameter(f"--webhook-events: {what}; known: {known}")
    return events


def _finish(job: Job, *, quiet_success: bool = False) -> int:
    """Report a final state; the exit status for it."""
    if job.state == "failed":
        _say(f"error: {error_line(job.error)}")
    elif job.state == "cancelled":
        _say(f"job {job.id} was cancelled")
    elif job.state == "stopped_early":
        _say(f"job {job.id} was stopped early by its sweep's rule: {job.early_stop or 'no reason recorded'}")
    elif not quiet_success:
        elapsed = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
        _say(f"job {job.id} {job.state}" + (f" in {duration(elapsed)}" if elapsed is not None else ""))
    return exit_code(job.state)


def _watch(job: JobHandle, *, timeout: float | None = None) -> int:
    console = _console()
    live = _live(console)
    console.print(f"job {job.id} {job.type}: {job.state}", markup=False, highlight=False)
    final = job if job.done else watch(job, console, live=live, timeout=timeout)
    return _finish(final)


def _local(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def job_json(job: Job) -> str:
    """A job's fields as JSON (a handle's client left out)."""
    data = {f.name: getattr(job, f.name) for f in dataclasses.fields(Job)}
    return json.dumps(dataclasses.asdict(Job(**data)), indent=2, default=_jsonable)


# --- commands ------------------------------------------------------------------------------------


@app.command()
def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="The API's base URL (asked if not given)")] = None,
    key_stdin: Annotated[bool, typer.Option("--key-stdin", help="Read the API key from standard input")] = False,
) -> None:
    """Check an API key against the server and store it (mode 0600) for later commands."""
    path = config.config_path()
    stored = config.read_config(path)
    if url is None:
        default = os.environ.get(config.URL_ENV) or stored.get(config.URL_FIELD) or DEFAULT_URL
        url = str(typer.prompt("API URL", default=default))
    key = sys.stdin.readline().strip() if key_stdin else str(typer.prompt("API key", hide_input=True))
    if not key:
        raise typer.BadParameter("the API key is empty")
    options = _options(ctx)
    check = RetryPolicy(deadline_s=LOGIN_CHECK_DEADLINE_S)
    with Atelier(url, key, transport=options.transport, retry=options.retry or check) as client:
        next(iter(client.jobs(page_size=1)), None)  # GET /v1/jobs?limit=1: a 401 if the key is wrong
        credentials = config.Credentials(url=client.url, api_key=key)
    config.write_config(path, credentials)
    _say(f"logged in to {credentials.url}; key stored in {path}")


@app.command()
def submit(
    ctx: typer.Context,
    job_type: Annotated[
        str | None, typer.Argument(metavar="TYPE", help="gan.train, style.transfer, gan.sample")
    ] = None,
    assignments: Annotated[list[str] | None, typer.Argument(metavar="KEY=VALUE...", help="Params; JSON values")] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="YAML job file: type, params, webhook")] = None,
    watch_job: Annotated[bool, typer.Option("--watch", help="Watch the job until it ends")] = False,
    wait: Annotated[int | None, typer.Option(help="Let the server hold the answer up to N s (max 60)")] = None,
    webhook: Annotated[str | None, typer.Option(help="URL that gets the job's events as signed POSTs")] = None,
    webhook_events: Annotated[
        str | None,
        typer.Option(
            metavar="EVENTS", help="Comma-separated: start, progress, artifact, completed (default: artifact,completed)"
        ),
    ] = None,
    priority: Annotated[
        str | None,
        typer.Option(metavar="PRIORITY", help="low, normal or high: orders it among your own queued jobs"),
    ] = None,
) -> None:
    """Submit a job, e.g. `atelier submit gan.train dataset=digits steps=2000 preset=stable`; prints its id."""
    spec = build_submission(job_type, assignments or [], job_file=file)
    events = parse_events(webhook_events) if webhook_events is not None else spec.webhook_events_filter
    target = webhook or spec.webhook
    if events is not None and target is None:
        raise typer.BadParameter("--webhook-events needs --webhook (or `webhook:` in the job file)")
    with _client(ctx) as client:
        job = client.submit(
            spec.job_type,
            spec.params,
            webhook=target,
            webhook_events_filter=events,
            wait=wait,
            priority=_priority(priority or spec.priority),
        )
        print(job.id, flush=True)
        if watch_job:
            raise typer.Exit(_watch(job))
        if job.done:
            raise typer.Exit(_finish(job, quiet_success=True))


@app.command("watch")
def watch_command(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds")] = None,
) -> None:
    """Follow a job live until it ends: exit 0 if it succeeded, 1 if it failed, 2 if cancelled, 3 if stopped early."""
    with _client(ctx) as client:
        raise typer.Exit(_watch(client.get_job(job_id), timeout=timeout))


@app.command("ls")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed, cancelled or stopped_early")
    ] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many jobs to show")] = DEFAULT_LIST_LIMIT,
    show_all: Annotated[bool, typer.Option("--all", help="Show every job, page after page")] = False,
) -> None:
    """List your jobs, newest first."""
    with _client(ctx) as client:
        page = LIST_PAGE_SIZE if show_all else min(limit, LIST_PAGE_SIZE)
        jobs = client.jobs(state=state, job_type=job_type, page_size=page)
        table = Table("ID", "TYPE", "STATE", "PROGRESS", "CREATED", "ERROR", box=None, pad_edge=False)
        for job in jobs if show_all else islice(jobs, limit):
            done = f"{job.progress.step}/{job.progress.total}" if job.progress.total else "-"
            table.add_row(
                job.id, job.type, job.state, done, _local(job.created_at), job.error.code if job.error else ""
            )
    _console().print(table)


@app.command()
def show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON")] = False,
) -> None:
    """Show a job: state, progress, latest metrics, warnings, error, params and webhook."""
    with _client(ctx) as client:
        job = client.get_job(job_id)
    if as_json:
        print(job_json(job))
        return
    rows = [
        ("id", job.id),
        ("type", job.type),
        ("state", f"{job.state} (attempt {job.attempt} of {job.max_attempts})"),
        ("priority", job.priority),
        ("progress", progress_line(job.progress)),
        ("metrics", metric_line(job.latest_metrics) or "-"),
        ("error", error_line(job.error) if job.error else "-"),
        ("created", _local(job.created_at)),
        ("started", _local(job.started_at)),
        ("finished", _local(job.finished_at)),
        ("params", json.dumps(job.params, sort_keys=True)),
    ]
    if job.pending_reason is not None:
        rows.insert(4, ("waiting", f"about #{job.queue_position} in its queue: {job.pending_reason}"))
    if job.sweep_id:
        rows.insert(4, ("sweep", job.sweep_id))
    if job.early_stop:
        rows.insert(rows.index(("error", "-")) if ("error", "-") in rows else 5, ("stopped", job.early_stop))
    if job.webhook:
        rows.append(("webhook", f"{job.webhook} ({', '.join(job.webhook_events_filter) or 'no events'})"))
    rows += [("warning", w) for w in job.warnings]
    width = max(len(name) for name, _value in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


@app.command("rm")
def rm_jobs(ctx: typer.Context, job_ids: Annotated[list[str], typer.Argument(metavar="JOB...")]) -> None:
    """Delete jobs with their loss history, artifacts and checkpoints (a running one is stopped first); exits 1
    if one is unknown (or already gone)."""

    def delete(job_id: str) -> str:
        deleted = client.delete_job(job_id)
        return f"job {deleted.id} deleted" + (": stopping it, then removing its data" if deleted.stopping else "")

    with _client(ctx) as client:
        status = _remove_each(job_ids, delete, lambda job_id: f"error: not_found: no job {job_id} (see `{PROG} ls`)")
    raise typer.Exit(status)


@app.command("usage")
def usage_command(ctx: typer.Context) -> None:
    """What your tenant stores (against its storage quota) and uses this month."""
    with _client(ctx) as client:
        use = client.usage()
    quota = "none" if use.quota_bytes is None else f"{size(use.quota_bytes)} ({size(use.left_bytes or 0)} left)"
    rows = [
        ("stored", f"{size(use.total_bytes)} (artifacts {size(use.artifacts_bytes)}, checkpoints "
                   f"{size(use.checkpoints_bytes)}, uploads {size(use.uploads_bytes)})"),
        ("quota", quota),
        ("jobs", str(use.jobs)),
        ("metric rows", f"{use.metric_rows:,}"),
        ("gpu time", f"{duration(use.gpu_seconds_this_month)} this month"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


uploads_app = typer.Typer(
    name="uploads", help="Your uploads (image sets, pictures, weights): ls, rm.", no_args_is_help=True
)
app.add_typer(uploads_app, name="uploads")


@uploads_app.command("ls")
def uploads_ls(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many uploads to show")] = DEFAULT_LIST_LIMIT,
) -> None:
    """List your uploads, newest first."""
    with _client(ctx) as client:
        found = list(islice(client.uploads(), limit))
    table = Table("ID", "KIND", "NAME", "FILES", "BYTES", "CLASSES", "CREATED", box=None, pad_edge=False)
    for item in found:
        table.add_row(
            item.id, item.kind, item.filename or "-", str(item.file_count), size(item.total_bytes),
            ", ".join(item.classes) or "-", _local(item.created_at),
        )  # fmt: skip
    _console().print(table)


@uploads_app.command("rm")
def uploads_rm(ctx: typer.Context, upload_ids: Annotated[list[str], typer.Argument(metavar="UPLOAD...")]) -> None:
    """Delete uploads with their files; exits 1 if one is unknown or still used by a queued or running job."""

    def delete(upload_id: str) -> str:
        client.delete_upload(upload_id)
        return f"upload {upload_id} deleted"

    with _client(ctx) as client:
        status = _remove_each(
            upload_ids, delete, lambda upload_id: f"error: not_found: no upload {upload_id} (see `{PROG} uploads ls`)"
        )
    raise typer.Exit(status)


def _remove_each(ids: Sequence[str], delete: Callable[[str], str], unknown: Callable[[str], str]) -> int:
    """Delete each id in turn, saying what happened; EXIT_FAILED if one was unknown or refused (409)."""
    status = EXIT_SUCCEEDED
    for item in ids:
        try:
            _say(delete(item))
        except NotFound:
            _say(unknown(item))
            status = EXIT_FAILED
        except Conflict as exc:
            _say(f"error: conflict: {exc.message}")
            status = EXIT_FAILED
    return status


@app.command()
def cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="JOB")]) -> None:
    """Cancel a job: a queued one never runs, a running one stops within a step."""
    with _client(ctx) as client:
        job = client.cancel(job_id)
    _say(f"job {job.id}: {job.state}" + (" (cancel requested)" if job.cancel_requested and not job.done else ""))


def metrics_csv(series: Mapping[str, MetricSeries]) -> str:
    """Wide CSV: one row per step, one column per metric (empty where a metric has no point)."""
    names = sorted(series)
    by_step: dict[int, dict[str, float]] = {}
    for name in names:
        for point in series[name].points:
            by_step.setdefault(point.step, {})[name] = point.value
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["step", *names])
    for step in sorted(by_step):
        writer.writerow([step, *(repr(by_step[step][n]) if n in by_step[step] else "" for n in names)])
    return text.getvalue()


def metrics_chart(series: Mapping[str, MetricSeries], *, title: str, colorless: bool) -> str:
    """A terminal line chart of the series (plotext)."""
    figure = plotext.figure
    figure.clear()
    columns, rows = shutil.get_terminal_size()
    figure.plot_size(
        max(min(columns, CHART_MAX_WIDTH), CHART_MIN_WIDTH), max(min(rows - 2, CHART_HEIGHT), CHART_MIN_HEIGHT)
    )
    for name in sorted(series):
        if series[name].points:
            figure.draw(figure.signal(series[name].steps, series[name].values).lines().label(name))
    figure.title(title)
    figure.label("step", "x")
    return str(figure.build().string(colorless=colorless))


@app.command()
def metrics(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    names: Annotated[str | None, typer.Option(help="Comma-separated names (default: the losses)")] = None,
    output_format: Annotated[str, typer.Option("--format", help="chart, csv or json")] = "chart",
    max_points: Annotated[int, typer.Option(min=1, help="Downsample each series to this many points")] = 500,
    since_step: Annotated[int, typer.Option(min=-1, help="Only steps after this one (zoom in)")] = -1,
    until_step: Annotated[int | None, typer.Option(min=0, help="Only steps up to this one (zoom in)")] = None,
) -> None:
    """Show a job's loss history as a terminal chart, or as CSV or JSON."""
    if output_format not in FORMATS:
        raise typer.BadParameter(f"--format: one of {', '.join(FORMATS)}")
    wanted = [n for n in (names or "").split(",") if n]
    with _client(ctx) as client:
        series = client.metrics(
            job_id, names=wanted or None, since_step=since_step, until_step=until_step, max_points=max_points
        )
    if not wanted:
        losses = {n: s for n, s in series.items() if n.endswith(LOSS_SUFFIX)}
        series = losses if output_format == "chart" and losses else series
    if output_format == "csv":
        sys.stdout.write(metrics_csv(series))
    elif output_format == "json":
        print(json.dumps({n: [dataclasses.asdict(p) for p in s.points] for n, s in series.items()}, indent=2))
    elif not any(s.points for s in series.values()):
        _say(f"job {job_id} has no metrics yet")
    else:
        console = _console()
        colorless = not console.is_terminal or bool(os.environ.get(NO_COLOR_ENV))
        print(metrics_chart(series, title=f"{job_id} losses", colorless=colorless))


@app.command()
def download(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder (default: ./JOB)")] = None,
) -> None:
    """Download every artifact of a job (names with / go into sub-folders); prints each path."""
    directory = output or Path(job_id)
    with _client(ctx) as client:
        paths = client.download_artifacts(job_id, directory)
    for path in paths:
        print(path)
    _say(f"{len(paths)} artifact(s) in {directory}")


def _describe(upload: Upload) -> str:
    classes = f", classes: {', '.join(upload.classes)}" if upload.classes else ""
    return f"upload {upload.id}: {upload.kind}, {upload.file_count} file(s), {size(upload.total_bytes)}{classes}"


@app.command()
def upload(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="A folder (zipped on the fly) or files")],
) -> None:
    """Upload a folder of images (sub-folders become classes) or files; prints the upload id."""
    with _client(ctx) as client:
        if len(paths) == 1 and paths[0].is_dir():
            plan = plan_folder(paths[0])
            _say(f"zipping {len(plan.entries)} image(s), {size(plan.total_bytes)}, from {paths[0]}")
            if plan.skipped:
                _say(f"skipped {len(plan.skipped)} file(s) that are not images: {', '.join(plan.skipped[:5])}")
            result = client.upload_folder(paths[0])
        elif any(p.is_dir() for p in paths):
            raise typer.BadParameter("give one folder, or files")
        else:
            result = client.upload_files(paths)
    print(result.id)
    _say(_describe(result))


@app.command()
def sample(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="A succeeded gan.train job")],
    n: Annotated[int, typer.Option("-n", min=1, help="How many images")] = DEFAULT_SAMPLES,
    seed: Annotated[int | None, typer.Option(help="Latent seed")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder (default: ./SAMPLE_JOB)")] = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds")] = None,
) -> None:
    """Draw images from a trained generator (a gan.sample job), wait for it and download them."""
    with _client(ctx) as client:
        job = client.sample(job_id, n, seed=seed, wait=PREFER_WAIT_S)
        _say(f"sampling job {job.id}")
        final = job if job.done else job.wait(timeout=timeout)
        if not final.succeeded:
            raise typer.Exit(_finish(final))
        directory = output or Path(final.id)
        for path in final.download_artifacts(directory):
            print(path)


def split_style_args(values: Sequence[str]) -> tuple[list[str], list[str]]:
    """``atelier style --model``'s arguments as pictures (paths, built-in names, upload ids) and KEY=VALUE
    params; a path that exists is a picture even with ``=`` in its name."""
    pictures: list[str] = []
    pairs: list[str] = []
    for value in values:
        (pairs if "=" in value and local_picture(value) is None else pictures).append(value)
    return pictures, pairs


def styled_name(pictures: Sequence[str], upload: Upload | None) -> str:
    """Where one styled picture goes by default: ``styled-<its name>.png`` (``styled.png`` when it has none)."""
    stem = ""
    if len(pictures) == 1:
        path = Path(pictures[0])
        if path.is_dir():
            if upload is not None and upload.file_count == 1 and len(upload.files) == 1:
                stem = Path(upload.files[0].path).stem
        else:
            stem = path.stem if path.exists() else path.name
    return f"{STYLED_PREFIX}-{stem}.png" if stem else f"{STYLED_PREFIX}.png"


def _upload_pictures(client: Atelier, paths: Sequence[Path]) -> Upload:
    for path in paths:
        if path.is_dir():
            plan = plan_folder(path)
            _say(f"zipping {len(plan.entries)} picture(s), {size(plan.total_bytes)}, from {path}")
            if plan.skipped:
                _say(f"skipped {len(plan.skipped)} file(s) that are not images: {', '.join(plan.skipped[:5])}")
    result = client.upload_pictures(paths)
    _say(_describe(result))
    return result


def _styled_artifact(job: JobHandle) -> str:
    """``output.png`` (one picture went in) or ``outputs.zip`` (several), whichever the job saved."""
    names = {item.name for item in job.artifacts()}
    for name in (STYLE_OUTPUT, BATCH_OUTPUT):
        if name in names:
            return name
    raise AtelierError(f"job {job.id} saved neither {STYLE_OUTPUT} nor {BATCH_OUTPUT}", code="no_output")


def _apply_model(
    client: Atelier,
    model_id: str,
    args: Sequence[str],
    *,
    output: Path | None,
    options: dict[str, Any],
    wait: int,
    timeout: float | None,
) -> Path:
    """Upload the local pictures as one upload, run style.apply, follow it if need be; the file saved."""
    pictures, pairs = split_style_args(args)
    if not pictures:
        raise typer.BadParameter("give the pictures to style: files, folders, built-in names or upload ids")
    extra = parse_assignments(pairs)  # a malformed pair stops the command before anything is uploaded
    paths = [path for path in map(local_picture, pictures) if path is not None]
    upload = _upload_pictures(client, paths) if paths else None
    images = picture_refs(pictures, upload.id if upload is not None else None)
    params = merge(extra, apply_params(model_id, images, **options))
    job = client.submit(STYLE_APPLY, params, wait=wait)
    if not job.done:
        console = _console(stderr=True)
        console.print(f"job {job.id} {job.type}: {job.state}", markup=False, highlight=False)
        job = watch(job, console, live=_live(console), timeout=timeout)
    if not job.succeeded:
        raise typer.Exit(_finish(job))
    artifact = _styled_artifact(job)
    default = styled_name(pictures, upload) if artifact == STYLE_OUTPUT else STYLED_BATCH
    target = output or Path(default)
    if target.is_dir():
        target = target / default
    job.download(artifact, target)
    _say(f"job {job.id} succeeded; saved {target}")
    return target


@app.command()
def style(
    ctx: typer.Context,
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="PICTURE...",
            help="With --model: the pictures to style (files, folders, built-in names such as astronaut, upload ids)."
            " Without: a content and a style picture. Then optional KEY=VALUE params.",
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", "-m", metavar="MODEL", help="A trained style model (atelier models ls)")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="File or folder for the result (default: out.png; with --model styled-NAME.png, or styled.zip"
            " for several pictures)",
        ),
    ] = None,
    size_px: Annotated[int | None, typer.Option("--size", min=1, help="Longer side of the output in pixels")] = None,
    strength: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="With --model: 1 is the model's output, 0 the picture")
    ] = None,
    preserve_colors: Annotated[bool, typer.Option("--preserve-colors", help="Keep each picture's colours")] = False,
    wait: Annotated[
        int, typer.Option(min=0, max=MAX_PREFER_WAIT_S, help="Let the server hold the answer up to N s (max 60)")
    ] = PREFER_WAIT_S,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds")] = None,
) -> None:
    """Style pictures with a trained model (`--model M photo.jpg more/ astronaut`), or transfer a style onto a
    picture (`photo.jpg painting.jpg size=256`); saves the result and prints its path."""
    options: dict[str, Any] = {"size": size_px, "strength": strength, "preserve_colors": preserve_colors}
    if model is not None:
        with _client(ctx) as client:
            saved = _apply_model(client, model, args, output=output, options=options, wait=wait, timeout=timeout)
        print(saved)
        return
    if strength is not None:
        raise typer.BadParameter("--strength needs --model")
    if len(args) < 2:
        raise typer.BadParameter("give a CONTENT and a STYLE picture, or --model MODEL and the pictures to style")
    content, style_image, *pairs = args
    params = parse_assignments(pairs)
    if size_px is not None:
        params["size"] = size_px
    if preserve_colors:
        params["preserve_colors"] = True
    target = output or TRANSFER_OUTPUT
    with _client(ctx) as client:
        job = client.style(content, style_image, wait=wait, **params)
        if not job.done:
            _say(f"job {job.id} is {job.state}; waiting for it")
            job = job.wait(timeout=timeout)
        if not job.succeeded:
            raise typer.Exit(_finish(job))
        job.download(STYLE_OUTPUT, target)
    print(target)
    _say(f"job {job.id} succeeded; saved {target}")


# --- sweeps --------------------------------------------------------------------------------------

sweep_app = typer.Typer(
    name="sweep",
    help="Hyperparameter sweeps: `atelier sweep -f sweep.yaml` starts one; show, ls, cancel.",
    invoke_without_command=True,
)
app.add_typer(sweep_app, name="sweep")
SWEEP_POLL_S = 2.0


def read_sweep_file(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) sweep: type, base_params, grid or random (+ trials), seeds, objective, max_parallel."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected a mapping with type, base_params, grid or random, objective")
    return data


def _objective(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def sweep_table(sweep: Sweep) -> Table:
    """The trials, best first by the objective (those without a value last), with their params and state."""
    names = sorted({name for t in sweep.trials for name in t.params})
    sign = 1.0 if sweep.mode == "min" else -1.0
    ranked = sorted(sweep.trials, key=lambda t: (t.objective is None, sign * (t.objective or 0.0)))
    table = Table(
        "JOB", *[n.upper() for n in names], "STATE", sweep.metric.upper() or "OBJECTIVE", box=None, pad_edge=False
    )
    for trial in ranked:
        marker = " *" if sweep.best is not None and trial.job_id == sweep.best.job_id else ""
        table.add_row(
            trial.job_id + marker,
            *[escape(json.dumps(trial.params.get(n))) for n in names],
            trial.state + (f" ({trial.error})" if trial.error else ""),
            _objective(trial.objective),
        )
    return table


def _print_sweep(sweep: Sweep) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(sweep.counts.items())) or "no trials"
    print(
        f"sweep {sweep.id}: {sweep.type}, {sweep.state} ({counts}); objective {sweep.metric} {sweep.mode}; "
        f"max_parallel {sweep.max_parallel}"
    )
    _console().print(sweep_table(sweep))
    for trial in sweep.trials:
        if trial.early_stop:
            print(f"stopped early: {trial.job_id} {trial.early_stop}")
    if sweep.best is not None:
        print(
            f"best: {sweep.best.job_id} {json.dumps(sweep.best.params, sort_keys=True)} "
            f"{sweep.metric} {_objective(sweep.best.objective)}"
        )


@sweep_app.callback()
def sweep_start(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="YAML sweep file")] = None,
    watch_sweep: Annotated[bool, typer.Option("--watch", help="Show the table until every trial has ended")] = False,
) -> None:
    """Start a sweep from a YAML file (`atelier sweep -f sweep.yaml`); prints its id, or with --watch its table."""
    if ctx.invoked_subcommand is not None:
        return
    if file is None:
        raise typer.BadParameter("give -f sweep.yaml, or a command: show, ls, cancel")
    body = read_sweep_file(file)
    with _client(ctx) as client:
        sweep = client.create_sweep(body)
        print(sweep.id, flush=True)
        if watch_sweep:
            while not sweep.done:
                time.sleep(SWEEP_POLL_S)
                sweep = client.sweep(sweep.id)
            _print_sweep(sweep)


@sweep_app.command("show")
def sweep_show(
    ctx: typer.Context,
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the sweep as JSON")] = False,
) -> None:
    """Every trial's params, state and objective (best first; the best finished one starred)."""
    with _client(ctx) as client:
        sweep = client.sweep(sweep_id)
    if as_json:
        print(json.dumps(dataclasses.asdict(sweep), indent=2, default=_jsonable))
        return
    _print_sweep(sweep)


@sweep_app.command("ls")
def sweep_ls(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many sweeps to show")] = DEFAULT_LIST_LIMIT,
) -> None:
    """List your sweeps, newest first."""
    with _client(ctx) as client:
        found = list(islice(client.sweeps(page_size=min(limit, LIST_PAGE_SIZE)), limit))
    table = Table("ID", "TYPE", "OBJECTIVE", "PARALLEL", "CREATED", box=None, pad_edge=False)
    for sweep in found:
        table.add_row(
            sweep.id, sweep.type, f"{sweep.metric} {sweep.mode}", str(sweep.max_parallel), _local(sweep.created_at)
        )
    _console().print(table)


@sweep_app.command("cancel")
def sweep_cancel(ctx: typer.Context, sweep_id: Annotated[str, typer.Argument(metavar="SWEEP")]) -> None:
    """Cancel a sweep: queued trials never run, running ones stop within a step."""
    with _client(ctx) as client:
        sweep = client.cancel_sweep(sweep_id)
    _say(f"sweep {sweep.id}: {sweep.state}")


# --- style models --------------------------------------------------------------------------------

models_app = typer.Typer(
    name="models",
    help="Your trained style models (what style.train jobs made): ls, show, rm. Use one with `atelier style --model`.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


def styles_text(model: Model) -> str:
    """``coffee``, ``coffee, chelsea``, or with weights ``coffee 0.7 + chelsea 0.3``."""
    if model.style_blend and len(model.style_blend) == len(model.styles):
        return " + ".join(f"{name} {weight:g}" for name, weight in zip(model.styles, model.style_blend, strict=True))
    return ", ".join(model.styles) or "-"


def models_json(models: Model | Sequence[Model]) -> str:
    """One model, or a list of them, as JSON."""
    data = dataclasses.asdict(models) if isinstance(models, Model) else [dataclasses.asdict(m) for m in models]
    return json.dumps(data, indent=2, default=_jsonable)


def _no_model_line(model_id: str) -> str:
    return f"error: not_found: no model {model_id} (see `{PROG} models ls`)"


def _no_model(model_id: str) -> None:
    _say(_no_model_line(model_id))


@models_app.command("ls")
def models_ls(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many models to show")] = DEFAULT_LIST_LIMIT,
    show_all: Annotated[bool, typer.Option("--all", help="Show every model, page after page")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the models as JSON")] = False,
) -> None:
    """List your trained style models, newest first."""
    with _client(ctx) as client:
        items = client.models(page_size=LIST_PAGE_SIZE if show_all else min(limit, LIST_PAGE_SIZE))
        found = list(items if show_all else islice(items, limit))
    if as_json:
        print(models_json(found))
        return
    if not found:
        _say(f"no models yet: a succeeded style.train job makes one (`{PROG} submit style.train styles=...`)")
        return
    table = Table("ID", "STYLES", "SIZE", "STEPS", "CREATED", "WEIGHTS", box=None, pad_edge=False)
    for model in found:
        table.add_row(
            model.id,
            escape(styles_text(model)),
            str(model.size),
            str(model.steps),
            _local(model.created_at),
            size(model.bytes),
        )
    _console().print(table)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="MODEL")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the model as JSON")] = False,
) -> None:
    """Show a model: styles, size, steps, network, final losses, the job that trained it, preview and card."""
    with _client(ctx) as client:
        try:
            model = client.model(model_id)
        except NotFound:
            _no_model(model_id)
            raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        print(models_json(model))
        return
    rows = [
        ("id", model.id),
        ("method", model.method or "-"),
        ("styles", styles_text(model)),
        ("size", f"{model.size} px"),
        ("steps", str(model.steps)),
        ("network", f"width {model.width}, {model.residual_blocks} residual blocks"),
        ("metrics", metric_line(model.final_metrics) or "-"),
        ("source job", model.source_job or "-"),
        ("created", _local(model.created_at)),
        ("weights", size(model.bytes)),
        ("preview", model.preview or "-"),
        ("card", model.card or "-"),
    ]
    width = max(len(name) for name, _value in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


@models_app.command("rm")
def models_rm(
    ctx: typer.Context,
    model_ids: Annotated[list[str], typer.Argument(metavar="MODEL...")],
) -> None:
    """Delete trained style models (deleting one again is fine); exits 1 if one is unknown."""

    def delete(model_id: str) -> str:
        client.delete_model(model_id)
        return f"model {model_id} deleted"

    with _client(ctx) as client:
        status = _remove_each(model_ids, delete, _no_model_line)
    raise typer.Exit(status)


def attempt_line(attempt: WebhookAttempt) -> str:
    """``#2 503 in 41 ms``, or ``#1 in 10003 ms: timed out``: an attempt's status code, latency and error."""
    text = f"#{attempt.attempt}"
    if attempt.status_code is not None:
        text += f" {attempt.status_code}"
    if attempt.latency_ms is not None:
        text += f" in {attempt.latency_ms:.0f} ms"
    if attempt.error:
        text += f": {attempt.error}"
    return text


def delivery_state(delivery: WebhookDelivery) -> str:
    """A delivery's state, with when it is tried next while pending."""
    if delivery.state == "pending" and delivery.next_attempt_at is not None:
        return f"pending, next at {_local(delivery.next_attempt_at)}"
    return delivery.state


def deliveries_json(deliveries: Sequence[WebhookDelivery]) -> str:
    """Deliveries as JSON, ``webhook_id`` (the header the receiver got) included."""
    data = [dataclasses.asdict(d) | {"webhook_id": d.message_id} for d in deliveries]
    return json.dumps(data, indent=2, default=_jsonable)


@app.command()
def webhooks(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the deliveries as JSON")] = False,
) -> None:
    """A job's webhook deliveries: event, event id, state, and every attempt's status code, latency and error."""
    with _client(ctx) as client:
        deliveries = list(client.webhook_deliveries(job_id, page_size=LIST_PAGE_SIZE))
    if as_json:
        print(deliveries_json(deliveries))
        return
    if not deliveries:
        _say(f"job {job_id} has no webhook deliveries")
        return
    table = Table("EVENT", "EVENT ID", "STATE", "ATTEMPTS", box=None, pad_edge=False)
    for delivery in deliveries:
        attempts = "\n".join(attempt_line(a) for a in delivery.attempts) or "-"
        table.add_row(delivery.event, str(delivery.event_id), delivery_state(delivery), escape(attempts))
    _console().print(table)


@app.command("webhook-secret")
def webhook_secret(
    ctx: typer.Context,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Make a new one; the previous one keeps signing for 24 h")
    ] = False,
) -> None:
    """Print the secret that signs your webhooks (whsec_...), to verify deliveries with."""
    with _client(ctx) as client:
        secret = client.rotate_webhook_secret() if rotate else client.webhook_secret()
    print(secret.secret)
    if secret.previous_valid_until is not None:
        _say(f"the previous secret also signs deliveries until {_local(secret.previous_valid_until)}")


# --- entry point ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, options: Options | None = None) -> int:
    """Run the CLI; returns the exit status."""
    command = typer.main.get_command(app)
    try:
        command.main(args=list(argv) if argv is not None else None, prog_name=PROG, obj=options or Options())
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (EXIT_SUCCEEDED if code is None else EXIT_FAILED)
    except AtelierError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    except ValueError as exc:  # an argument the library refused (e.g. wait over 60)
        _say(f"error: invalid_argument: {exc}")
        return EXIT_FAILED
    except OSError as exc:  # a local file or folder
        _say(f"error: os_error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_SUCCEEDED
