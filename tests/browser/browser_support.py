"""Helpers for the browser tests: Debian's Chromium driven by Playwright (sync API) against a real
workspace server (tests/e2e/e2e_support.Workspace), signed in through the link `cible studio` prints.

Every page a test looks at goes through `Studio.look(page, name)`: a PNG screenshot into the
screenshots folder ($CIBLE_STUDIO_SCREENSHOTS, else <repo>/build/studio-screenshots), an axe-core
check that fails on any "serious" or "critical" issue, and a check that the page raised no script
error and had nothing refused by its Content-Security-Policy.

Chromium is never downloaded (no `playwright install`): the distribution's package, launched with
flags that keep it off the network (only loopback is reachable here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from e2e_support import REPO, Workspace

try:  # a declared test dependency; without it the `browser` fixture skips (fails under CI)
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)  # an expect() waits this long unless told (Playwright's default: 5 s)
except ImportError:  # pragma: no cover
    expect = None

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERIOUS = ("serious", "critical")
TIMEOUT_MS = 30_000  # Playwright's default wait for one expect/wait_for


def chromium_path() -> str | None:
    """Debian's /usr/bin/chromium (or $CIBLE_CHROMIUM, or `chromium` on PATH); None when missing."""
    given = os.environ.get("CIBLE_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def screenshots_dir() -> Path:
    folder = Path(os.environ.get("CIBLE_STUDIO_SCREENSHOTS") or REPO / "build" / "studio-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def record_timings(key: str, value: Any) -> Path:
    """Merge {key: value} into timings.json in the screenshots folder (for the closing note)."""
    path = screenshots_dir() / "timings.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known[key] = value
    path.write_text(json.dumps(known, indent=2) + "\n")
    return path


PAINT_JS = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
    return {first_paint_ms: paint['first-paint'] ?? null, first_contentful_paint_ms: paint['first-contentful-paint'],
            response_start_ms: nav.responseStart, response_end_ms: nav.responseEnd,
            dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd,
            transfer_bytes: nav.transferSize};
}"""


def paint_timings(page: Any, url: str, loads: int) -> dict[str, Any]:
    """Chromium's own timings of `loads` loads of `url` (ms from navigation start): first contentful
    paint, first byte, DOMContentLoaded; each load's, and their medians."""
    seen = []
    for _ in range(loads):
        page.goto(url, wait_until="load")
        page.wait_for_function("() => performance.getEntriesByName('first-contentful-paint').length > 0",
                               timeout=10_000)
        seen.append(page.evaluate(PAINT_JS))
    fcp = [load["first_contentful_paint_ms"] for load in seen]
    return {
        "loads": seen,
        "first_contentful_paint_ms_median": statistics.median(fcp),
        "first_contentful_paint_ms_min": min(fcp),
        "first_contentful_paint_ms_max": max(fcp),
        "response_start_ms_median": statistics.median(load["response_start_ms"] for load in seen),
        "dom_content_loaded_ms_median": statistics.median(load["dom_content_loaded_ms"] for load in seen),
        "target_ms": 300,
    }


def describe_violations(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v.get('impact')}): {v.get('help')}  [{v.get('helpUrl', '')}]")
        for node in v.get("nodes", [])[:5]:
            summary = " ".join((node.get("failureSummary") or "").split())
            lines.append(f"    at {node.get('target')}: {node.get('html', '')[:160]}")
            if summary:
                lines.append(f"       {summary[:300]}")
        if len(v.get("nodes", [])) > 5:
            lines.append(f"    ... and {len(v['nodes']) - 5} more")
    return "\n".join(lines)


