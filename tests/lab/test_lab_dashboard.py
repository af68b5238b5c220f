"""`streamchat.dashboard()` in JupyterLab: redrawn in place by chat() turns in other cells, kept when reopened."""

from __future__ import annotations

import json

from lab_helpers import Lab
from playwright.sync_api import expect

SETUP = """
from streamchat import ChatSession, ScriptedProvider, ToolCall, chat, dashboard

def session():
    return ChatSession(ScriptedProvider([[ToolCall("calculate", {"expression": "6 * 7"})], ["It is ", "42."]]))

board = dashboard()
"""
CHAT = "r = chat('What is 6 * 7?', session=session())"


def test_the_dashboard_updates_in_place_and_a_reopened_notebook_shows_it(lab: Lab) -> None:
    nb = lab.open("dashboard.ipynb", [SETUP, CHAT, CHAT])
    nb.run(0)
    turns = nb.output(0).locator('.streamchat-kpi[data-kpi="Turns"]')
    expect(turns).to_have_text("0")
    nb.run(1)
    expect(turns).to_have_text("1")
    nb.run(2)
    expect(turns).to_have_text("2")
    expect(nb.output(0).locator('.streamchat-tools tr[data-tool="calculate"]')).to_contain_text("100 %")
    expect(nb.output(0).locator(".streamchat-kpi")).to_have_count(6)  # one output, redrawn: not a second copy
    lab.screenshots_both_themes("dashboard", nb.output(0))
    nb.save()
    lab.page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
    lab.close_all()
    lab.server.shutdown_kernels()

    saved = json.loads((lab.server.root / "dashboard.ipynb").read_text())
    [output] = saved["cells"][0]["outputs"]
    assert sorted(output["data"]) == ["text/html", "text/markdown", "text/plain"]
    reopened = lab.reopen("dashboard.ipynb")
    expect(reopened.output(0).locator('.streamchat-kpi[data-kpi="Turns"]')).to_have_text("2")
    expect(reopened.output(0).locator('.streamchat-tools tr[data-tool="calculate"]')).to_contain_text("calculate")
    lab.screenshots_both_themes("dashboard-reopened", reopened.output(0))
