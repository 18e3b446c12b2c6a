"""End to end in a real browser: the dashboard (services/api/ui/) in Debian's Chromium, driven by
Playwright, against the API in its own process (uvicorn with EdgeProtocol), a real Celery worker,
Postgres, Redis and the S3 server. Each test saves screenshots of the pages it saw
(tests/support/browser.py: $ATELIER_SCREENSHOT_DIR or .artifacts/screenshots/); `make screenshots`
copies the job page's into docs/img/ for the README."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db.models import Job, Upload
from tests.conftest import Caller
from tests.support import services
from tests.support.browser import BrowserSession, browser_fixture, screenshot  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

FIRST_POINTS_TIMEOUT_MS = 180_000  # the worker's first job imports torch and loads the data
TRAIN_TIMEOUT_MS = 240_000
STYLE_TIMEOUT_MS = 240_000
API_TIMEOUT_S = 10.0
XSS = "<img src=x onerror=alert(1)>"
# Small enough to train in seconds on one CPU thread; long enough to watch it learn, then cancel it.
WATCHED_GAN = {
    "steps": "3000", "batch_size": "16", "ngf": "8", "ndf": "8", "nz": "8", "sample_every": "25",
    "checkpoint_every": "500",
}  # fmt: skip
TINY_GAN: dict[str, Any] = {
    "dataset": "digits", "image_size": 16, "steps": 20, "batch_size": 16, "ngf": 8, "ndf": 8, "nz": 8,
    "sample_every": 10, "checkpoint_every": 10, "image_metrics": False,
}  # fmt: skip
# A style model that trains in seconds on one CPU thread (random VGG weights: nothing to download).
TINY_STYLE_MODEL = {
    "batch_size": "1", "width": "8", "residual_blocks": "1", "weights": "random", "content_layers": "relu1_2",
    "style_layers": "relu1_2",
}  # fmt: skip
CLASSES = ("circles", "squares")
PICTURES_PER_CLASS = 8


@pytest.fixture(scope="module")
def api_url(settings: Settings, log_dir: Path) -> Iterator[str]:
    """The API as deployed, in its own process on a free loopback port."""
    port = services.free_port()
    proc = services.api_server(settings, log_dir, port, name="api-dashboard").start()
    proc.wait_for_log("Application startup complete", timeout=60)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture
def browser_base_url(api_url: str) -> str:
    return api_url


def sign_in(page: Page, key: str, path: str = "#/jobs") -> None:
    """Open a page and sign in through the form, as a person would."""
    page.goto(f"/{path}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign in")).to_have_count(0)


def api(url: str, caller: Caller, method: str, path: str, **kw: Any) -> Any:
    response = httpx.request(method, f"{url}{path}", headers=caller.headers, timeout=API_TIMEOUT_S, **kw)
    assert response.status_code < 300, response.text
    return response.json()


def wait_done(url: str, caller: Caller, job_id: str, timeout_s: float = TRAIN_TIMEOUT_MS / 1000) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = api(url, caller, "GET", f"/v1/jobs/{job_id}")
        if job["state"] in ("succeeded", "failed", "cancelled", "stopped_early"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout_s} s"
        time.sleep(0.5)


def points(page: Page, chart: str) -> int:
    return int(page.locator(f'figure.chart[data-chart="{chart}"]').get_attribute("data-points") or 0)


def expected_refusals(browser: BrowserSession, status: str) -> None:
    """Chromium logs every 4xx answer as a console error: drop those the test asked for (at least one)."""
    refused = [m for m in browser.console_errors if f"status of {status}" in m]
    assert refused, f"no {status} answer was logged"
    browser.console_errors[:] = [m for m in browser.console_errors if m not in refused]


def loaded(image: Any) -> bool:
    """An <img> that has decoded a picture."""
    return bool(image.evaluate("(img) => img.complete && img.naturalWidth > 0"))


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.25)


def class_folders(root: Path) -> Path:
    """root/circles/*.png and root/squares/*.png: two classes of small drawn pictures."""
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(PICTURES_PER_CLASS):
            picture = Image.new("RGB", (24, 24), "black")
            draw = ImageDraw.Draw(picture)
            box = (3 + i % 4, 3 + i % 3, 18 + i % 4, 18 + i % 3)
            (draw.ellipse if cls == "circles" else draw.rectangle)(box, fill=(255, 255 - 20 * i, 40))
            picture.save(root / cls / f"{i}.png")
    return root


def zipped(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*.png")):
            archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def png(color: tuple[int, int, int], size: int = 48) -> bytes:
    picture = Image.radial_gradient("L").resize((size, size)).convert("RGB")
    ImageDraw.Draw(picture).rectangle((0, 0, size // 3, size // 3), fill=color)
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def test_a_wrong_key_gets_a_clear_message_and_the_key_stays_out_of_urls_and_cookies(
    browser: BrowserSession, alice: Caller
) -> None:
    page = browser.page
    page.goto("/#/jobs")
    # Given a mistyped key, the form says it was not accepted, and keeps nothing
    page.get_by_label("API key").fill("atl_not_a_real_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#api-key-error")).to_have_text("That API key was not accepted (401). Check it and try again.")
    assert page.evaluate("() => sessionStorage.getItem('atelier.apiKey')") is None
    screenshot(page, "sign-in-wrong-key")
    # When the right key is given, the jobs page opens; the key is in sessionStorage only
    page.get_by_label("API key").fill(alice.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('atelier.apiKey')") == alice.key
    assert alice.key not in page.url
    assert browser.context.cookies() == []
    # And a key revoked while signed in sends the user back to sign in, saying why
    page.evaluate("() => sessionStorage.setItem('atelier.apiKey', 'atl_revoked')")
    page.goto("/#/new/gan")
    expect(page.locator("#api-key-error")).to_contain_text("not accepted (401)")
    expected_refusals(browser, "401")
    browser.assert_clean()


def test_train_from_the_form_watch_curves_and_grids_move_then_cancel_then_delete(
    browser: BrowserSession, alice: Caller, worker: services.Proc, api_url: str
) -> None:
    page = browser.page
    sign_in(page, alice.key, "#/new/gan")
    # Given the form: a value the schema refuses is named next to its field, before anything is sent
    page.locator("#field-steps").fill("0")
    expect(page.locator("#error-steps")).to_have_text("steps: must be at least 1")
    page.locator("#field-dataset").select_option("digits")
    page.locator("#field-image_size").select_option("16")
    page.locator("#advanced summary").click()
    for name, value in WATCHED_GAN.items():
        page.locator(f"#field-{name}").fill(value)
    page.locator("#field-image_metrics").select_option("false")
    expect(page.locator("#error-steps")).to_be_empty()
    # And a value only the server can judge (too many sample grids for 3,000 steps): its 422 lands by the field
    page.locator("#field-sample_every").fill("1")
    page.locator("#submit-job").click()
    expect(page.locator("#error-sample_every")).to_contain_text("sample_every")
    expect(page).to_have_url(re.compile(r"#/new/gan$"))
    expected_refusals(browser, "422")
    screenshot(page, "new-gan-job")
    # When it is sent with a sound value
    page.locator("#field-sample_every").fill(WATCHED_GAN["sample_every"])
    page.locator("#submit-job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f-]{36}$"))
    page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page ever reloads
    # Then the loss chart gains points while it trains, with no reload
    wait_for(lambda: points(page, "Losses") > 0, FIRST_POINTS_TIMEOUT_MS / 1000, "the first loss points")
    first = points(page, "Losses")
    wait_for(lambda: points(page, "Losses") > first + 10, 60, "more loss points")
    # And the sample grid is replaced as new grids arrive
    grid = page.locator("#sample-grid")
    expect(grid).to_have_attribute("data-name", re.compile(r"^samples/step-\d+\.png$"), timeout=60_000)
    shown = grid.get_attribute("data-name")
    expect(grid).not_to_have_attribute("data-name", shown or "", timeout=60_000)
    wait_for(lambda: loaded(grid), 30, "the sample grid's picture")
    assert page.evaluate("() => window.__sameDocument") is True
    for chart in ("D(x) and D(G(z))", "Gradient norms", "Learning rates"):
        assert points(page, chart) > 0, chart
    screenshot(page, "job")
    screenshot(page, "job-top", full_page=False)  # the README's picture (make screenshots)
    # And dragging across a chart asks the server for that range only, in finer buckets (every chart
    # follows the cursor, so each asks for its own series)
    chart = page.locator('figure.chart[data-chart="Losses"]')
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    with page.expect_response(lambda r: "/metrics?names=d_loss" in r.url and "until_step=" in r.url) as zoomed:
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
    body = zoomed.value.json()
    assert body["until_step"] > body["since_step"] >= 0
    assert all(body["since_step"] < p["step"] <= body["until_step"] for p in body["series"]["d_loss"])
    expect(chart.get_by_role("button", name="Reset zoom")).to_be_visible()
    chart.get_by_role("button", name="Reset zoom").click()
    expect(chart.get_by_role("button", name="Reset zoom")).to_be_hidden()
    page.get_by_label("Log scale").check()
    page.get_by_label("Smoothing").fill("0.9")
    # When it is cancelled from the page, the state changes there, and on the jobs page open beside it
    jobs_page = browser.new_page()  # its own tab: sessionStorage is per tab, so it signs in too
    sign_in(jobs_page, alice.key, "#/jobs")
    row = jobs_page.locator(f'tr[data-job-id="{page.url.rsplit("/", 1)[-1]}"]')
    expect(row).to_have_attribute("data-state", "running")
    page.locator("#cancel-job").click()
    page.locator("#confirm-cancel").click()
    expect(page.locator("#job-state [data-state]")).to_have_attribute("data-state", "cancelled", timeout=60_000)
    expect(row).to_have_attribute("data-state", "cancelled", timeout=30_000)
    assert jobs_page.evaluate("() => performance.getEntriesByType('navigation').length") == 1
    screenshot(page, "job-cancelled")
    screenshot(jobs_page, "jobs")
    # And deleting it from its page (asked twice) lands on the jobs list without it, and the API says 404
    job_id = page.url.rsplit("/", 1)[-1]
    page.locator("#delete-job").click()
    expect(page.locator("#confirm-delete")).to_be_focused()
    page.locator("#confirm-delete").click()
    expect(page).to_have_url(re.compile(r"#/jobs$"))
    expect(page.locator("#jobs-table tbody tr").first).to_be_visible()
    expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_have_count(0)
    expect(row).to_have_count(0, timeout=30_000)  # the other tab's list drops it on its next poll
    assert httpx.get(f"{api_url}/v1/jobs/{job_id}", headers=alice.headers, timeout=API_TIMEOUT_S).status_code == 404
    browser.assert_clean()


def test_upload_class_folders_by_folder_and_by_zip_then_train_on_them(
    browser: BrowserSession, alice: Caller, worker: services.Proc, tmp_path: Path
) -> None:
    page = browser.page
    root = class_folders(tmp_path / "pictures")
    sign_in(page, alice.key, "#/new/gan")
    status = page.locator("#dataset-drop-status")
    # Given a folder of class folders chosen in the page (packed into a zip by the page itself)
    page.locator("#dataset-drop-folder").set_input_files(root)
    expect(status).to_contain_text(f"{2 * PICTURES_PER_CLASS} pictures, classes: circles, squares", timeout=30_000)
    expect(page.locator("#dataset-drop progress")).to_have_js_property("value", 1)
    # And a zip of the same folders dropped on the zone
    page.locator("#dataset-drop-files").set_input_files(
        files=[{"name": "shapes.zip", "mimeType": "application/zip", "buffer": zipped(root)}]
    )
    expect(status).to_contain_text("Uploaded shapes.zip", timeout=30_000)
    upload_id = page.locator("#dataset-drop").get_attribute("data-upload-id")
    assert upload_id is not None
    expect(page.locator("#field-dataset")).to_have_value(upload_id)
    expect(page.locator("#dataset-classes")).to_have_text("Classes: circles, squares")
    # When a short run is submitted on it
    page.locator("#field-steps").fill("20")
    page.locator("#field-image_size").select_option("16")
    page.locator("#advanced summary").click()
    for name, value in {"batch_size": "8", "ngf": "8", "ndf": "8", "nz": "8", "sample_every": "10"}.items():
        page.locator(f"#field-{name}").fill(value)
    page.locator("#field-image_metrics").select_option("false")
    screenshot(page, "new-gan-job-upload")
    page.locator("#submit-job").click()
    # Then it trains on the upload to the end, and the page shows its final samples
    expect(page.locator("#job-state [data-state]")).to_have_attribute(
        "data-state", "succeeded", timeout=TRAIN_TIMEOUT_MS
    )
    expect(page.locator(".summary")).to_contain_text(upload_id)
    wait_for(lambda: loaded(page.locator("#art-samples-final-png")), 30, "the final samples")
    wait_for(lambda: loaded(page.locator("#art-samples-interpolation-png")), 30, "the interpolation strip")
    browser.assert_clean()


def test_style_transfer_shows_the_result_beside_its_inputs(
    browser: BrowserSession, alice: Caller, worker: services.Proc, api_url: str
) -> None:
    page = browser.page
    sign_in(page, alice.key, "#/new/style")
    # Given a built-in content picture and two styles: one dropped, one built-in, blended 0.75 / 0.25
    page.locator("#field-content").select_option("astronaut")
    page.locator("#style-drop-files").set_input_files(
        files=[{"name": "my-style.png", "mimeType": "image/png", "buffer": png((30, 90, 220))}]
    )
    expect(page.locator(".style-row")).to_have_count(1, timeout=30_000)
    page.locator("#add-style").click()
    expect(page.locator(".style-row")).to_have_count(2)
    page.locator(".style-blend").first.fill("0.75")
    page.locator(".style-blend").nth(1).fill("0.25")
    page.locator("#field-size").fill("48")
    page.locator("#field-steps").fill("10")
    page.locator("details summary", has_text="Advanced").click()
    page.locator("#field-weights").fill("random")  # random VGG weights: nothing to download
    # When it runs
    page.locator("#run-style").click()
    # Then the result appears beside the inputs: the dropped style shown from the page's own copy
    result = page.locator("#style-result")
    expect(result).to_be_visible()
    expect(result.locator(".input-picture")).to_have_count(3)
    expect(result).to_have_attribute("data-done", "succeeded", timeout=STYLE_TIMEOUT_MS)
    output = page.locator("#style-output")
    expect(output).to_have_attribute("data-name", "output.png")
    wait_for(lambda: loaded(output), 30, "the output picture")
    screenshot(page, "style-transfer")
    href = result.get_by_role("link", name=re.compile("^Open job")).get_attribute("href") or ""
    job = api(api_url, alice, "GET", f"/v1/jobs/{href.rsplit('/', 1)[-1]}")
    assert job["params"]["style_blend"] == [0.75, 0.25]
    assert job["params"]["content"] == "astronaut"
    browser.assert_clean()


def test_train_a_style_model_then_list_it_apply_it_to_a_dropped_picture_and_delete_it(
    browser: BrowserSession, alice: Caller, worker: services.Proc, api_url: str
) -> None:
    page = browser.page
    sign_in(page, alice.key, "#/new/style-model")
    # Given the form for a new style model: a size under the schema's minimum is named by its field
    page.locator("#field-size").fill("16")
    expect(page.locator("#error-size")).to_have_text("size: must be at least 32")
    page.locator("#field-size").fill("32")
    expect(page.locator("#error-size")).to_be_empty()
    page.locator("#train-style-1").select_option("coffee")
    page.locator("#field-steps").fill("3")
    page.locator("#advanced summary").click()
    for name, value in TINY_STYLE_MODEL.items():
        page.locator(f"#field-{name}").fill(value)
    screenshot(page, "new-style-model")
    # When it is trained, the job page offers the model once the job succeeded
    page.locator("#train-style").click()
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f-]{36}$"))
    model_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#job-state [data-state]")).to_have_attribute(
        "data-state", "succeeded", timeout=STYLE_TIMEOUT_MS
    )
    expect(page.locator("#apply-model")).to_have_attribute("href", f"#/apply?model={model_id}")
    trained = api(api_url, alice, "GET", f"/v1/jobs/{model_id}")["params"]
    assert (trained["styles"], trained["size"], trained["steps"], trained["width"]) == (["coffee"], 32, 3, 8)
    # Then the models page lists it, with its preview picture, method, styles and size
    page.get_by_role("link", name="Style models").click()
    row = page.locator(f'tr[data-model-id="{model_id}"]')
    expect(row).to_contain_text("johnson")
    expect(row).to_contain_text("coffee")
    expect(row).to_contain_text("32 px · 3 steps")
    expect(row.get_by_role("link", name=f"Training job of model {model_id[:8]}")).to_have_attribute(
        "href", f"#/jobs/{model_id}"
    )
    wait_for(lambda: loaded(row.locator("img.model-preview")), 30, "the model's preview")
    screenshot(page, "models")
    # When "Apply" opens the apply page with it chosen
    row.get_by_role("link", name=f"Apply model {model_id[:8]}").click()
    expect(page).to_have_url(re.compile(r"#/apply\?model=" + model_id + "$"))
    expect(page.locator("#field-model")).to_have_value(model_id)
    expect(page.locator("#johnson-options")).to_be_visible()
    expect(page.locator("#adain-options")).to_be_hidden()
    wait_for(lambda: loaded(page.locator("#apply-model-preview")), 30, "the chosen model's preview")
    page.locator("#images-drop-files").set_input_files(
        files=[{"name": "my-photo.png", "mimeType": "image/png", "buffer": png((200, 60, 40), 64)}]
    )
    expect(page.locator("#apply-uploads li")).to_have_count(1, timeout=30_000)
    # Then a size the schema refuses is named by its field before anything is sent, and one only the
    # server can judge (more memory than its workers have) gets the API's 422 by the same field
    page.locator("#field-size").fill("16")
    expect(page.locator("#error-size")).to_have_text("size: must be at least 32")
    page.locator("#field-size").fill("100000")
    page.locator("#apply-run").click()
    expect(page.locator("#error-size")).to_contain_text("100000 px")
    expect(page.locator("#apply-result")).to_be_hidden()
    expected_refusals(browser, "422")
    # And with a sound size the styled picture shows beside the dropped one, in one Prefer: wait request
    page.locator("#field-size").fill("48")
    expect(page.locator("#error-size")).to_be_empty()
    page.locator("#field-strength").fill("0.8")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/jobs")) as posted:
        page.locator("#apply-run").click()
    assert posted.value.headers.get("prefer") == "wait=60"
    result = page.locator("#apply-result")
    expect(result).to_have_attribute("data-done", "succeeded", timeout=STYLE_TIMEOUT_MS)
    output = page.locator("#apply-output")
    source = result.locator(".input-picture img")
    expect(source).to_have_count(1)
    wait_for(lambda: loaded(output) and loaded(source), 30, "the styled picture and its input")
    out_box, in_box = output.bounding_box(), source.bounding_box()
    assert out_box and in_box and out_box["x"] > in_box["x"] + in_box["width"] - 1  # beside it, to its right
    screenshot(page, "apply-style-model")
    applied = api(api_url, alice, "GET", "/v1/jobs", params={"type": "style.apply"})["items"]
    assert len(applied) == 1 and applied[0]["state"] == "succeeded"
    params = applied[0]["params"]
    assert (params["model"], params["size"], params["strength"]) == (model_id, 48, 0.8)
    upload_id = page.locator("#apply-uploads li").get_attribute("data-upload-id")
    assert params["images"] == [upload_id]
    # When a batch (the dropped picture and a built-in one) is answered before it ends (Prefer: wait=0 here)
    page.route("**/v1/jobs", lambda route: route.continue_(headers={**route.request.headers, "prefer": "wait=0"}))
    page.locator("#builtin-astronaut").check()
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/v1/jobs")) as answered:
        page.locator("#apply-run").click()
    assert answered.value.json()["state"] in ("queued", "running")
    page.unroute("**/v1/jobs")
    # Then the page follows the job to its end and offers outputs.zip, with the count
    expect(result).to_have_attribute("data-done", "succeeded", timeout=STYLE_TIMEOUT_MS)
    expect(result.locator(".input-picture")).to_have_count(2)
    expect(page.locator("#apply-count")).to_have_text("2 styled pictures in a zip")
    with page.expect_download() as download:
        page.locator("#apply-download").click()
    assert download.value.suggested_filename == "outputs.zip"
    batch = api(api_url, alice, "GET", "/v1/jobs", params={"type": "style.apply", "limit": 1})["items"][0]
    assert batch["params"]["images"] == [upload_id, "astronaut"]
    # When it is deleted from the models page, after the inline confirm
    page.get_by_role("link", name="Style models").click()
    row = page.locator(f'tr[data-model-id="{model_id}"]')
    row.get_by_role("button", name=f"Delete model {model_id[:8]}").click()
    row.get_by_role("button", name="Yes, delete it").click()
    # Then it is gone from the list and from the API
    expect(row).to_have_count(0)
    expect(page.locator("#models-table")).to_contain_text("No style models yet")
    assert api(api_url, alice, "GET", "/v1/models")["items"] == []
    browser.assert_clean()


