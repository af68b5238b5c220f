"""Fixtures of the browser tests (tests/lab): Chromium, a `jupyter lab` per comm mode, a fresh page per test.

The helpers are in `lab_helpers.py`. A missing Chromium or JupyterLab fails the tests;
they are never skipped.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_helpers import CHROMIUM, SCREENSHOTS, SETTINGS, WAIT, Lab, LabServer
from playwright.sync_api import Browser, sync_playwright

_screenshot_dirs: list[Path] = []


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium; a missing browser fails the tests."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (install Debian's `chromium` or set STREAMCHAT_CHROMIUM)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module", params=list(SETTINGS))
def lab_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A `jupyter lab` subprocess, with default settings or with comms over subshells disabled."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        pytest.fail("JupyterLab is not installed: `pip install -e .[dev]` installs it")
    server = LabServer(request.param, tmp_path_factory.mktemp(f"lab-{request.param}"))
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab(browser: Browser, lab_server: LabServer, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A fresh JupyterLab page (its own browser context); kernels are shut down afterwards."""
    name = re.sub(r"[^\w.-]+", "-", request.node.name).strip("-")  # the test and its parameters
    screenshots = SCREENSHOTS / lab_server.mode / name
    if screenshots.exists():
        shutil.rmtree(screenshots)
    screenshots.mkdir(parents=True)
    if SCREENSHOTS not in _screenshot_dirs:
        _screenshot_dirs.append(SCREENSHOTS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT)
    lab = Lab(lab_server, page, screenshots)
    try:
        lab.start()
        yield lab
    finally:
        with contextlib.suppress(Exception):
            lab.screenshot("last")
        context.close()
        lab_server.shutdown_kernels()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the screenshots are."""
    for folder in _screenshot_dirs:
        terminalreporter.write_line(f"JupyterLab screenshots (light and dark theme): {folder}")
