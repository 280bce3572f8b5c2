"""Browser fixtures: one workspace server and one Chromium per module (both take seconds to start).

Chromium is Debian's package (scripts/test.sh installs it when it can); without it the tests skip,
except under CI=true where they fail. Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # e2e_support: the Workspace

from browser_support import CHROMIUM_ARGS, Studio, chromium_path
from e2e_support import Workspace


def pytest_collection_modifyitems(config, items):
    """Everything under tests/browser is an e2e test and a browser test, marked or not."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.browser)


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI runs the browser tests: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    executable = chromium_path()
    if executable is None:
        _unavailable("no Chromium (/usr/bin/chromium): on Debian, apt-get install chromium "
                     "(scripts/test.sh does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """One workspace (and server) for the module; a module that needs MLflow overrides this."""
    ws = Workspace(tmp_path_factory.mktemp("studio"))
    yield ws
    ws.stop()


@pytest.fixture(scope="module")
def studio(workspace: Workspace, browser) -> Studio:
    return Studio(workspace, browser)
