"""Trained style models from the client: the calls behind models/model/delete_model, their pagination,
the typed Model, and the CLI's `atelier models ls|show|rm` and `atelier style --model` (upload, submit
with Prefer: wait, follow, download output.png or outputs.zip)."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from atelier_client import AsyncAtelier, Atelier, AtelierError, Model, NotFound, RetryPolicy, calls
from atelier_client.cli import Options, main
from atelier_client.uploads import picture_parts

from tests.unit.client.conftest import API_KEY, BASE_URL, JOB_ID, FakeAPI, FakeClock, error_reply, job_json, sse
from tests.unit.client.test_files import file_parts, png

MODEL_ID = "5d0c9a7e-2222-4333-8444-555566667777"
UPLOAD_ID = "9e8d7c6b-3333-4444-8555-666677778888"
MODEL_PATH = f"/v1/models/{MODEL_ID}"
ARTIFACTS_PATH = f"/v1/jobs/{JOB_ID}/artifacts"
TS = 1_700_000_000.0


def model_json(model_id: str = MODEL_ID, **fields: Any) -> dict[str, Any]:
    """A model body as the API renders it."""
    body: dict[str, Any] = {
        "id": model_id,
        "method": "johnson",
        "styles": ["coffee"],
        "style_blend": None,
        "size": 256,
        "steps": 2000,
        "width": 32,
        "residual_blocks": 5,
        "final_metrics": {"style_loss": 1.5, "content_loss": 2.0},
        "source_job": model_id,
        "created_at": "2025-01-02T03:04:05Z",
        "bytes": 6_700_000,
        "preview": f"/v1/jobs/{model_id}/artifacts/preview.png",
        "card": f"/v1/jobs/{model_id}/artifacts/model.json",
    }
    body.update(fields)
    return body


def _pager(items: list[dict[str, Any]], size: int):  # type: ignore[no-untyped-def]
    def reply(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        end = start + size
        return httpx.Response(
            200, json={"items": items[start:end], "next_cursor": str(end) if end < len(items) else None}
        )

    return reply


# --- the calls -----------------------------------------------------------------------------------


def test_the_model_calls_name_their_method_path_and_params() -> None:
    # When each call is built
    page = calls.list_models(limit=5, cursor="c-1")
    first = calls.list_models()
    one = calls.get_model("../jobs")
    gone = calls.delete_model(MODEL_ID)
    # Then each has its method, path and query, and a user's id cannot change the path
    assert (page.method, page.path, page.params) == ("GET", "/v1/models", {"limit": 5, "cursor": "c-1"})
    assert first.params == {"limit": calls.DEFAULT_PAGE_SIZE}
    assert (one.method, one.path) == ("GET", "/v1/models/..%2Fjobs")
    assert (gone.method, gone.path) == ("DELETE", MODEL_PATH)
    # And a delete may be sent again (a repeat answers 204), as may the reads
    assert gone.idempotent and page.idempotent and one.idempotent


def test_a_model_is_typed_and_extra_fields_are_ignored(atelier: Atelier, api: FakeAPI) -> None:
    # Given a model with a blend of two styles and a field this client does not know
    body = model_json(styles=["coffee", "chelsea"], style_blend=[0.7, 0.3], preview=None, brand_new={"x": 1})
    api.on("GET", MODEL_PATH, httpx.Response(200, json=body))
    # When it is read
    model = atelier.model(MODEL_ID)
    # Then every field is typed
    assert isinstance(model, Model)
    assert (model.id, model.method, model.source_job) == (MODEL_ID, "johnson", MODEL_ID)
    assert model.styles == ["coffee", "chelsea"] and model.style_blend == [0.7, 0.3]
    assert (model.size, model.steps, model.width, model.residual_blocks, model.bytes) == (256, 2000, 32, 5, 6_700_000)
    assert model.final_metrics == {"style_loss": 1.5, "content_loss": 2.0}
    assert model.created_at is not None and model.created_at.year == 2025
    assert model.preview is None and model.card == f"/v1/jobs/{MODEL_ID}/artifacts/model.json"
    request = api.requests[0]
    assert (request.method, request.url.path) == ("GET", MODEL_PATH)
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_models_walks_every_page_and_models_page_reads_one(atelier: Atelier, api: FakeAPI) -> None:
    # Given 5 models, served two to a page
    api.on("GET", "/v1/models", _pager([model_json(f"m-{i}") for i in range(5)], 2))
    # When every model is listed
    ids = [m.id for m in atelier.models(page_size=2)]
    # Then all come, in the server's order, one request per page, each after the previous cursor
    assert ids == [f"m-{i}" for i in range(5)]
    pages = api.to("GET", "/v1/models")
    assert [r.url.params.get("cursor") for r in pages] == [None, "2", "4"]
    assert {r.url.params["limit"] for r in pages} == {"2"}
    # And one page can be read on its own, with the cursor of the next
    page = atelier.models_page(limit=2, cursor="2")
    assert [m.id for m in page.items] == ["m-2", "m-3"] and page.next_cursor == "4"
    last = atelier.models_page(limit=2, cursor="4")
    assert [m.id for m in last.items] == ["m-4"] and last.next_cursor is None


def test_models_walks_every_page_asynchronously(async_atelier: AsyncAtelier, api: FakeAPI) -> None:
    # Given 3 models served two to a page, and one model to read
    api.on("GET", "/v1/models", _pager([model_json(f"m-{i}") for i in range(3)], 2))
    api.on("GET", MODEL_PATH, httpx.Response(200, json=model_json()))

    async def run() -> tuple[list[str], str]:
        async with async_atelier:
            listed = [m.id async for m in async_atelier.models()]
            return listed, (await async_atelier.model(MODEL_ID)).id

    # When they are read with the async client, Then the answers match the sync client's
    assert asyncio.run(run()) == (["m-0", "m-1", "m-2"], MODEL_ID)
    assert api.to("GET", "/v1/models")[0].url.params["limit"] == str(calls.DEFAULT_PAGE_SIZE)


def test_delete_model_answers_none_on_204_and_not_found_on_404(atelier: Atelier, api: FakeAPI) -> None:
    # Given a model that is deleted, then deleted again (204 both times), and an unknown one
    api.on("DELETE", MODEL_PATH, httpx.Response(204))
    api.on("DELETE", "/v1/models/unknown", error_reply(404, "not_found", "model not found"))
    # When they are deleted, Then the first two return nothing and the unknown one is NotFound
    assert atelier.delete_model(MODEL_ID) is None
    assert atelier.delete_model(MODEL_ID) is None
    with pytest.raises(NotFound) as raised:
        atelier.delete_model("unknown")
    assert raised.value.status == 404 and str(raised.value) == "not_found: model not found"
    assert [r.method for r in api.requests] == ["DELETE"] * 3


def test_a_delete_is_retried_after_a_503_like_every_idempotent_call(
    atelier: Atelier, api: FakeAPI, clock: FakeClock
) -> None:
    # Given an API that is briefly unavailable
    api.on(
        "DELETE",
        MODEL_PATH,
        error_reply(503, "unavailable", "database unavailable", **{"Retry-After": "2"}),
        httpx.Response(204),
    )
    # When the model is deleted, Then the delete is sent again after Retry-After and succeeds
    atelier.delete_model(MODEL_ID)
    assert len(api.to("DELETE", MODEL_PATH)) == 2 and clock.sleeps == [2.0]


def test_async_delete_maps_404_to_not_found(async_atelier: AsyncAtelier, api: FakeAPI) -> None:
    # Given a model another tenant owns (a 404, never a 403)
    api.on("DELETE", MODEL_PATH, error_reply(404, "not_found", "model not found"))

    async def run() -> None:
        async with async_atelier:
            await async_atelier.delete_model(MODEL_ID)

    # When it is deleted, Then NotFound is raised
    with pytest.raises(NotFound):
        asyncio.run(run())


# --- applying a model from the library -------------------------------------------------------------


def test_apply_style_uploads_local_pictures_once_and_keeps_names_in_order(
    atelier: Atelier, api: FakeAPI, tmp_path: Path
) -> None:
    # Given two local pictures around a built-in name
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(png((1, 2, 3)))
    second.write_bytes(png((4, 5, 6)))
    api.on("POST", "/v1/uploads", httpx.Response(201, json={"id": UPLOAD_ID, "file_count": 2}))
    api.on("POST", "/v1/jobs", httpx.Response(200, json=job_json(type="style.apply", state="succeeded")))
    # When the model is applied to them
    job = atelier.apply_style(MODEL_ID, ["astronaut", first, str(second)], size=384, strength=0.25)
    # Then both files went up as ONE upload, whose id stands where the first local picture was
    [upload] = api.to("POST", "/v1/uploads")
    assert [name for name, _data in file_parts(upload, api.bodies[0])] == ["a.png", "b.png"]
    body = json.loads(api.bodies[1])
    assert body == {
        "type": "style.apply",
        "params": {"model": MODEL_ID, "images": ["astronaut", UPLOAD_ID], "size": 384, "strength": 0.25},
    }
    assert api.to("POST", "/v1/jobs")[0].headers["Prefer"] == "wait=60"
    assert job.succeeded


def test_files_and_folders_go_up_as_one_zip_and_clashing_names_are_refused(tmp_path: Path) -> None:
    # Given a picture and a folder of two
    photo = tmp_path / "photo.png"
    photo.write_bytes(png((9, 9, 9)))
    folder = tmp_path / "holiday"
    folder.mkdir()
    for name in ("1.png", "2.png"):
        (folder / name).write_bytes(png((7, 7, 7)))
    # When they are made into upload parts
    [part] = picture_parts([photo, folder])
    data = b"".join(part.chunks())
    # Then one zip holds them all, the folder's pictures under its name
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["photo.png", "holiday/1.png", "holiday/2.png"]
    assert part.content_type == "application/zip"
    # And two pictures that would share a name in the upload are refused before anything is sent
    other = tmp_path / "other"
    other.mkdir()
    (other / "photo.png").write_bytes(png((1, 1, 1)))
    with pytest.raises(AtelierError) as raised:
        picture_parts([photo, other / "photo.png"])
    assert raised.value.code == "duplicate_name"


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def options(api: FakeAPI, policy: RetryPolicy) -> Options:
    return Options(transport=httpx.MockTransport(api.handle), retry=policy)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The API's URL and key in the environment; the working directory a temp dir, returned."""
    monkeypatch.setenv("ATELIER_URL", BASE_URL)
    monkeypatch.setenv("ATELIER_API_KEY", API_KEY)
    monkeypatch.setenv("ATELIER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_models_ls_prints_a_table_or_json(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 3 models, one of them a blend
    models = [model_json(f"model-{i}") for i in range(2)]
    models.append(model_json("model-2", styles=["coffee", "chelsea"], style_blend=[0.7, 0.3]))
    api.on("GET", "/v1/models", _pager(models, 100))
    # When they are listed with a limit, Then only that many rows are shown
    assert main(["models", "ls", "--limit", "2"], options=options) == 0
    table = capsys.readouterr().out
    assert "model-1" in table and "model-2" not in table
    assert "STYLES" in table and "6.4 MiB" in table
    # When every model is listed, Then the blend shows its weights
    assert main(["models", "ls", "--all"], options=options) == 0
    assert "coffee 0.7 + chelsea 0.3" in capsys.readouterr().out
    # When they are listed as JSON, Then it parses and holds every field
    assert main(["models", "ls", "--json"], options=options) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in listed] == ["model-0", "model-1", "model-2"]
    assert listed[0]["created_at"] == "2025-01-02T03:04:05+00:00" and listed[0]["residual_blocks"] == 5


