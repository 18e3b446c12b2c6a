"""Browser tests: Playwright (sync) driving Debian's headless Chromium, with a deadline on everything.

Playwright never downloads a browser here: every launch names an executable (``ATELIER_CHROMIUM`` or
``/usr/bin/chromium``; `.ci/run` installs Debian's package when it is missing). A missing browser is an
error, never a skip. ``browser_session`` records what a page should never do (console errors, uncaught
exceptions, Content Security Policy violations, ``alert``/``confirm``/``prompt`` dialogs, which it
dismisses) and, on the way out, closes everything within ``CLOSE_DEADLINE_S`` or kills the driver and
the browser. Test modules take the ``browser`` fixture by importing ``browser_fixture`` and defining
``browser_base_url``; a benchmark uses ``browser_session`` directly.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ENV = "ATELIER_CHROMIUM"
DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_DIR_ENV = "ATELIER_SCREENSHOT_DIR"
DEFAULT_SCREENSHOT_DIR = REPO / ".artifacts" / "screenshots"
INSTALL_HINT = "apt-get install -y --no-install-recommends chromium"

# No sandbox: CI runs as root in a container. No GPU, QUIC, background fetches, component updates or sync:
# a test browser talks to the server under test and to nothing else.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
LAUNCH_TIMEOUT_MS = 30_000  # a cold Chromium on a loaded CI host
ACTION_TIMEOUT_MS = 15_000  # clicks, fills, navigations
EXPECT_TIMEOUT_MS = 15_000  # expect(...) assertions
SCREENSHOT_TIMEOUT_MS = 15_000
SETUP_DEADLINE_S = 60.0  # driver start + launch + first page; past it the processes are killed
CLOSE_DEADLINE_S = 10.0  # context, browser and driver close; past it the processes are killed
DEFAULT_VIEWPORT = (1280, 800)
CSP_MARKER = "Content Security Policy"
DRIVER_ARG = "run-driver"  # Playwright's Node driver: `node .../cli.js run-driver`

# Runs before any page script, outside the page's CSP: records every violation the page reports.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push({
    directive: e.effectiveDirective || e.violatedDirective,
    blockedURI: e.blockedURI,
    sample: e.sample,
    sourceFile: e.sourceFile,
    line: e.lineNumber,
  });
});
"""


class BrowserUnavailable(RuntimeError):
    """No Chromium to drive: the browser tests fail (CI installs it), they never skip."""


def chromium_executable() -> Path:
    """The Chromium binary tests launch: ``$ATELIER_CHROMIUM`` or ``/usr/bin/chromium``."""
    configured = os.environ.get(CHROMIUM_ENV)
    path = Path(configured) if configured else DEFAULT_CHROMIUM
    if not (path.is_file() and os.access(path, os.X_OK)):
        source = f"${CHROMIUM_ENV}" if configured else "the default path"
        raise BrowserUnavailable(
            f"no Chromium executable at {path} ({source}). Install Debian's package ({INSTALL_HINT}) "
            f"or set {CHROMIUM_ENV} to a Chromium binary; Playwright's own browser downloads are not used."
        )
    return path


def launch(playwright: Playwright, **kw: Any) -> Browser:
    """Headless Chromium from ``chromium_executable()`` with the test flags; ``kw`` goes to ``launch``."""
    options: dict[str, Any] = {"headless": True, "timeout": LAUNCH_TIMEOUT_MS, **kw}
    options["args"] = [*CHROMIUM_ARGS, *kw.get("args", ())]
    options["executable_path"] = str(kw.get("executable_path") or chromium_executable())
    return playwright.chromium.launch(**options)


@dataclass
class BrowserSession:
    """One browser context and its first page, with what the pages did that they should not have."""

    context: BrowserContext
    page: Page = field(init=False)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_messages: list[str] = field(default_factory=list)  # console messages naming the CSP
    dialogs: list[str] = field(default_factory=list)  # "alert: <message>", dismissed
    _watched: list[Page] = field(default_factory=list, repr=False)

    def watch(self, page: Page) -> None:
        """Record ``page``'s console errors, page errors, CSP messages and dialogs (once per page)."""
        if any(seen is page for seen in self._watched):
            return
        self._watched.append(page)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.page_errors.append(f"{page.url}: {error}"))
        page.on("dialog", self._on_dialog)

    def new_page(self) -> Page:
        """Another page in the same context, watched like the first."""
        page = self.context.new_page()
        self.watch(page)
        return page

    def csp_violations(self, page: Page | None = None) -> list[dict[str, Any]]:
        """The ``securitypolicyviolation`` events ``page`` (default: the first) saw since it loaded."""
        found: list[dict[str, Any]] = (page or self.page).evaluate("window.__cspViolations || []")
        return found

    def problems(self) -> list[str]:
        """Everything recorded that a clean page never does."""
        return [
            *(f"console error: {m}" for m in self.console_errors),
            *(f"page error: {m}" for m in self.page_errors),
            *(f"dialog: {m}" for m in self.dialogs),
        ]

    def assert_clean(self) -> None:
        """Fail when any page logged an error, threw, violated the CSP or opened a dialog."""
        assert not self.problems(), "\n".join(self.problems())

    def _on_console(self, message: ConsoleMessage) -> None:
        text = f"{message.text} ({message.location.get('url', '')}:{message.location.get('lineNumber', '')})"
        if CSP_MARKER in message.text:
            self.csp_messages.append(text)
        if message.type == "error":
            self.console_errors.append(text)

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        with contextlib.suppress(PlaywrightError):  # the page may already be closing
            dialog.dismiss()


