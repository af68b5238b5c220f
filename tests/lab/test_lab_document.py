"""Answers survive saving: a notebook saved, closed with its kernel shut down, and reopened shows every turn."""

from __future__ import annotations

import json
import subprocess
import sys

from lab_helpers import Lab
from playwright.sync_api import expect

SETUP = '''
import asyncio

from streamchat import ChatSession, ProgressReporter, ScriptedProvider, ToolCall, achat, chat, tool


@tool
async def fill(name: str, report: ProgressReporter) -> str:
    """Fill a bar in four steps.

    Args:
        name: Which bar.
    """
    for step in range(1, 5):
        await asyncio.sleep(0.05)
        await report(f"{name} step {step}", percent=25 * step)
    return f"{name} full"


words = [f"word{i} " for i in range(40)]
provider = ScriptedProvider([[ToolCall("fill", {"name": "A"}), ToolCall("fill", {"name": "B"})], words])
session = ChatSession(provider, tools=[fill])
'''


def test_a_saved_notebook_reopened_shows_every_answer_card_and_metrics_line(lab: Lab) -> None:
    nb = lab.open(
        "saved.ipynb",
        [SETUP, "r = chat('Fill both bars, then talk', session=session)", "r2 = await achat('What is 6 * 7?')"],
    )
    for index in range(3):
        nb.run(index)
    expect(nb.output(1).locator(".streamchat-document .streamchat-metrics")).to_contain_text("first token")
    expect(nb.output(2).locator(".streamchat-document .streamchat-metrics")).to_contain_text("first token")
    nb.save()
    lab.page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
    lab.close_all()
    lab.server.shutdown_kernels()

    saved = json.loads((lab.server.root / "saved.ipynb").read_text())
    kinds = [sorted(output["data"]) for cell in saved["cells"][1:] for output in cell["outputs"]]
    assert kinds == [["text/html", "text/markdown", "text/plain"]] * 2  # no widget left in the document

    reopened = lab.reopen("saved.ipynb")
    first, second = reopened.output(1), reopened.output(2)
    expect(first.locator(".streamchat-answer")).to_have_text(" ".join(f"word{i}" for i in range(40)))
    expect(first.locator(".streamchat-card")).to_have_count(2)
    for card, name in zip(first.locator(".streamchat-card").all(), "AB", strict=True):
        expect(card).to_contain_text("✓ ok")
        expect(card).to_contain_text(f"Done: {name} full")
        expect(card.locator('progress[value="100"]')).to_have_count(1)
    expect(first.locator(".streamchat-metrics")).to_contain_text("first token")
    expect(second.locator(".streamchat-card")).to_contain_text("calculate")
    expect(second.locator(".streamchat-answer")).to_contain_text("6 * 7 = 42.")
    expect(second.locator(".streamchat-metrics")).to_contain_text("first token")
    panel_text = reopened.panel.inner_text()
    assert "model not found" not in panel_text and "Error" not in panel_text
    lab.screenshots_both_themes("reopened", reopened.panel)

    converted = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", "--stdout", str(lab.server.root / "saved.ipynb")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "word39" in converted and "Done: A full" in converted and "Done: B full" in converted
    assert "6 * 7 = 42." in converted and converted.count("first token") == 2
