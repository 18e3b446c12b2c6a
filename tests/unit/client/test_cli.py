"""The `atelier` command line: argument parsing, login's key file, output and exit codes."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from atelier_client import RetryPolicy
from atelier_client.cli import Options, app, build_submission, main, parse_assignments
from typer.testing import CliRunner

from tests.unit.client.conftest import API_KEY, BASE_URL, JOB_ID, FakeAPI, error_reply, job_json, sse

SECRET = "ak_live_do-not-print-me-7f3a9c"
EVENTS_PATH = f"/v1/jobs/{JOB_ID}/events"
TS = 1_700_000_000.0


@pytest.fixture
def options(api: FakeAPI, policy: RetryPolicy) -> Options:
    return Options(transport=httpx.MockTransport(api.handle), retry=policy)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The API's URL and key in the environment; the config file in a temp dir. Returns its path."""
    path = tmp_path / "config" / "config.toml"
    monkeypatch.setenv("ATELIER_URL", BASE_URL)
    monkeypatch.setenv("ATELIER_API_KEY", API_KEY)
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return path


# --- parsing ---------------------------------------------------------------------------------------


def test_key_value_pairs_parse_json_values_and_nest_dotted_keys() -> None:
    params = parse_assignments(
        [
            "dataset=digits",
            "steps=2000",
            "lr_g=2e-4",
            "conditional=true",
            "ema=null",
            'diffaugment=["color", "translation"]',
            "optimizer.beta.one=0.5",
            "optimizer.name=adam",
            "caption=a=b",
            "seed=007",
        ]
    )
    assert params == {
        "dataset": "digits",
        "steps": 2000,
        "lr_g": 0.0002,
        "conditional": True,
        "ema": None,
        "diffaugment": ["color", "translation"],
        "optimizer": {"beta": {"one": 0.5}, "name": "adam"},
        "caption": "a=b",
        "seed": "007",  # not valid JSON: kept as text
    }


@pytest.mark.parametrize(
    "pairs", [["steps"], ["=3"], ["a..b=1"], ["a=1", "a.b=2"], ["a.b=1", "a=2"], ["a.b=1", "a.b.c=2"]]
)
def test_malformed_or_conflicting_pairs_are_usage_errors(pairs: list[str]) -> None:
    with pytest.raises(typer.BadParameter):
        parse_assignments(pairs)


def test_a_job_file_gives_type_and_params_and_the_command_line_wins(tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "type: gan.train\n"
        "params:\n  dataset: digits\n  steps: 2000\n  diffaugment: [color]\n  nested: {a: 1, b: 2}\n"
        "webhook: https://example.test/hook\nwebhook_events_filter: [completed]\n"
    )
    # `atelier submit -f job.yaml steps=10 nested.b=3`: the first pair lands where the type would
    spec = build_submission("steps=10", ["nested.b=3"], job_file=job_file)
    assert spec.job_type == "gan.train"
    assert spec.params == {"dataset": "digits", "steps": 10, "diffaugment": ["color"], "nested": {"a": 1, "b": 3}}
    assert spec.webhook == "https://example.test/hook" and spec.webhook_events_filter == ["completed"]
    assert build_submission("style.transfer", [], job_file=job_file).job_type == "style.transfer"
    with pytest.raises(typer.BadParameter):
        build_submission(None, ["steps=1"])


# --- commands ----------------------------------------------------------------------------------------


