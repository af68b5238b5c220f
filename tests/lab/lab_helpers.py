"""Helpers of the browser tests: a `jupyter lab` subprocess, a JupyterLab page, an open notebook.

`LabServer` starts JupyterLab on a free 127.0.0.1 port with a token, a temporary root
directory for the test notebooks, config/data/runtime/settings/workspace directories of
its own, this checkout first on `PYTHONPATH` (the kernels inherit it) and
`STREAMCHAT_PROVIDER=demo`. `SETTINGS` names the two ways it runs: JupyterLab's
defaults, where widget comms go over kernel subshells (`commsOverSubshells:
"perCommTarget"`, so comm handlers can run on a thread of their own), and that setting
`"disabled"`, set through `overrides.json` in the app settings directory. Pages are
opened with `expose_app_in_browser`, so the helpers reach JupyterLab's command registry
as `window.jupyterapp`, as the toolbar and menus do.

Waits are on DOM conditions with generous timeouts: the machine may be slow and shared.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("STREAMCHAT_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("STREAMCHAT_LAB_SCREENSHOTS", REPO / "build" / "lab-screenshots"))
"""Where the tests write their screenshots (light and dark theme); printed at the end of the run."""

STARTUP_TIMEOUT = 180.0  # seconds for JupyterLab to answer; a shared 2-core machine can be slow
WAIT = 60_000  # milliseconds for a DOM condition (a kernel start, a turn)

SETTINGS: dict[str, dict[str, Any]] = {
    # JupyterLab's defaults: comm messages go to kernel subshells, one per comm target.
    "default": {},
    "comms-without-subshells": {"@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"}},
}
# In both: no news/update toast over the notebook (it needs the internet, and covers buttons).
_QUIET = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LabServer:
    """A running `jupyter lab`: its URL, token, root directory and REST helpers."""

    def __init__(self, mode: str, base: Path) -> None:
        self.mode = mode
        self.token = uuid.uuid4().hex
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.root = base / "root"
        self.root.mkdir()
        settings = base / "app-settings"
        settings.mkdir()
        (settings / "overrides.json").write_text(json.dumps({**_QUIET, **SETTINGS[mode]}))
        self.log_path = base / "jupyter-lab.log"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("STREAMCHAT_", "JUPYTER_", "JPY_")) and key != "PYTHONPATH"
        }
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            STREAMCHAT_PROVIDER="demo",
            JUPYTER_CONFIG_DIR=str(base / "config"),
            JUPYTER_DATA_DIR=str(base / "data"),
            JUPYTER_RUNTIME_DIR=str(base / "runtime"),
            PYTHONUNBUFFERED="1",
        )
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.app_settings_dir={settings}",
            f"--LabApp.user_settings_dir={base / 'user-settings'}",
            f"--LabApp.workspaces_dir={base / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",
            *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
        ]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.root)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"token {self.token}"}, timeout=30)

    def wait_until_ready(self) -> None:
        """Wait for the server to answer its status API (fails with the server's log)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jupyter lab exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("api/status").status_code == 200:
                    return
            time.sleep(0.25)
        pytest.fail(f"jupyter lab did not answer within {STARTUP_TIMEOUT:.0f} s:\n{self.log()}")

    def log(self) -> str:
        """The server's output so far (the last 6000 characters)."""
        return self.log_path.read_text(errors="replace")[-6000:]

    def write_notebook(self, name: str, cells: list[str]) -> str:
        """Write a notebook of code cells (Python 3 kernel) into the root directory; return its path."""
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        nbformat.write(nb, self.root / name)
        return name

    def shutdown_kernels(self) -> None:
        """Delete every session (and so shut its kernel down)."""
        for session in self.http.get("api/sessions").json():
            self.http.delete(f"api/sessions/{session['id']}")

    def stop(self) -> None:
        """Stop the server (and its kernels)."""
        with contextlib.suppress(httpx.HTTPError):
            self.shutdown_kernels()
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self._log.close()


class Notebook:
    """An open notebook in the page: run cells, wait for them, read their output from the DOM."""

    def __init__(self, lab: Lab, path: str) -> None:
        self.lab = lab
        self.page = lab.page
        self.path = path
        self.panel = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

    def cell(self, index: int) -> Locator:
        """The cell at `index`."""
        return self.panel.locator(f'.jp-Notebook .jp-Cell[data-windowed-list-index="{index}"]')

    def output(self, index: int) -> Locator:
        """The output area of the cell at `index`."""
        return self.cell(index).locator(".jp-Cell-outputArea")

    def run(self, index: int, *, wait: bool = True, timeout: float = WAIT) -> None:
        """Run the cell at `index` (as its toolbar button does); wait for it to finish unless told not to."""
        # Not awaited: the command's promise settles only when the cell has finished.
        self.page.evaluate(
            """(index) => {
                const panel = window.jupyterapp.shell.currentWidget;
                panel.content.activeCellIndex = index;
                panel.content.deselectAll();
                void window.jupyterapp.commands.execute('notebook:run-cell');
            }""",
            index,
        )
        self.wait_for_prompt(index, timeout=timeout)
        if wait:
            self.wait_until_done(index, timeout=timeout)

    def wait_for_prompt(self, index: int, *, timeout: float = WAIT) -> None:
        """Wait until the cell has been sent to the kernel (its prompt shows `[*]` or a number)."""
        self.page.wait_for_function(
            """(index) => {
                const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
                return cell.promptNode.textContent.includes('[*]') || cell.model.executionCount !== null;
            }""",
            arg=index,
            timeout=timeout,
        )

    def wait_until_done(self, index: int, *, timeout: float = WAIT) -> None:
        """Wait until the cell at `index` finished (an execution count) and the kernel is idle."""
        self.page.wait_for_function(
            """(index) => {
                const panel = window.jupyterapp.shell.currentWidget;
                const cell = panel.content.widgets[index];
                const kernel = panel.sessionContext.session?.kernel;
                return cell.model.executionCount !== null
                    && !cell.promptNode.textContent.includes('[*]')
                    && kernel?.status === 'idle';
            }""",
            arg=index,
            timeout=timeout,
        )

    def text(self, index: int) -> str:
        """The visible text of the cell's output."""
        return self.output(index).inner_text()

    def stdout(self, index: int) -> str:
        """The text the cell printed (its stream outputs)."""
        streams = self.output(index).locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]')
        return "".join(streams.all_inner_texts())

    def run_code(self, index: int) -> str:
        """Run the cell at `index`, wait for it, and return what it printed."""
        self.run(index)
        return self.stdout(index)

    def wait_until(self, condition: Callable[[], bool], what: str, *, timeout: float = WAIT / 1000) -> None:
        """Poll `condition` (reading the DOM) until it holds, or fail naming `what`."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"never happened within {timeout:.0f} s: {what}")
            self.page.wait_for_timeout(50)

    def save(self) -> None:
        """Save the notebook (as Ctrl+S does)."""
        self.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")

    def interrupt(self) -> None:
        """Click the toolbar's interrupt (stop) button."""
        self.panel.locator('.jp-Toolbar [data-command="notebook:interrupt-kernel"]').click()


