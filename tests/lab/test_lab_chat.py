"""`chat()` and `await achat()` in a real JupyterLab, checked from the DOM of the cell's output."""

from __future__ import annotations

import re
import time

from lab_helpers import Lab, Notebook, button
from playwright.sync_api import Locator, expect

TOOLS = '''
import asyncio

from streamchat import ChatSession, ProgressReporter, ScriptedProvider, ToolCall, achat, chat, tool


@tool
async def fill(name: str, report: ProgressReporter) -> str:
    """Fill a bar in ten steps.

    Args:
        name: Which bar.
    """
    await report(f"{name} warming up")  # no percent yet: an indeterminate bar
    await asyncio.sleep(0.6)
    for step in range(1, 11):
        await asyncio.sleep(0.15)
        await report(f"{name} step {step}", percent=10 * step)
    return f"{name} full"


@tool
async def ticker(name: str, report: ProgressReporter) -> str:
    """Count to 100 slowly.

    Args:
        name: Which ticker.
    """
    for percent in range(1, 101):
        await report(f"{name} at {percent}%", percent=percent)
        await asyncio.sleep(0.08)
    return f"{name} done"


words = [f"word{i} " + ("\\n\\n" if i % 30 == 29 else "") for i in range(120)]
'''


def _bar(card: Locator) -> float:
    return float(card.locator("progress").get_attribute("value") or "nan")


EMOJI = re.compile("[\U0001f000-\U0001faff\u2300-\u23ff\u2600-\u26ff]")
"""Code points that need an emoji font (🔧, ⏳, ⏸, ⏱, ⚙, ⚠ …): none may be shown."""

LIVE_AND_FROZEN = """(output) => {
    const live = output.querySelector('.streamchat-answer .widget-html-content > p');
    const frozen = output.querySelector('.streamchat-answer .jp-OutputArea-output > p');
    if (!live || !frozen) return [];
    return [live, frozen].map((p) => { const s = getComputedStyle(p); return [s.fontSize, s.lineHeight, s.fontFamily]; });
}"""
STYLE = "(el) => { const s = getComputedStyle(el); return [s.fontSize, s.lineHeight, s.fontFamily]; }"


def _answer(nb: Notebook, index: int) -> str:
    return nb.output(index).locator(".streamchat-answer").first.inner_text()


def test_chat_streams_visibly_with_a_card_per_tool_call_full_bars_and_metrics(lab: Lab) -> None:
    setup = (
        "provider = ScriptedProvider("
        "[[ToolCall('fill', {'name': 'A'}), ToolCall('fill', {'name': 'B'})], words], token_delay=0.03)\n"
        "session = ChatSession(provider, tools=[fill])"
    )
    nb = lab.open(
        "chat.ipynb",
        [
            TOOLS,
            setup,
            "result = chat('Fill both bars, then talk', session=session)",
            "print(result.text == ''.join(words), [c.status for c in result.tool_calls])",
        ],
    )
    nb.run(0)
    nb.run(1)
    nb.run(2, wait=False)
    cards = nb.output(2).locator(".streamchat-card")
    expect(cards).to_have_count(2)
    expect(cards.nth(0)).to_contain_text("A warming up")
    # While the tool has reported no percent the bar is indeterminate (animated): no value.
    assert cards.nth(0).locator("progress").evaluate("(p) => !p.hasAttribute('value') && p.position === -1")
    lab.screenshot("tools-starting", nb.cell(2))
    nb.wait_until(lambda: 0 < _bar(cards.nth(0)) < 100, "card A's bar part-way")
    lab.screenshot("tools-running", nb.cell(2))
    assert not EMOJI.findall(nb.output(2).inner_text())
    nb.wait_until(lambda: _bar(cards.nth(0)) == 100 and _bar(cards.nth(1)) == 100, "both bars at 100%")
    lengths: list[int] = []
    metrics = nb.output(2).locator(".streamchat-metrics")
    looks: set[tuple[str, ...]] = set()
    while not re.search(r"\d s$", metrics.inner_text()):
        answer = nb.output(2).locator(".streamchat-answer")
        if answer.count():
            length = len(answer.first.inner_text())
            if not lengths or length != lengths[-1]:
                lengths.append(length)
        # The block being written looks like the finished ones (both read in one go, while both show).
        looks |= {tuple(look) for look in nb.output(2).evaluate(LIVE_AND_FROZEN)}
        lab.page.wait_for_timeout(100)
    nb.wait_until_done(2)
    final = len(_answer(nb, 2))
    assert len([n for n in lengths if 0 < n < final]) >= 3, lengths  # seen growing, not only at the end
    # Not asserted yet: that no sample shrinks. While a finished block moves from the live
    # HTML into the frozen Output, one frame can show it twice (seen once in a clean-clone CI
    # run: …389, 614, 446…); issue 9 keeps this open until the view swaps blocks atomically.
    assert _answer(nb, 2).split() == [f"word{i}" for i in range(120)]
    assert len(looks) == 1, looks  # one font size, line height and family, live and frozen
    assert [c.inner_text().count("✓ ok") for c in cards.all()] == [1, 1]
    expect(nb.output(2).locator(".streamchat-status")).to_have_text("✓ done")
    assert not EMOJI.findall(nb.output(2).inner_text())
    assert re.search(r"first token \d+ ms · [\d.]+ tokens/s · [\d.]+ s$", metrics.inner_text()), metrics.inner_text()
    assert nb.run_code(3) == "True ['ok', 'ok']\n"
    lab.screenshots_both_themes("chat", nb.cell(2))


