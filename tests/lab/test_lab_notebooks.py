"""Every demo notebook, Run All in JupyterLab: every cell runs, no error output, nothing in the browser console.

Then saved, its kernel shut down, and reopened: no widget left dead ("model not found").
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lab_helpers import REPO, WAIT, Lab
from playwright.sync_api import expect

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_run_all_shows_no_error(lab: Lab, path: Path) -> None:
    shutil.copy(path, lab.server.root / path.name)
    nb = lab.reopen(path.name)
    lab.page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    lab.page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const cells = panel.content.widgets.filter(cell => cell.model.type === 'code');
            return cells.every(cell => cell.model.executionCount !== null
                                       && !cell.promptNode.textContent.includes('[*]'))
                && panel.sessionContext.session?.kernel?.status === 'idle';
        }""",
        timeout=WAIT * 4,
    )
    errors = nb.panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.all_inner_texts() == []
    text = nb.panel.inner_text()
    assert "model not found" not in text and "Error displaying widget" not in text
    assert lab.console_errors == []
    lab.screenshot("run-all")

    nb.save()
    lab.page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
    lab.close_all()
    lab.server.shutdown_kernels()
    reopened = lab.reopen(path.name)
    widgets = reopened.panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.widget-view+json"]')
    for output in widgets.all():  # each one settled: dead, as the kernel that made it is gone
        expect(output).to_have_text("Error displaying widget: model not found")
    text = reopened.panel.inner_text()
    assert "model not found" not in text and "Error displaying widget" not in text
    lab.screenshots_both_themes("reopened")
    text = reopened.panel.inner_text()  # the theme changes re-render every output
    assert "model not found" not in text and "Error displaying widget" not in text and "Loading widget" not in text
