"""``atelier``: the users' command line (login, submit, watch, ls, show, cancel, metrics, download,
upload, sample, style, webhooks, webhook-secret). Errors print ``error: <code>: <message> (field: x)`` on stderr and exit
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
from collections.abc import Iterable, Mapping, Sequence
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
from atelier_client.calls import MAX_PREFER_WAIT_S, WEBHOOK_EVENTS
from atelier_client.client import Atelier, JobHandle
from atelier_client.errors import AtelierError
from atelier_client.models import Job, MetricSeries, Upload, WebhookAttempt, WebhookDelivery
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
STYLE_OUTPUT = "output.png"
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


def read_job_file(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) job file: ``type``, ``params`` and optionally ``webhook``, ``webhook_events_filter``."""
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
    )


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
) -> None:
    """Submit a job, e.g. `atelier submit gan.train dataset=digits steps=2000 preset=stable`; prints its id."""
    spec = build_submission(job_type, assignments or [], job_file=file)
    events = parse_events(webhook_events) if webhook_events is not None else spec.webhook_events_filter
    target = webhook or spec.webhook
    if events is not None and target is None:
        raise typer.BadParameter("--webhook-events needs --webhook (or `webhook:` in the job file)")
    with _client(ctx) as client:
        job = client.submit(spec.job_type, spec.params, webhook=target, webhook_events_filter=events, wait=wait)
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
    """Follow a job live until it ends: exit 0 if it succeeded, 1 if it failed, 2 if it was cancelled."""
    with _client(ctx) as client:
        raise typer.Exit(_watch(client.get_job(job_id), timeout=timeout))


@app.command("ls")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")] = None,
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
        ("progress", progress_line(job.progress)),
        ("metrics", metric_line(job.latest_metrics) or "-"),
        ("error", error_line(job.error) if job.error else "-"),
        ("created", _local(job.created_at)),
        ("started", _local(job.started_at)),
        ("finished", _local(job.finished_at)),
        ("params", json.dumps(job.params, sort_keys=True)),
    ]
    if job.webhook:
        rows.append(("webhook", f"{job.webhook} ({', '.join(job.webhook_events_filter) or 'no events'})"))
    rows += [("warning", w) for w in job.warnings]
    width = max(len(name) for name, _value in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


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


@app.command()
def style(
    ctx: typer.Context,
    content: Annotated[str, typer.Argument(help="Content picture: a file, a built-in name or an upload id")],
    style_image: Annotated[str, typer.Argument(metavar="STYLE", help="Style picture: likewise")],
    assignments: Annotated[
        list[str] | None, typer.Argument(metavar="KEY=VALUE...", help="style.transfer params")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to save the result")] = Path("out.png"),
    wait: Annotated[int, typer.Option(help="Let the server hold the answer up to N s (max 60)")] = PREFER_WAIT_S,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds")] = None,
) -> None:
    """Style transfer: upload both pictures, run it, save the result (e.g. `-o out.png size=256`)."""
    params = parse_assignments(assignments or [])
    with _client(ctx) as client:
        job = client.style(content, style_image, wait=wait, **params)
        if not job.done:
            _say(f"job {job.id} is {job.state}; waiting for it")
            job = job.wait(timeout=timeout)
        if not job.succeeded:
            raise typer.Exit(_finish(job))
        job.download(STYLE_OUTPUT, output)
    print(output)
    _say(f"job {job.id} succeeded; saved {output}")


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