def test_achat_stop_ends_the_turn_within_a_second(lab: Lab) -> None:
    setup = "session = ChatSession(ScriptedProvider([[f'w{i} ' for i in range(3000)]], token_delay=0.01), tools=[])"
    nb = lab.open(
        "stop.ipynb",
        [TOOLS, setup, "r = await achat('go', session=session)", "print(r.reason, session.history[-1].interrupted)"],
    )
    nb.run(0)
    nb.run(1)
    nb.run(2, wait=False)
    nb.wait_until(lambda: nb.output(2).locator(".streamchat-answer").count() > 0 and "w20" in _answer(nb, 2), "words")
    status = nb.output(2).locator(".streamchat-status")
    clicked = time.monotonic()
    button(nb.output(2), "Stop").click()
    expect(status).to_have_text("■ stopped")
    elapsed = time.monotonic() - clicked
    nb.wait_until_done(2)
    assert elapsed <= 1.0, f"Stop took {elapsed:.2f} s"
    assert "w2999" not in _answer(nb, 2)
    assert nb.run_code(3) == "cancelled True\n"
    lab.screenshots_both_themes("achat-stopped", nb.cell(2))


def test_achat_per_tool_pause_holds_the_bar_resume_continues_cancel_cancels(lab: Lab) -> None:
    setup = (
        "provider = ScriptedProvider([[ToolCall('ticker', {'name': 'A'}), ToolCall('ticker', {'name': 'B'})], ['Both ended.']])\n"
        "session = ChatSession(provider, tools=[ticker])"
    )
    nb = lab.open(
        "tools.ipynb",
        [
            TOOLS,
            setup,
            "r = await achat('tick', session=session)",
            "print([(c.args['name'], c.status) for c in r.tool_calls])",
        ],
    )
    nb.run(0)
    nb.run(1)
    nb.run(2, wait=False)
    cards = nb.output(2).locator(".streamchat-card")
    expect(cards).to_have_count(2)
    card_a, card_b = cards.nth(0), cards.nth(1)
    nb.wait_until(lambda: _bar(card_a) >= 5, "ticker A under way")
    expect(button(card_a, "Resume")).to_have_count(0)  # Pause xor Resume: the one that applies
    button(card_a, "Pause").click()
    expect(card_a.locator(".streamchat-card-detail")).to_contain_text("paused")
    expect(button(card_a, "Pause")).to_have_count(0)
    # Pause holds A at its next report, which is still shown: let B move on a little first.
    b_paused = _bar(card_b)
    nb.wait_until(lambda: _bar(card_b) >= b_paused + 5, "ticker B moving on while A is paused")
    held, b_held = _bar(card_a), _bar(card_b)
    lab.screenshot("a-paused", nb.cell(2))
    # Holding is observed over a window in which B visibly moves on: A's bar must not move.
    nb.wait_until(lambda: _bar(card_b) >= b_held + 15, "ticker B moving on while A is held")
    assert _bar(card_a) == held
    button(card_a, "Resume").click()
    nb.wait_until(lambda: _bar(card_a) > held, "ticker A moving again after Resume")
    button(card_b, "Cancel").click()
    expect(card_b).to_contain_text("cancelled")
    # One wording, said once; the buttons are gone.
    expect(card_b.locator(".streamchat-card-detail")).to_have_text(re.compile(r"^■ cancelled · [\d.]+ s$"))
    expect(card_b.locator("button")).to_have_count(0)
    nb.wait_until_done(2, timeout=120_000)
    expect(card_a).to_contain_text("✓ ok")
    assert _bar(card_a) == 100
    assert nb.run_code(3) == "[('A', 'ok'), ('B', 'cancelled')]\n"
    lab.screenshots_both_themes("achat-tools", nb.cell(2))