def test_compare_two_runs_overlays_curves_grids_and_what_differs(
    browser: BrowserSession, alice: Caller, worker: services.Proc, api_url: str
) -> None:
    # Given two finished runs that differ in their learning rate only
    ids = [
        api(api_url, alice, "POST", "/v1/jobs", json={"type": "gan.train", "params": TINY_GAN | {"lr_g": lr}})["id"]
        for lr in (2e-4, 1e-3)
    ]
    for job_id in ids:
        assert wait_done(api_url, alice, job_id)["state"] == "succeeded"
    page = browser.page
    sign_in(page, alice.key, "#/jobs")
    # When both are picked on the jobs page and compared
    for job_id in ids:
        page.get_by_label(f"Select job {job_id[:8]} to compare").check()
    page.locator("#compare-selected").click()
    expect(page).to_have_url(re.compile(r"#/compare\?ids=" + re.escape(",".join(ids)) + "$"))
    # Then every chart has both runs' curves, both final grids show, and the table names lr_g only
    charts = page.locator("#compare-charts figure.chart")
    expect(charts.first).to_be_visible()
    assert charts.count() >= 4
    losses = page.locator('#compare-charts figure.chart[data-chart="d_loss"]')
    wait_for(lambda: int(losses.get_attribute("data-points") or 0) >= 2 * TINY_GAN["steps"], 15, "both runs' d_loss")
    grids = page.locator("img.compare-grid")
    expect(grids).to_have_count(2)
    for i in range(2):
        wait_for(lambda i=i: loaded(grids.nth(i)), 30, f"grid {i}")
    expect(page.locator("tr[data-param]")).to_have_count(1)
    expect(page.locator('tr[data-param="lr_g"]')).to_contain_text("0.0002")
    expect(page.locator('tr[data-param="lr_g"]')).to_contain_text("0.001")
    expect(page.locator('tr[data-metric="d_loss"] td')).to_have_count(2)
    screenshot(page, "compare")
    browser.assert_clean()