@contextlib.contextmanager
def browser_session(
    base_url: str,
    viewport: tuple[int, int] = DEFAULT_VIEWPORT,
    *,
    action_timeout_ms: int = ACTION_TIMEOUT_MS,
    expect_timeout_ms: int = EXPECT_TIMEOUT_MS,
    launch_options: dict[str, Any] | None = None,
    **context_options: Any,
) -> Iterator[BrowserSession]:
    """Start Playwright, launch Chromium, open a context on ``base_url`` and a page; close all on exit."""
    executable = chromium_executable()  # before any process starts: a clear error, not a launch failure
    kill = _Killer(_driver_pids())
    manager = sync_playwright()
    closers: list[Callable[[], object]] = [manager.__exit__]  # run last to first
    try:
        with _deadline(SETUP_DEADLINE_S, kill):
            playwright = manager.start()
            browser = launch(playwright, executable_path=executable, **(launch_options or {}))
            closers.append(browser.close)
            context = browser.new_context(
                base_url=base_url, viewport={"width": viewport[0], "height": viewport[1]}, **context_options
            )
            closers.append(context.close)
            context.set_default_timeout(action_timeout_ms)
            context.add_init_script(CSP_RECORDER)
            expect.set_options(timeout=expect_timeout_ms)
            session = BrowserSession(context=context)
            context.on("page", session.watch)  # popups and window.open
            session.page = session.new_page()
        yield session
    except BaseException:
        _shut_down(closers, kill)  # the test's own error is the one to see
        raise
    errors = _shut_down(closers, kill)
    if errors and not kill.killed:
        raise errors[0]


def _shut_down(closers: list[Callable[[], object]], kill: _Killer) -> list[Exception]:
    """Close the context, the browser and the driver within CLOSE_DEADLINE_S, else kill them; the errors seen."""
    errors: list[Exception] = []
    with _deadline(CLOSE_DEADLINE_S, kill):
        for close in reversed(closers):
            try:
                close()
            except Exception as error:  # already gone, or killed by the deadline: close the rest anyway
                errors.append(error)
    kill.reap()
    if kill.killed:
        warnings.warn(f"the browser did not start or close in time: killed pids {kill.killed}", stacklevel=2)
    return errors


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG (the whole page, or what the viewport shows) as ``<name>.png`` under
    ``$ATELIER_SCREENSHOT_DIR`` or .artifacts/screenshots/."""
    directory = Path(os.environ.get(SCREENSHOT_DIR_ENV) or DEFAULT_SCREENSHOT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'page'}.png"
    page.screenshot(path=str(path), full_page=full_page, timeout=SCREENSHOT_TIMEOUT_MS)
    return path


@pytest.fixture(name="browser")
def browser_fixture(request: pytest.FixtureRequest, browser_base_url: str) -> Iterator[BrowserSession]:
    """A ``browser_session`` on ``browser_base_url`` (the test module's fixture); a screenshot if the test fails."""
    failed_before = request.session.testsfailed
    with browser_session(browser_base_url) as session:
        yield session
        if request.session.testsfailed > failed_before:  # the call phase failed: keep what the page showed
            with contextlib.suppress(PlaywrightError):
                print(f"screenshot: {screenshot(session.page, f'failed-{request.node.nodeid}')}")


# --- deadlines: kill the driver and the browser rather than wait for ever ---------------------------


@contextlib.contextmanager
def _deadline(seconds: float, on_expiry: Callable[[], None]) -> Iterator[None]:
    """Call ``on_expiry`` from a timer thread if the block is still running after ``seconds``."""
    timer = threading.Timer(seconds, on_expiry)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class _Killer:
    """SIGKILLs the Playwright drivers this session started and every process below them (the browser)."""

    def __init__(self, drivers_before: set[int]) -> None:
        self.drivers_before = drivers_before
        self.killed: list[int] = []
        self.killed_drivers: list[int] = []

    def __call__(self) -> None:
        tree = children_by_parent()
        for driver in _driver_pids() - self.drivers_before:
            for pid in [*_descendants(driver, tree), driver]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
            self.killed_drivers.append(driver)

    def reap(self) -> None:
        """Wait for the killed drivers (this process's children), so none stays a zombie."""
        for pid in self.killed_drivers:
            with contextlib.suppress(ChildProcessError):  # asyncio's child watcher reaped it first
                os.waitpid(pid, 0)


def children_by_parent() -> dict[int, list[int]]:
    """Every live process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                # the fields after the command name, which may itself hold spaces and parentheses
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found: list[int] = []
    pending = list(tree.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(tree.get(child, []))
    return found


def _driver_pids() -> set[int]:
    """This process's children that are Playwright drivers."""
    drivers = set()
    for child in children_by_parent().get(os.getpid(), []):
        with contextlib.suppress(OSError):
            if DRIVER_ARG.encode() in (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0"):
                drivers.add(child)
    return drivers