class Studio:
    """One workspace's studio seen through one Chromium."""

    def __init__(self, workspace: Workspace, browser: Any) -> None:  # a playwright Browser
        self.ws = workspace
        self.browser = browser
        self.url = ""  # the server's base URL, known from the first printed link
        self._errors: dict[int, list[str]] = {}  # id(page) -> its script errors and CSP refusals

    # -- signing in --------------------------------------------------------------------------
    def link(self, page: str = "") -> str:
        """The sign-in link `cible studio [PAGE]` prints (alone on stdout)."""
        args = ("studio", page) if page else ("studio",)
        out = self.ws.cible(*args).stdout.strip()
        assert len(out.splitlines()) == 1, f"`cible studio` printed more than the link on stdout: {out!r}"
        parts = urlsplit(out)
        assert parts.hostname == "127.0.0.1" and parts.path == "/sign-in", out
        assert parse_qs(parts.query).get("code"), out
        self.url = f"{parts.scheme}://{parts.netloc}"
        return out

    def base_url(self) -> str:
        if not self.url:
            self.link()  # mints a code nobody redeems: harmless, it expires
        return self.url

    def context(self) -> Any:
        """A fresh browser context (no cookie); its pages record their script errors."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", self._watch)
        return context

    def page(self, context: Any) -> Any:
        page = context.new_page()  # _watch ran on it (context "page" event)
        page.on("dialog", lambda dialog: dialog.accept())  # an hx-confirm says yes
        return page

    def signed_in(self, page_path: str = "/jobs") -> tuple[Any, Any]:
        """A new context signed in through a printed link, and its page on `page_path`."""
        context = self.context()
        page = self.page(context)
        page.goto(self.link(page_path))
        self.wait_path(page, page_path)
        return context, page

    def wait_path(self, page: Any, path: str) -> None:
        page.wait_for_url(lambda url: urlsplit(url).path == urlsplit(path).path, timeout=TIMEOUT_MS)

    # -- looking at a page -------------------------------------------------------------------
    @staticmethod
    def ended_job_page_settled(page: Any) -> None:
        """An ended job's page once its live parts have read everything (job.js marks data-done;
        the parameters panel has loaded): what a screenshot should show."""
        for live in ("#job-log", "#metric-charts"):  # a sweep or pipeline shows no log of its own
            if page.locator(live).count():
                expect(page.locator(live)).to_have_attribute("data-done", "true")
        if page.locator("#params-panel").count():
            expect(page.locator("#params-panel")).not_to_contain_text("Loading")

    def _watch(self, page: Any) -> None:
        errors = self._errors.setdefault(id(page), [])
        page.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))

        def console(message: Any) -> None:
            text = message.text
            if message.type == "error" and re.search(r"Content Security Policy|Refused to", text):
                errors.append(f"CSP: {text}")

        page.on("console", console)

    def look(self, page: Any, name: str, axe: bool = True) -> Path:
        """Screenshot the page (full height) as NAME.png; fail on a script error, a CSP refusal, a live
        part that could not fetch its data, or the workspace token in the page; then axe-core."""
        page.wait_for_load_state("load")
        path = screenshots_dir() / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        errors = list(self._errors.get(id(page), []))
        token = (self.ws.home / "token").read_text().strip()
        if token in page.url or token in page.content():
            errors.append("the workspace token is in the page or its URL")
        # The studio's scripts mark a live part whose data could not be fetched with data-error.
        errors += [f"data-error on {where}" for where in page.eval_on_selector_all(
            "[data-error]", "els => els.map(e => `#${e.id || e.tagName.toLowerCase()}: ${e.dataset.error}`)")]
        assert not errors, f"page {name} ({page.url}):\n" + "\n".join(errors)
        if axe:
            self.check_accessibility(page, name)
        return path

    def check_accessibility(self, page: Any, name: str) -> None:
        from axe_playwright_python.sync_playwright import Axe

        violations = Axe().run(page).response["violations"]
        serious = [v for v in violations if v.get("impact") in SERIOUS]
        minor = [v for v in violations if v.get("impact") not in SERIOUS]
        if minor:
            print(f"\naxe on {name}: {len(minor)} minor/moderate issue(s):\n{describe_violations(minor)}")
        assert not serious, (f"axe-core found serious/critical accessibility issues on {name} ({page.url}):\n"
                             f"{describe_violations(serious)}")
