"""Project-wide pytest configuration: in CI, a skipped test is a failure.

CI must prove every feature, so a test that skips itself because a part is missing (a
browser, a server, a model) fails the run there instead of passing silently.
"""

from __future__ import annotations

import os
import sys

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Close the widgets the tests made while ipywidgets is intact: left to interpreter
    # shutdown, each Widget.__del__ prints an "Exception ignored" traceback.
    ipywidgets = sys.modules.get("ipywidgets")
    if ipywidgets is not None:
        ipywidgets.Widget.close_all()
    if os.environ.get("CI") and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("CI") and _skipped:
        terminalreporter.write_line(f"CI=true and {len(_skipped)} test(s) skipped: this run fails.", red=True)
        for nodeid in _skipped:
            terminalreporter.write_line(f"  skipped: {nodeid}", red=True)