# Three good generator rates, then three too small to learn: by step 400 the median rule stops the latter.
RULED_SWEEP: dict[str, Any] = {
    "type": "gan.train",
    "base_params": {
        "dataset": "ring8", "preset": "stable", "steps": 600, "batch_size": 64, "lr_d": 1e-3, "eval_every": 100,
        "sample_every": 600, "checkpoint_every": 600,
    },
    "grid": {"lr_g": [1e-3, 1e-6]},
    "seeds": [1, 2, 3],
    "objective": {"metric": "modes"},
    "max_parallel": 1,
    "early_stopping": {"rule": "median", "min_steps": 400, "interval": 100, "min_trials": 2},
}  # fmt: skip


def test_a_sweep_page_ranks_its_trials_says_why_some_stopped_and_opens_them_in_compare(
    browser: BrowserSession, alice: Caller, worker: services.Proc, api_url: str
) -> None:
    # Given a finished 6-trial sweep whose three hopeless trials its rule stopped early
    sweep_id = api(api_url, alice, "POST", "/v1/sweeps", json=RULED_SWEEP)["id"]
    deadline = time.monotonic() + TRAIN_TIMEOUT_MS / 1000
    while (sweep := api(api_url, alice, "GET", f"/v1/sweeps/{sweep_id}"))["state"] != "done":
        assert time.monotonic() < deadline, f"the sweep did not end: {sweep['counts']}"
        time.sleep(0.5)
    assert sweep["counts"] == {"succeeded": 3, "stopped_early": 3}, sweep["counts"]
    best = sweep["best"]["job_id"]
    page = browser.page
    # When the sweeps page is opened, and the sweep from it
    sign_in(page, alice.key, "#/sweeps")
    row = page.locator(f'#sweeps-table tr[data-sweep-id="{sweep_id}"]')
    expect(row).to_contain_text("modes (max)")
    expect(row).to_contain_text("median from step 400")
    row.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"#/sweeps/{sweep_id}$"))
    # Then the table has every trial, ranked by the objective, the best starred on top
    rows = page.locator("#sweep-trials tbody tr")
    expect(rows).to_have_count(6)
    expect(rows.first).to_have_attribute("data-job-id", best)
    expect(rows.first).to_have_class("best")
    expect(rows.first).to_contain_text("★")
    expect(page.locator('#sweep-trials tbody tr[data-state="stopped_early"]')).to_have_count(3)
    expect(page.locator("#sweep-trials tbody tr").nth(5)).to_have_attribute("data-state", "stopped_early")
    expect(page.locator('#sweep-summary dd[data-field="early stopping"]')).to_contain_text("median: every 100 steps")
    # And each stopped trial says why, with the step and the median it fell below
    notes = page.locator("#sweep-stops li")
    expect(notes).to_have_count(3)
    expect(notes.first).to_contain_text("stopped at step 400: its best modes so far, 0, is below the median")
    # And the curves overlay the started trials' objective by step
    curve = page.locator('#sweep-curves figure.chart[data-chart="modes"]')
    expect(curve).to_be_visible()
    wait_for(lambda: int(curve.get_attribute("data-points") or 0) >= 6, 15, "the trials' modes curves")
    # And sorting by the rate puts the hopeless rate first
    page.locator('#sweep-trials button[data-sort="param:lr_g"]').click()
    expect(page.locator("#sweep-trials tbody tr").first).to_contain_text("1.00e-6")
    screenshot(page, "sweep")
    # And two picked trials open in the Compare view
    page.get_by_label(f"Select trial {best[:8]} to compare").check()
    stopped_id = page.locator('#sweep-trials tbody tr[data-state="stopped_early"]').first.get_attribute("data-job-id")
    assert stopped_id is not None
    page.get_by_label(f"Select trial {stopped_id[:8]} to compare").check()
    page.locator("#sweep-compare").click()
    expect(page).to_have_url(re.compile(r"#/compare\?ids="))
    expect(page.locator("#compare-charts figure.chart").first).to_be_visible()
    # And the stopped trial's own page says why it stopped, and links back to its sweep
    page.goto(f"/#/jobs/{stopped_id}")
    expect(page.locator("#job-early-stop")).to_contain_text("Stopped early: stopped at step 400")
    expect(page.get_by_role("link", name=sweep_id[:8])).to_have_attribute("href", f"#/sweeps/{sweep_id}")
    browser.assert_clean()