def test_kernel_interrupt_during_chat_shows_stopped_and_the_next_cell_works(lab: Lab) -> None:
    setup = "slow = ChatSession(ScriptedProvider([[f'w{i} ' for i in range(3000)]], token_delay=0.01), tools=[])"
    nb = lab.open(
        "interrupt.ipynb",
        [
            TOOLS,
            setup,
            "chat('go', session=slow)",
            "print(slow.busy, slow.history[-1].interrupted)",
            "print(chat('What is 6 * 7?').text.splitlines()[0])",
        ],
    )
    nb.run(0)
    nb.run(1)
    nb.run(2, wait=False)
    nb.wait_until(lambda: nb.output(2).locator(".streamchat-answer").count() > 0 and "w20" in _answer(nb, 2), "words")
    nb.interrupt()
    expect(nb.output(2).locator(".streamchat-status")).to_have_text("■ stopped")
    nb.wait_until_done(2)
    stderr = nb.output(2).locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    expect(stderr).to_contain_text("KeyboardInterrupt")  # how an error output looks in the DOM (see test_lab_notebooks)
    assert nb.run_code(3) == "False True\n"
    assert nb.run_code(4) == "6 * 7 = 42.\n"
    expect(nb.output(4).locator(".streamchat-metrics")).to_contain_text("tokens/s")
    lab.screenshots_both_themes("interrupted", nb.panel)


MARKDOWN_FONT = """(p) => {
    const style = getComputedStyle(p);
    const theme = getComputedStyle(document.body);
    const size = theme.getPropertyValue('--jp-content-font-size1').trim();
    const lineHeight = parseFloat(size) * parseFloat(theme.getPropertyValue('--jp-content-line-height'));
    return style.fontSize === size && Math.abs(parseFloat(style.lineHeight) - lineHeight) < 0.1;
}"""
"""True when a paragraph has JupyterLab's Markdown font size and line height (14 px, 1.6 by default)."""

PARTS = """(root) => {
    const top = root.getBoundingClientRect().top;
    const parts = [...root.querySelectorAll(
        '.streamchat-prompt, .streamchat-header, .streamchat-card, .streamchat-answer, .streamchat-metrics')];
    return [root.getBoundingClientRect().height, ...parts.map((part) => {
        const box = part.getBoundingClientRect();
        return [part.className.match(/streamchat-[a-z]+/)[0], box.top - top, box.height, box.width];
    })];
}"""


def test_the_document_of_a_finished_turn_is_laid_out_exactly_as_its_live_view(lab: Lab) -> None:
    """No jump at the end of a turn: the document that replaces the view has the same parts, places and size."""
    view = (
        "from IPython.display import HTML, display\n"
        "from streamchat.notebook.document import turn_document\n"
        "from streamchat.notebook.view import ChatView\n"
        "answer = ' '.join(words[:70]) + '\\n\\n> a quote with `code` and a [link](https://example.org)\\n\\n'\n"
        "answer += '| a | b |\\n|---|---|\\n| 1 | 2 |\\n\\n' + 'x' * 300\n"
        "session = ChatSession(ScriptedProvider([['Let me look.', ToolCall('fill', {'name': 'A'})], [answer]]), tools=[fill])\n"
        "view = ChatView('Fill, then talk', on_stop=lambda: None, controls=lambda call, action: None, label='scripted')\n"
        "display(view)\n"
        "async for event in session.stream('Fill, then talk'):\n"
        "    view.handle(event)"
    )
    nb = lab.open("document.ipynb", [TOOLS, view, "display(HTML(turn_document(view)['text/html']))"])
    for index in range(3):
        nb.run(index)
    live = nb.output(1).locator(".streamchat-view")
    document = nb.output(2).locator(".streamchat-document")
    expect(live.locator(".streamchat-metrics")).to_contain_text("first token")
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        lab.theme(theme)
        assert document.evaluate(PARTS) == live.evaluate(PARTS)
        assert nb.output(2).bounding_box()["height"] == nb.output(1).bounding_box()["height"]  # type: ignore[index]
        # The answer's Markdown looks as JupyterLab's: the same font as a Markdown cell's, long words wrap.
        for root in (live, document):
            answer = root.locator(".streamchat-answer p").first
            assert answer.evaluate(MARKDOWN_FONT), answer.evaluate(STYLE)
            long_word = root.locator(".streamchat-answer p", has_text="xxxx")
            assert long_word.evaluate("(p) => p.scrollWidth <= p.clientWidth")
    assert not EMOJI.findall(nb.output(1).inner_text() + nb.output(2).inner_text())
    lab.screenshots_both_themes("live-view", nb.cell(1))
    lab.screenshots_both_themes("document", nb.cell(2))
