"""Answers survive saving: a notebook saved, closed with its kernel shut down, and reopened shows every turn."""

from __future__ import annotations

import json
import re
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


WIDGET = """
script = [
    [ToolCall("fill", {"name": "A"})],
    ["Bar A is full.\\n\\n", "- first item\\n", "- second item\\n\\n", "Last paragraph."],
    ["Second answer."],
    ["Third **answer**."],
]
w = ChatWidget(session=ChatSession(ScriptedProvider(script, token_delay=0.1), tools=[fill]))
w
"""
FINISHED = re.compile(r"\d s$")  # the metrics line of a finished turn ends with its duration
QUESTIONS = ["Fill bar A", "And then?", "Once more"]


def test_a_saved_chat_widget_notebook_reopened_shows_every_turn_and_no_dead_widget(lab: Lab) -> None:
    nb = lab.open("widget-saved.ipynb", [SETUP + "from streamchat import ChatWidget\n", WIDGET])
    nb.run(0)
    nb.run(1)
    widget = nb.output(1).locator(".streamchat-widget")
    box = widget.locator("input[type=text]")
    views = widget.locator(".streamchat-view")
    for index, question in enumerate(QUESTIONS):
        box.fill(question)
        box.press("Enter")
        expect(views.nth(index).locator(".streamchat-metrics")).to_have_text(FINISHED)
    # Live: the finished blocks were captured inside the widget; the turn documents are there, hidden.
    first = views.nth(0).locator(".streamchat-answer")
    expect(first.locator(".widget-output li")).to_have_text(["first item", "second item"])
    expect(first).to_have_text(re.compile(r"^\s*Bar A is full.\s*first item\s*second item\s*Last paragraph.\s*$"))
    transcripts = nb.output(1).locator(".streamchat-transcript")
    expect(transcripts).to_have_count(3)
    for transcript in transcripts.all():
        expect(transcript).to_be_hidden()
    lab.screenshots_both_themes("widget-live", nb.output(1))
    nb.save()
    lab.page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
    lab.close_all()
    lab.server.shutdown_kernels()

    saved = json.loads((lab.server.root / "widget-saved.ipynb").read_text())
    kinds = [sorted(output["data"]) for output in saved["cells"][1]["outputs"]]
    assert (
        kinds
        == [["application/vnd.jupyter.widget-view+json", "text/plain"]]
        + [["text/html", "text/markdown", "text/plain"]] * 3
    )

    reopened = lab.reopen("widget-saved.ipynb")
    output = reopened.output(1)
    dead = output.locator(".jp-OutputArea-output.jupyter-widgets")
    expect(dead).to_have_text("Error displaying widget: model not found")  # the dead widget is there...
    expect(dead).to_be_hidden()  # ...and not shown
    transcripts = output.locator(".streamchat-transcript")
    expect(transcripts).to_have_count(3)
    for transcript, question in zip(transcripts.all(), QUESTIONS, strict=True):
        expect(transcript).to_be_visible()
        expect(transcript.locator(".streamchat-prompt")).to_have_text(f"You: {question}")
        expect(transcript.locator(".streamchat-metrics")).to_have_text(FINISHED)
    first = transcripts.nth(0)
    expect(first.locator(".streamchat-card")).to_contain_text("✓ ok")
    expect(first.locator(".streamchat-card")).to_contain_text("Done: A full")
    expect(first.locator(".streamchat-answer li")).to_have_text(["first item", "second item"])
    expect(first.locator(".streamchat-answer")).to_contain_text("Last paragraph.")
    expect(transcripts.nth(1).locator(".streamchat-answer")).to_have_text("Second answer.")
    expect(transcripts.nth(2).locator(".streamchat-answer strong")).to_have_text("answer")
    panel_text = reopened.panel.inner_text()
    assert "model not found" not in panel_text and "Error" not in panel_text
    lab.screenshots_both_themes("widget-reopened", output)
    text = reopened.panel.inner_text()  # the theme changes re-render every output
    assert "model not found" not in text and "Error" not in text and "Loading widget" not in text

    converted = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", "--stdout", str(lab.server.root / "widget-saved.ipynb")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    for text in ("Last paragraph.", "<li>second item</li>", "Second answer.", "Third <strong>answer</strong>."):
        assert text in converted
    assert converted.count("first token") == 3 and "Done: A full" in converted
