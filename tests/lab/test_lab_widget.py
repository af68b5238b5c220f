"""`ChatWidget` in a real JupyterLab: what a user's typing and clicking does, checked from the DOM."""

from __future__ import annotations

import re

from lab_helpers import Lab, Notebook, button
from playwright.sync_api import Locator, expect

SETUP = '''
import asyncio

from streamchat import ChatSession, ChatWidget, ProgressReporter, ScriptedProvider, ToolCall, tool
from streamchat.providers.demo import DemoProvider


@tool
async def ticker(name: str, report: ProgressReporter) -> str:
    """Count to 100.

    Args:
        name: Which ticker.
    """
    for percent in range(1, 101):
        await report(f"{name} at {percent}%", percent=percent)
        await asyncio.sleep(0.05)
    return f"{name} done"


def summary(widget):
    """Turns in the session's history, how many were interrupted, and how the views ended."""
    history = widget.session.history
    users = [m.content for m in history if m.role == "user"]
    interrupted = sum(m.interrupted for m in history)
    reasons = [view.result.reason if view.result else None for view in widget.views]
    print(len(users), interrupted, reasons.count("stop"), len(widget.views))
'''

FINISHED = re.compile(r"\d s$")  # the metrics line of a finished turn ends with its duration


def _widget(nb: Notebook, index: int) -> Locator:
    return nb.output(index).locator(".streamchat-widget")


def test_ten_submissions_by_enter_and_ten_by_send_give_exactly_twenty_turns(lab: Lab) -> None:
    nb = lab.open("twenty.ipynb", [SETUP, "w = ChatWidget(provider=DemoProvider(token_delay=0.005))\nw", "summary(w)"])
    nb.run(0)
    nb.run(1)
    widget = _widget(nb, 1)
    box = widget.locator("input[type=text]")
    views = widget.locator(".streamchat-view")
    for i in range(20):
        if i < 10:  # the same text each time: Enter must send it again
            box.fill("What is 2 + 2?")
            box.press("Enter")
        else:
            box.fill(f"What is {i} * 3?")
            button(widget, "Send").click()
        expect(views.nth(i).locator(".streamchat-metrics")).to_have_text(FINISHED)
        expect(box).to_have_value("")
        expect(views).to_have_count(i + 1)
    expect(widget.locator(".streamchat-status", has_text="stopped")).to_have_count(0)
    assert nb.run_code(2) == "20 0 20 20\n"
    lab.screenshots_both_themes("widget-twenty", widget)


def test_leaving_the_box_sends_nothing(lab: Lab) -> None:
    nb = lab.open(
        "blur.ipynb",
        [
            SETUP,
            "w = ChatWidget(provider=DemoProvider(token_delay=0.005))\nw",
            "print(repr(w.input.value), len(w.views), len(w.session.history))",
            "summary(w)",
        ],
    )
    nb.run(0)
    nb.run(1)
    widget = _widget(nb, 1)
    box = widget.locator("input[type=text]")
    box.fill("What is 3 + 3?")
    nb.cell(2).click()  # focus leaves the box
    # Wait until the kernel has the typed text (or, with the bug, has sent it).
    nb.wait_until(
        lambda: "3 + 3" in nb.run_code(2) or not nb.stdout(2).startswith("'' 0"), "the kernel seeing the typed text"
    )
    assert nb.stdout(2) == "'What is 3 + 3?' 0 0\n"
    expect(widget.locator(".streamchat-view")).to_have_count(0)
    box.press("Enter")  # the text is still there, and Enter sends it
    expect(widget.locator(".streamchat-view .streamchat-metrics")).to_have_text(FINISHED)
    assert nb.run_code(3) == "1 0 1 1\n"


def test_a_submit_during_a_turn_is_refused_and_the_notice_clears_when_it_ends(lab: Lab) -> None:
    setup = (
        "script = [[f'w{i} ' for i in range(250)], ['Second answer.']]\n"
        "w = ChatWidget(session=ChatSession(ScriptedProvider(script, token_delay=0.01), tools=[]))\nw"
    )
    nb = lab.open("busy.ipynb", [SETUP, setup, "summary(w)", "print([m.content for m in w.session.history])"])
    nb.run(0)
    nb.run(1)
    widget = _widget(nb, 1)
    box = widget.locator("input[type=text]")
    notice = widget.locator(".streamchat-notice")
    views = widget.locator(".streamchat-view")
    box.fill("first")
    box.press("Enter")
    expect(views.nth(0).locator(".streamchat-answer")).to_contain_text("w10")
    box.fill("second")
    box.press("Enter")
    expect(notice).to_contain_text("still streaming")
    lab.screenshot("refused", nb.output(1))
    expect(views.nth(0).locator(".streamchat-metrics")).to_have_text(FINISHED, timeout=120_000)
    expect(notice).to_have_text("")
    expect(views).to_have_count(1)
    expect(box).to_have_value("second")  # the refused text is kept, and Enter sends it now
    box.press("Enter")
    expect(views.nth(1).locator(".streamchat-answer")).to_have_text("Second answer.")
    expect(views.nth(1).locator(".streamchat-metrics")).to_have_text(FINISHED)
    assert nb.run_code(2) == "2 0 2 2\n"
    assert nb.run_code(3).startswith("['first', 'w0 w1 w2 ")


def test_stop_pause_resume_cancel_and_clear_act_on_the_running_turn(lab: Lab) -> None:
    setup = (
        "script = [[ToolCall('ticker', {'name': 'A'}), ToolCall('ticker', {'name': 'B'})], ['Tools ended.'],"
        " [f'w{i} ' for i in range(2000)], ['After the stop.']]\n"
        "w = ChatWidget(session=ChatSession(ScriptedProvider(script, token_delay=0.01), tools=[ticker]))\nw"
    )
    nb = lab.open("controls.ipynb", [SETUP, setup, "summary(w)"])
    nb.run(0)
    nb.run(1)
    widget = _widget(nb, 1)
    box = widget.locator("input[type=text]")
    views = widget.locator(".streamchat-view")
    box.fill("tick")
    box.press("Enter")
    cards = views.nth(0).locator(".streamchat-card")
    expect(cards).to_have_count(2)
    card_a, card_b = cards.nth(0), cards.nth(1)
    expect(card_a.locator("progress[value]")).to_have_count(1)
    button(card_a, "Pause").click()
    expect(card_a).to_contain_text("paused")
    button(card_b, "Cancel").click()
    expect(card_b).to_contain_text("cancelled")
    expect(card_a).to_contain_text("paused")
    button(card_a, "Resume").click()
    expect(card_a).to_contain_text("✓ ok", timeout=120_000)
    expect(views.nth(0).locator(".streamchat-metrics")).to_have_text(FINISHED)

    box.fill("talk")
    box.press("Enter")
    expect(views.nth(1).locator(".streamchat-answer")).to_contain_text("w10")
    button(widget, "Stop").click()
    expect(views.nth(1).locator(".streamchat-status")).to_have_text("■ stopped")
    box.fill("again")
    button(widget, "Send").click()
    expect(views.nth(2).locator(".streamchat-answer")).to_have_text("After the stop.")
    expect(views.nth(2).locator(".streamchat-metrics")).to_have_text(FINISHED)
    lab.screenshots_both_themes("widget-controls", widget)
    assert nb.run_code(2) == "3 1 2 3\n"

    button(widget, "Clear").click()
    expect(views).to_have_count(0)
    assert nb.run_code(2) == "0 0 0 0\n"