def button(scope: Locator, label: str) -> Locator:
    """The button labelled `label` in `scope` (an ipywidgets button's icon is not part of its text)."""
    return scope.locator("button", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))


class Lab:
    """A JupyterLab page: open notebooks, switch themes, take screenshots."""

    def __init__(self, server: LabServer, page: Page, screenshots: Path) -> None:
        self.server = server
        self.page = page
        self.screenshots = screenshots
        self.console_errors: list[str] = []
        page.on("console", lambda message: self._console(message.type, message.text))
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))

    def _console(self, kind: str, text: str) -> None:
        if kind == "error":
            self.console_errors.append(text)

    def start(self) -> None:
        """Load JupyterLab and wait until it is restored."""
        # `reset`: start from an empty workspace, not with the previous test's notebooks open.
        self.page.goto(f"{self.server.url}lab?reset&token={self.server.token}")
        self.page.wait_for_function("() => window.jupyterapp !== undefined", timeout=WAIT * 2)
        self.page.evaluate("async () => { await window.jupyterapp.restored; }")

    def open(self, name: str, cells: list[str]) -> Notebook:
        """Write a notebook with these code cells, open it, and wait for its kernel to be idle."""
        path = self.server.write_notebook(name, cells)
        return self.reopen(path)

    def reopen(self, path: str) -> Notebook:
        """Open an existing notebook and wait for its kernel to be idle."""
        self.page.evaluate(
            """async (path) => {
                const widget = await window.jupyterapp.commands.execute('docmanager:open', {path});
                await widget.context.ready;
                await widget.sessionContext.ready;
                window.jupyterapp.shell.activateById(widget.id);
            }""",
            path,
        )
        self.page.wait_for_function(
            """() => {
                const panel = window.jupyterapp.shell.currentWidget;
                return panel?.sessionContext?.session?.kernel?.status === 'idle';
            }""",
            timeout=WAIT * 2,
        )
        return Notebook(self, path)

    def close_all(self) -> None:
        """Close every open document without saving."""
        self.page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
        discard = self.page.locator(".jp-Dialog button.jp-mod-warn")
        with contextlib.suppress(Exception):
            while discard.count():
                discard.first.click()

    def theme(self, name: str) -> None:
        """Switch to "JupyterLab Light" or "JupyterLab Dark" and wait until it applies."""
        self.page.evaluate(
            "async (theme) => { await window.jupyterapp.commands.execute('apputils:change-theme', {theme}); }", name
        )
        light = "true" if "Light" in name else "false"
        self.page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'", timeout=WAIT)
        # Changing the theme shows the splash screen for a moment: wait until it is gone.
        self.page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=WAIT)

    def screenshot(self, name: str, locator: Locator | None = None) -> Path:
        """Save a screenshot (of `locator`, or of the page) as `<name>.png`; return its path."""
        path = self.screenshots / f"{name}.png"
        if locator is not None:
            locator.scroll_into_view_if_needed()
            locator.screenshot(path=path)
        else:
            self.page.screenshot(path=path)
        return path

    def screenshots_both_themes(self, name: str, locator: Locator | None = None) -> list[Path]:
        """Screenshots in the light and the dark theme (back to light afterwards)."""
        paths = [self.screenshot(f"{name}-light", locator)]
        self.theme("JupyterLab Dark")
        try:
            paths.append(self.screenshot(f"{name}-dark", locator))
        finally:
            self.theme("JupyterLab Light")
        return paths
