"""The dashboard's static files (services/api/ui/static/): what the CSP and the XSS rule rely on.

The CSP forbids inline script and eval; these checks keep the code from needing them, and keep
every job field out of HTML parsing: the only way the scripts make elements is dom.js's h(), which
sets text nodes and attributes."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[2] / "services" / "api" / "ui"
STATIC = UI / "static"
SCRIPTS = sorted((STATIC / "js").rglob("*.js"))
# Each of these parses a string as HTML or as code.
FORBIDDEN = {
    "innerHTML": re.compile(r"\.innerHTML\b"),
    "outerHTML assignment": re.compile(r"\.outerHTML\s*="),
    "insertAdjacentHTML": re.compile(r"insertAdjacentHTML"),
    "document.write": re.compile(r"document\.write"),
    "eval": re.compile(r"\beval\s*\("),
    "new Function": re.compile(r"new\s+Function\b"),
    "string setTimeout": re.compile(r"setTimeout\(\s*[\"'`]"),
    "createContextualFragment": re.compile(r"createContextualFragment"),
    "DOMParser": re.compile(r"DOMParser"),
    "inline style attribute": re.compile(r"setAttribute\(\s*[\"']style"),
}


def test_the_dashboard_has_its_scripts() -> None:
    names = {p.relative_to(STATIC / "js").as_posix() for p in SCRIPTS}
    assert {"app.js", "api.js", "dom.js", "charts.js", "views/job.js", "views/jobs.js", "views/compare.js"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_script_parses_strings_as_html_or_code(script: Path) -> None:
    source = script.read_text()
    found = [name for name, pattern in FORBIDDEN.items() if pattern.search(source)]
    assert found == [], f"{script.name} uses {found}"


def test_h_refuses_the_attributes_that_would_parse_markup_or_run_code() -> None:
    dom = (STATIC / "js" / "dom.js").read_text()
    assert '"innerHTML" || name === "style" || name === "srcdoc"' in dom
    assert 'name.startsWith("on")' in dom and 'typeof value !== "function"' in dom


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.refs += [v for k, v in values.items() if k in ("src", "href") and v]
        self._in_script = tag == "script" and "src" not in values

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_the_page_loads_nothing_from_elsewhere() -> None:
    parser = _Refs()
    parser.feed((STATIC / "index.html").read_text())
    assert parser.inline_scripts == 0
    external = [r for r in parser.refs if not (r.startswith("/ui/") or r.startswith("#"))]
    assert external == []
    for ref in parser.refs:
        if ref.startswith("/ui/"):
            assert (STATIC / ref.removeprefix("/ui/")).is_file(), ref
    for script in SCRIPTS:
        assert not re.search(r"https?://", script.read_text()), f"{script.name} names a URL elsewhere"


def test_vendored_libraries_are_the_pinned_versions_with_their_licences() -> None:
    pinned = json.loads((UI / "package.json").read_text())["dependencies"]
    locked = json.loads((UI / "package-lock.json").read_text())["packages"]
    for name, version in pinned.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned exactly: {version}"
        assert locked[f"node_modules/{name}"]["version"] == version
        assert locked[f"node_modules/{name}"]["integrity"].startswith("sha512-")
        folder = STATIC / "vendor" / name
        assert (folder / "VERSION").read_text().split() == [name, version]
        assert "Permission is hereby granted" in (folder / "LICENSE").read_text()
    header = (STATIC / "vendor" / "uplot" / "uPlot.iife.min.js").read_text()[:200]
    assert f"(v{pinned['uplot']})" in header


def _imports(script: Path) -> set[Path]:
    found = re.findall(r"""^\s*(?:import|export)\b[^;]*?from\s+["'](\.{1,2}/[^"']+)["']""", script.read_text(), re.M)
    return {(script.parent / rel).resolve() for rel in found}


def test_every_module_the_app_imports_is_preloaded() -> None:
    # The modules load level by level unless the page names them all up front (modulepreload).
    seen: set[Path] = set()
    todo = [(STATIC / "js" / "app.js").resolve()]
    while todo:
        for module in _imports(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    preloaded = set(re.findall(r'<link rel="modulepreload" href="/ui/([^"]+)">', (STATIC / "index.html").read_text()))
    assert {m.relative_to(STATIC.resolve()).as_posix() for m in seen} == preloaded