def test_submit_prints_the_id_and_sends_the_params(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    api.on("POST", "/v1/jobs", httpx.Response(201, json=job_json()))
    job_file = tmp_path / "job.yaml"
    job_file.write_text("type: gan.train\nparams: {dataset: digits, preset: stable}\n")
    code = main(["submit", "-f", str(job_file), "steps=20", "batch_size=16"], options=options)
    assert code == 0
    assert capsys.readouterr().out.strip() == JOB_ID
    sent = json.loads(api.bodies[0])
    assert sent == {
        "type": "gan.train",
        "params": {"dataset": "digits", "preset": "stable", "steps": 20, "batch_size": 16},
    }
    assert api.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_api_errors_print_code_message_and_field_without_a_traceback(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("POST", "/v1/jobs", error_reply(422, "invalid_input", "params.steps: must be at least 1", "params.steps"))
    code = main(["submit", "gan.train", "steps=0"], options=options)
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip() == "error: invalid_input: params.steps: must be at least 1 (field: params.steps)"
    assert "Traceback" not in captured.err and captured.out == ""
    api.on("POST", f"/v1/jobs/{JOB_ID}/cancel", error_reply(404, "not_found", "job not found"))
    assert main(["cancel", JOB_ID], options=options) == 1
    assert capsys.readouterr().err.strip() == "error: not_found: job not found"


def _login_api(api: FakeAPI) -> None:
    def jobs(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] != f"Bearer {SECRET}":
            return error_reply(401, "unauthorized", "unknown API key")
        assert request.url.params["limit"] == "1"
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    api.on("GET", "/v1/jobs", jobs)


def test_login_with_the_key_on_stdin_writes_a_private_file_and_never_prints_the_key(
    env: Path, options: Options, api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _login_api(api)
    monkeypatch.delenv("ATELIER_API_KEY")
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    code = main(["login", "--url", BASE_URL, "--key-stdin"], options=options)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert SECRET not in captured.out + captured.err
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert f'api_key = "{SECRET}"' in env.read_text() and f'url = "{BASE_URL}"' in env.read_text()


def test_login_prompts_with_hidden_input_and_respects_xdg_config_home(
    options: Options, api: FakeAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _login_api(api)
    for name in ("ATELIER_URL", "ATELIER_API_KEY", "ATELIER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = CliRunner().invoke(app, ["login"], input=f"{BASE_URL}\n{SECRET}\n", obj=options)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output  # the key was typed without echo
    path = tmp_path / "xdg" / "atelier" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert SECRET in path.read_text()


def test_a_refused_key_is_not_stored(
    env: Path, options: Options, api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _login_api(api)
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong-key\n"))
    assert main(["login", "--url", BASE_URL, "--key-stdin"], options=options) == 1
    assert capsys.readouterr().err.strip() == "error: unauthorized: unknown API key"
    assert not env.exists()


def _watch_stream(api: FakeAPI, done: dict[str, object]) -> None:
    events = [
        (1, "state", {"state": "running", "attempt": 1, "error": None, "ts": TS}),
        (2, "progress", {"step": 5, "total": 10, "steps_per_second": 2.0, "eta_seconds": 2.5, "ts": TS}),
        (
            3,
            "metrics",
            {"step": 5, "values": {"d_loss": 1.25, "g_loss": 0.75, "d_real": 0.5, "d_fake": 0.25}, "ts": TS},
        ),
        (4, "warning", {"message": "D wins too easily", "ts": TS}),
        (
            5,
            "artifact",
            {
                "name": "samples/step-5.png",
                "kind": "sample",
                "step": 5,
                "size": 2048,
                "content_type": "image/png",
                "ts": TS,
            },
        ),
        (6, "progress", {"step": 10, "total": 10, "steps_per_second": 2.0, "eta_seconds": 0.0, "ts": TS}),
        (7, "done", {**done, "ts": TS}),
    ]
    api.on("GET", EVENTS_PATH, httpx.Response(200, content=sse(*events)))


@pytest.mark.parametrize(
    ("final", "error", "exit_code"),
    [
        ("succeeded", None, 0),
        ("failed", {"code": "diverged", "message": "NaN loss at step 7"}, 1),
        ("cancelled", None, 2),
        ("stopped_early", None, 3),
    ],
)
def test_watch_prints_progress_metrics_warnings_and_artifacts_then_exits_by_outcome(
    env: Path,
    options: Options,
    api: FakeAPI,
    capsys: pytest.CaptureFixture[str],
    final: str,
    error: dict[str, str] | None,
    exit_code: int,
) -> None:
    api.on(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        httpx.Response(200, json=job_json(state="running")),
        httpx.Response(200, json=job_json(state=final, error=error)),
    )
    _watch_stream(api, {"state": final, "error": error})
    code = main(["watch", JOB_ID], options=options)
    captured = capsys.readouterr()
    assert code == exit_code
    out = captured.out  # not a terminal: plain lines, no live bar
    assert "step 5/10 (50%), 2.0 steps/s, ETA 2s" in out
    assert "d_loss 1.25  g_loss 0.75  D(x) 0.5  D(G(z)) 0.25" in out
    assert "warning: D wins too easily" in out
    assert "artifact: samples/step-5.png (2.0 KiB)" in out
    assert "\x1b[" not in out
    if final == "failed":
        assert "error: diverged: NaN loss at step 7" in captured.err


def test_metrics_as_csv_json_and_a_chart(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    series = {
        "d_loss": [{"step": s, "value": 1.0 / s, "min": 0, "max": 1, "count": 1} for s in (1, 2, 3)],
        "g_loss": [{"step": s, "value": 0.5 * s, "min": 0, "max": 2, "count": 1} for s in (2, 3)],
        "d_real": [{"step": 1, "value": 0.5, "min": 0.5, "max": 0.5, "count": 1}],
    }
    api.on("GET", f"/v1/jobs/{JOB_ID}/metrics", httpx.Response(200, json={"series": series, "names": list(series)}))
    assert main(["metrics", JOB_ID, "--format", "csv"], options=options) == 0
    assert capsys.readouterr().out.splitlines() == [
        "step,d_loss,d_real,g_loss",
        "1,1.0,0.5,",
        "2,0.5,,1.0",
        "3,0.3333333333333333,,1.5",
    ]
    assert main(["metrics", JOB_ID, "--format", "json"], options=options) == 0
    assert json.loads(capsys.readouterr().out)["g_loss"][1]["value"] == 1.5
    assert main(["metrics", JOB_ID], options=options) == 0
    chart = capsys.readouterr().out
    assert "d_loss" in chart and "g_loss" in chart and "d_real" not in chart  # the losses only
    assert "\x1b[" not in chart


def test_the_live_display_draws_the_bar_the_metrics_and_the_lines_above(
    env: Path, options: Options, api: FakeAPI
) -> None:
    from atelier_client import Atelier
    from atelier_client.watch import watch
    from rich.console import Console

    api.on(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        httpx.Response(200, json=job_json(state="running")),
        httpx.Response(200, json=job_json(state="succeeded")),
    )
    _watch_stream(api, {"state": "succeeded", "error": None})
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with Atelier(transport=options.transport, retry=options.retry) as client:
        final = watch(client.get_job(JOB_ID), console, live=True)
    drawn = screen.getvalue()
    assert final.state == "succeeded"
    assert "10/10" in drawn and "D(G(z)) 0.25" in drawn
    assert "warning: D wins too easily" in drawn and "artifact: samples/step-5.png" in drawn


def test_ls_shows_a_page_or_every_job_and_show_prints_a_summary_or_json(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = [job_json(job_id=f"job-{i:02d}", state="succeeded") for i in range(7)]

    def page(request: httpx.Request) -> httpx.Response:
        start, size = int(request.url.params.get("cursor", "0")), int(request.url.params["limit"])
        end = start + size
        return httpx.Response(
            200, json={"items": jobs[start:end], "next_cursor": str(end) if end < len(jobs) else None}
        )

    api.on("GET", "/v1/jobs", page)
    assert main(["ls", "--limit", "3"], options=options) == 0
    shown = capsys.readouterr().out
    assert "job-02" in shown and "job-03" not in shown and len(api.requests) == 1
    assert main(["ls", "--all"], options=options) == 0
    every = capsys.readouterr().out
    assert all(f"job-{i:02d}" in every for i in range(7))
    api.on("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json(state="running", metrics={"g_loss": 0.5})))
    assert main(["show", JOB_ID], options=options) == 0
    summary = capsys.readouterr().out
    assert f"id        {JOB_ID}" in summary and "running (attempt 1 of 3)" in summary and "g_loss 0.5" in summary
    assert main(["show", JOB_ID, "--json"], options=options) == 0
    shown_json = json.loads(capsys.readouterr().out)
    assert shown_json["id"] == JOB_ID and shown_json["latest_metrics"] == {"g_loss": 0.5} and "client" not in shown_json


def test_metrics_zooms_into_a_step_range(env: Path, options: Options, api: FakeAPI) -> None:
    series = {"d_loss": [{"step": s, "value": 1.0, "min": 1, "max": 1, "count": 1} for s in (101, 150)]}
    reply = httpx.Response(200, json={"series": series, "names": list(series)})
    api.on("GET", f"/v1/jobs/{JOB_ID}/metrics", reply, reply)
    assert (
        main(["metrics", JOB_ID, "--format", "csv", "--since-step", "100", "--until-step", "150"], options=options) == 0
    )
    query = api.to("GET", f"/v1/jobs/{JOB_ID}/metrics")[0].url.params
    assert (query["since_step"], query["until_step"], query["max_points"]) == ("100", "150", "500")
    # Without them, the whole run: no upper bound is sent
    assert main(["metrics", JOB_ID, "--format", "csv"], options=options) == 0
    assert "until_step" not in api.to("GET", f"/v1/jobs/{JOB_ID}/metrics")[1].url.params


def test_submit_sends_the_priority_and_show_says_why_a_queued_job_waits(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a job file with a priority, and --priority on the command line (which wins)
    api.on("POST", "/v1/jobs", httpx.Response(201, json=job_json()), httpx.Response(201, json=job_json()))
    job_file = tmp_path / "job.yaml"
    job_file.write_text("type: gan.train\nparams: {dataset: digits}\npriority: low\n")
    assert main(["submit", "-f", str(job_file)], options=options) == 0
    assert main(["submit", "-f", str(job_file), "--priority", "high"], options=options) == 0
    assert [json.loads(b)["priority"] for b in api.bodies] == ["low", "high"]
    capsys.readouterr()
    # When the priority is not one of low, normal, high, Then it is a usage error naming the option
    assert main(["submit", "gan.train", "--priority", "urgent"], options=options) == 2
    assert "--priority" in capsys.readouterr().err and len(api.bodies) == 2
    # And show prints a queued job's priority, place and reason
    queued = job_json(priority="high", queueing={"position": 3, "reason": "behind 2 of your jobs"})
    api.on("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=queued))
    assert main(["show", JOB_ID], options=options) == 0
    shown = capsys.readouterr().out
    assert "priority  high" in shown
    assert "waiting   about #3 in its queue: behind 2 of your jobs" in shown
    # And a trial its sweep's rule stopped names the sweep and why
    why = "stopped at step 400: its best modes so far, 0, is below the median 5 of 3 other trials"
    stopped = job_json(state="stopped_early", sweep_id="sweep-1", early_stop={"rule": "median", "message": why})
    api.on("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=stopped))
    assert main(["show", JOB_ID], options=options) == 0
    shown = capsys.readouterr().out
    assert "sweep     sweep-1" in shown
    assert f"stopped   {why}" in shown


def _sweep_json(state: str = "running", **fields: Any) -> dict[str, Any]:
    trials = [
        {"job_id": "job-a", "params": {"lr_g": 0.0002, "seed": 1}, "state": "succeeded", "step": 30, "total": 30,
         "objective": 0.5, "error": None},
        {"job_id": "job-b", "params": {"lr_g": 0.002, "seed": 1}, "state": "succeeded", "step": 30, "total": 30,
         "objective": 0.875, "error": None},
        {"job_id": "job-c", "params": {"lr_g": 0.02, "seed": 1}, "state": "queued", "step": 0, "total": 30,
         "objective": None, "error": None},
        {"job_id": "job-d", "params": {"lr_g": 2e-7, "seed": 1}, "state": "stopped_early", "step": 12, "total": 30,
         "objective": 0.0, "error": None, "early_stop": {"rule": "median", "message": "stopped at step 10: behind"}},
    ]  # fmt: skip
    body: dict[str, Any] = {
        "id": "sweep-1",
        "type": "gan.train",
        "state": state,
        "objective": {"metric": "hq_share", "mode": "max"},
        "max_parallel": 2,
        "counts": {"succeeded": 2, "queued": 1},
        "trials": trials,
        "best": trials[1],
        "spec": {},
        "created_at": "2025-01-01T00:00:00Z",
    }
    return body | fields


def test_sweep_starts_from_a_yaml_file_and_show_ranks_the_trials_best_first(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a sweep file
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        "type: gan.train\nbase_params: {dataset: ring8, steps: 30}\ngrid: {lr_g: [0.0002, 0.002, 0.02]}\n"
        "seeds: [1]\nobjective: {metric: hq_share}\nmax_parallel: 2\n"
    )
    api.on("POST", "/v1/sweeps", httpx.Response(201, json=_sweep_json()))
    # When it is started, Then the body is the file's and the id is printed
    assert main(["sweep", "-f", str(sweep_file)], options=options) == 0
    assert capsys.readouterr().out.strip() == "sweep-1"
    sent = json.loads(api.bodies[0])
    assert sent["grid"] == {"lr_g": [0.0002, 0.002, 0.02]} and sent["objective"] == {"metric": "hq_share"}
    # When it is shown, Then the trials come best first (no value last), the best starred and named
    api.on("GET", "/v1/sweeps/sweep-1", httpx.Response(200, json=_sweep_json()))
    assert main(["sweep", "show", "sweep-1"], options=options) == 0
    shown = capsys.readouterr().out
    order = [shown.index(job) for job in ("job-b", "job-a", "job-c")]
    assert order == sorted(order), shown
    assert "job-b *" in shown and "best: job-b" in shown and "hq_share 0.875" in shown
    assert "running (1 queued, 2 succeeded)" in shown
    assert "stopped early: job-d stopped at step 10: behind" in shown
    # And cancel says what it did; no file and no command is a usage error
    api.on("POST", "/v1/sweeps/sweep-1/cancel", httpx.Response(200, json=_sweep_json(state="cancelling")))
    assert main(["sweep", "cancel", "sweep-1"], options=options) == 0
    assert "sweep sweep-1: cancelling" in capsys.readouterr().err
    assert main(["sweep"], options=options) == 2


def test_rm_deletes_jobs_says_when_one_is_stopped_first_and_an_unknown_one_exits_1(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    path = f"/v1/jobs/{JOB_ID}"
    running = {"id": JOB_ID, "state": "deleting", "stopping": True, "detail": "it stops within a step"}
    api.on("DELETE", path, httpx.Response(202, json=running))
    api.on("DELETE", "/v1/jobs/nope", error_reply(404, "not_found", "job nope not found"))
    # When a running job is removed, Then it says the job stops first, and the status is 0
    assert main(["rm", JOB_ID], options=options) == 0
    assert capsys.readouterr().err.strip() == f"job {JOB_ID} deleted: stopping it, then removing its data"
    # When an unknown job is removed beside it, Then the known one is still deleted and the status is 1
    assert main(["rm", "nope", JOB_ID], options=options) == 1
    err = capsys.readouterr().err
    assert "error: not_found: no job nope (see `atelier ls`)" in err and f"job {JOB_ID} deleted" in err
    assert [r.method for r in api.to("DELETE", path)] == ["DELETE", "DELETE"]


def test_uploads_rm_deletes_and_says_which_jobs_hold_one_that_is_in_use(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    free, used = "up-free", "up-used"
    api.on("DELETE", f"/v1/uploads/{free}", httpx.Response(202, json={"id": free, "state": "deleting", "detail": ""}))
    message = f"upload {used} is used by 1 queued or running job(s): job-9; cancel or delete them first"
    api.on("DELETE", f"/v1/uploads/{used}", error_reply(409, "conflict", message, "upload_id"))
    # When a free upload and one in use are removed, Then the free one goes, the other's jobs are named, status 1
    assert main(["uploads", "rm", used, free], options=options) == 1
    err = capsys.readouterr().err
    assert f"error: conflict: {message}" in err
    assert f"upload {free} deleted" in err
    # And the listing shows what is left
    listing = {"items": [{"id": used, "kind": "images", "filename": "cats.zip", "file_count": 3, "total_bytes": 2048,
                          "classes": ["a", "b"], "created_at": "2025-01-01T00:00:00Z"}], "next_cursor": None}  # fmt: skip
    api.on("GET", "/v1/uploads", httpx.Response(200, json=listing))
    assert main(["uploads", "ls"], options=options) == 0
    out = capsys.readouterr().out
    assert used in out and "cats.zip" in out and "2.0 KiB" in out and "a, b" in out


def test_usage_prints_stored_bytes_against_the_quota_and_this_months_gpu_time(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {
        "stored": {"artifacts": 3 * 1024**2, "checkpoints": 1024**2, "uploads": 2048, "total": 4 * 1024**2 + 2048},
        "storage_quota_bytes": 10 * 1024**3, "storage_left_bytes": 10 * 1024**3 - 4 * 1024**2 - 2048,
        "metric_rows": 123456, "jobs": 7, "gpu_seconds_this_month": 3725.0, "month_start": "2026-11-01T00:00:00Z",
    }  # fmt: skip
    api.on("GET", "/v1/usage", httpx.Response(200, json=body))
    assert main(["usage"], options=options) == 0
    out = capsys.readouterr().out
    assert "stored       4.0 MiB (artifacts 3.0 MiB, checkpoints 1.0 MiB, uploads 2.0 KiB)" in out
    assert "quota        10.0 GiB (10.0 GiB left)" in out
    assert "metric rows  123,456" in out and "jobs         7" in out
    assert "gpu time     1h02m this month" in out