def test_models_show_prints_a_summary_or_json_and_a_404_exits_1(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", MODEL_PATH, httpx.Response(200, json=model_json()))
    api.on("GET", "/v1/models/nope", error_reply(404, "not_found", "model not found"))
    # When a model is shown, Then its summary names its styles, network, losses and source job
    assert main(["models", "show", MODEL_ID], options=options) == 0
    summary = capsys.readouterr().out
    assert f"id          {MODEL_ID}" in summary
    assert "width 32, 5 residual blocks" in summary and "content_loss 2" in summary
    assert f"source job  {MODEL_ID}" in summary and "preview.png" in summary
    # When it is shown as JSON, Then the JSON is the model
    assert main(["models", "show", MODEL_ID, "--json"], options=options) == 0
    assert json.loads(capsys.readouterr().out)["final_metrics"] == {"style_loss": 1.5, "content_loss": 2.0}
    # When an unknown model is shown, Then a clear error goes to stderr and the exit status is 1
    assert main(["models", "show", "nope"], options=options) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: not_found: no model nope (see `atelier models ls`)"
    assert captured.out == ""


def test_models_rm_deletes_and_an_unknown_model_exits_1(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("DELETE", MODEL_PATH, httpx.Response(204))
    api.on("DELETE", "/v1/models/nope", error_reply(404, "not_found", "model not found"))
    # When a model is removed, Then it is deleted and the exit status is 0
    assert main(["models", "rm", MODEL_ID], options=options) == 0
    assert capsys.readouterr().err.strip() == f"model {MODEL_ID} deleted"
    # When an unknown model is removed beside a known one, Then the known one is still deleted and the status is 1
    assert main(["models", "rm", "nope", MODEL_ID], options=options) == 1
    err = capsys.readouterr().err
    assert "error: not_found: no model nope" in err and f"model {MODEL_ID} deleted" in err
    assert [r.url.path for r in api.to("DELETE", MODEL_PATH)] == [MODEL_PATH] * 2


def _styled_api(api: FakeAPI, artifact: str, data: bytes, *, job: dict[str, Any] | None = None) -> None:
    """An API whose style.apply job succeeds at once and saved ``artifact``."""
    api.on("POST", "/v1/uploads", httpx.Response(201, json={"id": UPLOAD_ID, "file_count": 1}))
    api.on("POST", "/v1/jobs", httpx.Response(200, json=job or job_json(type="style.apply", state="succeeded")))
    api.on("GET", ARTIFACTS_PATH, httpx.Response(200, json={"items": [{"name": artifact, "size": len(data)}]}))
    api.on("GET", f"{ARTIFACTS_PATH}/{artifact}", httpx.Response(200, content=data))


def _submitted(api: FakeAPI) -> tuple[dict[str, Any], httpx.Request]:
    [request] = api.to("POST", "/v1/jobs")
    return json.loads(api.bodies[api.requests.index(request)]), request


def test_style_with_a_model_uploads_submits_with_prefer_wait_and_saves_styled_name_png(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given one local picture and a job that finishes within the wait
    (env / "photo.jpg").write_bytes(png((10, 20, 30)))
    result = png((200, 100, 50))
    _styled_api(api, "output.png", result)
    # When it is styled with the options given
    args = ["style", "--model", MODEL_ID, "photo.jpg", "--size", "256", "--strength", "0.5", "--preserve-colors"]
    code = main(args, options=options)
    # Then the picture went up, the job was submitted with Prefer: wait and the params, and output.png was saved
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [upload] = api.to("POST", "/v1/uploads")
    assert [name for name, _data in file_parts(upload, api.bodies[0])] == ["photo.jpg"]
    body, request = _submitted(api)
    assert request.headers["Prefer"] == "wait=60"
    assert body == {
        "type": "style.apply",
        "params": {
            "model": MODEL_ID,
            "images": [UPLOAD_ID],
            "size": 256,
            "strength": 0.5,
            "preserve_colors": True,
        },
    }
    assert (env / "styled-photo.png").read_bytes() == result
    assert captured.out.strip() == "styled-photo.png"
    assert [r.url.path for r in api.requests[-2:]] == [ARTIFACTS_PATH, f"{ARTIFACTS_PATH}/output.png"]


def test_style_with_several_pictures_sends_one_upload_and_saves_styled_zip(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a picture, a folder of pictures and a built-in name, and a job that saved outputs.zip
    (env / "photo.png").write_bytes(png((1, 1, 1)))
    (env / "more").mkdir()
    (env / "more" / "a.png").write_bytes(png((2, 2, 2)))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("photo.png", png((3, 3, 3)))
    _styled_api(api, "outputs.zip", archive.getvalue())
    # When they are styled
    assert main(["style", "-m", MODEL_ID, "photo.png", "more", "astronaut", "--wait", "30"], options=options) == 0
    # Then the files went up as ONE zip, the built-in name was passed as a name, and styled.zip was saved
    [upload] = api.to("POST", "/v1/uploads")
    [(name, data)] = file_parts(upload, api.bodies[0])
    with zipfile.ZipFile(io.BytesIO(data)) as sent:
        assert name == "pictures.zip" and sent.namelist() == ["photo.png", "more/a.png"]
    body, request = _submitted(api)
    assert body["params"] == {"model": MODEL_ID, "images": [UPLOAD_ID, "astronaut"]}
    assert request.headers["Prefer"] == "wait=30"
    assert (env / "styled.zip").read_bytes() == archive.getvalue()
    assert capsys.readouterr().out.strip() == "styled.zip"


def test_a_built_in_name_is_sent_as_it_is_unless_a_path_of_that_name_exists(
    env: Path, options: Options, api: FakeAPI
) -> None:
    # Given no file named astronaut
    result = png((5, 5, 5))
    _styled_api(api, "output.png", result)
    # When the built-in picture is styled into a folder
    (env / "out").mkdir()
    assert main(["style", "--model", MODEL_ID, "astronaut", "-o", "out"], options=options) == 0
    # Then nothing was uploaded, the name went as it is, and the default name landed in that folder
    assert api.to("POST", "/v1/uploads") == []
    assert _submitted(api)[0]["params"]["images"] == ["astronaut"]
    assert (env / "out" / "styled-astronaut.png").read_bytes() == result
    # Given a file of that very name in the working directory
    api.requests.clear()
    api.bodies.clear()
    (env / "astronaut").write_bytes(png((6, 6, 6)))
    # When it is styled again to a file, Then the file wins: it is uploaded and its upload id is sent
    assert main(["style", "--model", MODEL_ID, "astronaut", "-o", "mine.png"], options=options) == 0
    assert len(api.to("POST", "/v1/uploads")) == 1
    assert _submitted(api)[0]["params"]["images"] == [UPLOAD_ID]
    assert (env / "mine.png").read_bytes() == result


def test_style_follows_a_job_that_outlives_the_wait_then_downloads(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a job still running when the POST answers, which then succeeds
    result = png((8, 8, 8))
    _styled_api(api, "output.png", result, job=job_json(type="style.apply", state="running"))
    api.on("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json(type="style.apply", state="succeeded")))
    done = (2, "done", {"state": "succeeded", "error": None, "ts": TS})
    progress = (1, "progress", {"step": 1, "total": 1, "steps_per_second": 2.0, "eta_seconds": 0.0, "ts": TS})
    api.on("GET", f"/v1/jobs/{JOB_ID}/events", httpx.Response(200, content=sse(progress, done)))
    # When the built-in picture is styled
    code = main(["style", "--model", MODEL_ID, "coffee"], options=options)
    # Then its events were followed like `atelier watch` (on stderr) and the result was saved
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert api.to("GET", f"/v1/jobs/{JOB_ID}/events")
    assert "step 1/1" in captured.err and captured.out.strip() == "styled-coffee.png"
    assert (env / "styled-coffee.png").read_bytes() == result


def test_a_failed_style_job_prints_its_error_exits_1_and_saves_nothing(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a job that fails
    error = {"code": "too_large", "message": "out of GPU memory at 4096 px"}
    _styled_api(api, "output.png", b"", job=job_json(type="style.apply", state="failed", error=error))
    # When a picture is styled
    code = main(["style", "--model", MODEL_ID, "astronaut", "--size", "4096"], options=options)
    # Then its error is printed, the status is 1, and nothing was downloaded or written
    captured = capsys.readouterr()
    assert code == 1
    assert "error: too_large: out of GPU memory at 4096 px" in captured.err and captured.out == ""
    assert api.to("GET", ARTIFACTS_PATH) == [] and list(env.iterdir()) == []


def test_style_without_a_model_still_transfers_and_strength_needs_a_model(
    env: Path, options: Options, api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a style.transfer job that succeeds at once
    api.on("POST", "/v1/jobs", httpx.Response(200, json=job_json(type="style.transfer", state="succeeded")))
    api.on("GET", f"{ARTIFACTS_PATH}/output.png", httpx.Response(200, content=b"png"))
    # When two built-in pictures are given without --model, Then a style.transfer job is run into out.png
    assert main(["style", "astronaut", "coffee", "steps=10", "--size", "128"], options=options) == 0
    body, _request = _submitted(api)
    assert body == {
        "type": "style.transfer",
        "params": {"content": "astronaut", "styles": ["coffee"], "steps": 10, "size": 128},
    }
    assert (env / "out.png").read_bytes() == b"png"
    capsys.readouterr()
    # When --strength is given without --model, Then it is a usage error and nothing is sent
    sent = len(api.requests)
    assert main(["style", "astronaut", "coffee", "--strength", "0.5"], options=options) == 2
    assert "--strength needs --model" in capsys.readouterr().err
    assert len(api.requests) == sent


def test_the_async_client_applies_a_model_the_same_way(
    async_atelier: AsyncAtelier, api: FakeAPI, tmp_path: Path
) -> None:
    # Given a folder of pictures and a built-in name
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "x.png").write_bytes(png((4, 4, 4)))
    api.on("POST", "/v1/uploads", httpx.Response(201, json={"id": UPLOAD_ID, "file_count": 1}))
    api.on("POST", "/v1/jobs", httpx.Response(200, json=job_json(type="style.apply", state="succeeded")))

    async def run() -> str:
        async with async_atelier:
            return (await async_atelier.apply_style(MODEL_ID, [folder, "chelsea"], preserve_colors=True, wait=10)).id

    # When the model is applied with the async client
    assert asyncio.run(run()) == JOB_ID
    # Then the folder went up zipped, and the job was submitted with Prefer: wait and the same params
    [(name, _data)] = file_parts(api.to("POST", "/v1/uploads")[0], api.bodies[0])
    body, request = _submitted(api)
    assert name == "batch.zip" and request.headers["Prefer"] == "wait=10"
    assert body["params"] == {"model": MODEL_ID, "images": [UPLOAD_ID, "chelsea"], "preserve_colors": True}


def test_a_wait_over_the_servers_cap_is_refused_before_anything_is_uploaded(
    env: Path, options: Options, api: FakeAPI
) -> None:
    # Given a local picture
    (env / "photo.png").write_bytes(png((1, 2, 3)))
    # When it is styled with a wait over 60 s, Then it is a usage error and nothing was sent
    assert main(["style", "--model", MODEL_ID, "photo.png", "--wait", "61"], options=options) == 2
    assert api.requests == []