def test_hostile_job_fields_and_upload_names_render_as_text(
    browser: BrowserSession, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given a failed job whose params, error and warning, and an upload whose name and class, are markup
    job_id = uuid.uuid4()
    with sessions() as session:
        session.add(Job(
            id=job_id, tenant_id=alice.tenant_id, type="gan.train", queue="gpu", state="failed",
            params={"dataset": XSS, "preset": XSS}, error_code="invalid_input", error_message=XSS, warnings=[XSS],
        ))  # fmt: skip
        session.add(Upload(
            tenant_id=alice.tenant_id, filename=XSS, kind="images", file_count=1, total_bytes=1, manifest=[],
            classes=[XSS],
        ))  # fmt: skip
        session.commit()
    page = browser.page
    # When the jobs page, the job page and the form (which lists uploads) show them
    sign_in(page, alice.key, "#/jobs")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_contain_text(XSS)
    page.goto(f"/#/jobs/{job_id}")
    expect(page.locator("#job-error")).to_contain_text(XSS)
    expect(page.locator("#job-warnings")).to_contain_text(XSS)
    page.locator("details summary", has_text="Parameters").click()
    expect(page.locator("table.kv")).to_contain_text(json.dumps(XSS))
    screenshot(page, "xss-job")
    page.goto("/#/new/gan")
    expect(page.locator("#field-dataset option", has_text=XSS)).to_have_count(1)
    # Then it is text: no element was made of it, no script ran, nothing even tried
    for url in ("/#/jobs", f"/#/jobs/{job_id}", "/#/new/gan"):
        page.goto(url)
        page.wait_for_load_state("networkidle")
        assert page.locator("img[src='x']").count() == 0, url
    assert browser.dialogs == []
    assert browser.csp_violations() == []
    browser.assert_clean()


def test_pages_fit_a_phone_and_every_control_has_a_label(browser: BrowserSession, alice: Caller) -> None:
    page = browser.page
    page.set_viewport_size({"width": 390, "height": 844})
    # Given sign-in by keyboard alone: the key field has focus, Enter submits
    page.goto("/#/jobs")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(alice.key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    unlabelled = """() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !el.closest('[hidden]') && el.type !== 'file')
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                        && !el.textContent.trim() && !el.closest('fieldset')?.querySelector('legend'))
        .map((el) => el.outerHTML.slice(0, 80))"""
    for path, ready in (
        ("#/jobs", "#jobs-table"),
        ("#/new/gan", "#field-steps"),
        ("#/new/style", "#field-size"),
        ("#/compare", "#compare-go"),
        ("#/sweeps", "#sweeps-table"),
        ("#/models", "#models-table"),
        ("#/apply", "#field-size"),
        ("#/new/style-model", "#field-steps"),
    ):
        page.goto(f"/{path}")
        expect(page.locator(ready)).to_be_visible()
        # Then nothing is wider than the phone, and every control has a name a screen reader can say
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, path
        assert page.evaluate(unlabelled) == [], path
        screenshot(page, f"phone-{path.strip('#/').replace('/', '-')}")
    browser.assert_clean()


def test_a_labelled_runs_page_charts_its_class_coverage(
    browser: BrowserSession, alice: Caller, worker: services.Proc, api_url: str
) -> None:
    # Given a finished digits run with image metrics, evaluated at steps 10 and 20
    params = TINY_GAN | {"image_metrics": True, "eval_every": 10}
    job_id = api(api_url, alice, "POST", "/v1/jobs", json={"type": "gan.train", "params": params})["id"]
    assert wait_done(api_url, alice, job_id)["state"] == "succeeded"
    names = api(api_url, alice, "GET", f"/v1/jobs/{job_id}/metrics")["names"]
    assert {"fd", "class_kl", "class_confidence"} <= set(names), names
    # When its page opens
    page = browser.page
    sign_in(page, alice.key, f"#/jobs/{job_id}")
    # Then the class coverage chart shows class_kl and class_confidence at both ticks, beside FD's
    wait_for(lambda: points(page, "Class coverage") > 0, 30, "the class coverage points")
    chart = page.locator('figure.chart[data-chart="Class coverage"]')
    expect(chart).to_contain_text("class_kl")
    expect(chart).to_contain_text("class_confidence")
    assert points(page, "Class coverage") >= 2 and points(page, "Fréchet distance and KID") >= 2
    browser.assert_clean()
