"""The web page in headless Chromium (Debian's /usr/bin/chromium) against a live server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect
from server_helpers import ALICE, GATE, SCRIPT

from jupyter_server_extension.service import ChatService
from streamchat import ToolCall

SCREENSHOT = os.environ.get("STREAMCHAT_PAGE_SCREENSHOT", "/tmp/streamchat_page.png")


@pytest.fixture
async def page(browser: Browser, base_url: str) -> AsyncIterator[Page]:
    """The chat page, logged in as alice (the token in the URL sets Jupyter's login cookie)."""
    context = await browser.new_context(viewport={"width": 900, "height": 760})
    page = await context.new_page()
    outside = []
    page.on("request", lambda request: None if request.url.startswith(base_url) else outside.append(request.url))
    await page.goto(f"{base_url}streamchat/?token={ALICE}")
    await expect(page.locator("#status")).to_have_text("connected")
    yield page
    assert outside == []  # the page fetched nothing from anywhere else
    await context.close()


async def ask(page: Page, question: str) -> None:
    """Type a question and press Enter."""
    await page.locator("#prompt").fill(question)
    await page.locator("#prompt").press("Enter")


async def test_the_page_streams_an_answer_with_tool_progress_and_stop_ends_a_turn(
    page: Page, chat_service: ChatService
) -> None:
    GATE.reset()
    SCRIPT.turns = [
        [
            "Let me ",
            "check. ",
            ToolCall("wait_here", {"label": "lookup"}, call_id="w"),
            ToolCall("count_to", {"n": 4}, call_id="c"),
        ],
        ['The answer is **42**.\n\n- sanitized: <img src=x onerror="window.pwned = 1">', "\n- done"],
        [ToolCall("wait_here", {"label": "slow"}, call_id="s")],
    ]
    await ask(page, "What is the answer?")
    answer = page.locator(".assistant").first
    await expect(answer.locator(".content")).to_have_text("Let me check.")  # streamed before the turn ends
    waiting = answer.locator('.tool-card[data-call-id="w"] [role=progressbar]')
    await expect(waiting).to_have_attribute("aria-valuenow", "10")
    await expect(answer.locator('.tool-card[data-call-id="c"] [role=progressbar]')).to_have_attribute(
        "aria-valuenow", "100"
    )
    await expect(page.locator("#stop")).to_be_enabled()
    assert GATE.opened is not None
    GATE.opened.set()
    await expect(waiting).to_have_attribute("aria-valuenow", "100")
    await expect(answer.locator('.tool-card[data-call-id="w"] .note')).to_contain_text("Done")
    await expect(answer).to_have_attribute("data-reason", "stop")
    await expect(answer.locator(".content strong")).to_have_text("42")
    assert await answer.locator(".content img").count() == 0  # images from model output are dropped
    assert await page.evaluate("window.pwned") is None

    GATE.reset()
    await ask(page, "Something slow")
    second = page.locator(".assistant").nth(1)
    await expect(second.locator('.tool-card[data-call-id="s"] [role=progressbar]')).to_have_attribute(
        "aria-valuenow", "10"
    )
    await page.locator("#stop").click()
    await expect(second).to_have_attribute("data-reason", "cancelled")
    await expect(second.locator('.tool-card[data-call-id="s"] .note')).to_have_text("Cancelled")
    await expect(page.locator("#send")).to_be_enabled()
    assert GATE.cancelled == ["slow"]
    await page.screenshot(path=SCREENSHOT)  # for a human look at the page
    (record,) = [r for r in chat_service.store._records.values() if r.owner == "alice"]
    assert [m.content for m in record.history if m.role == "user"] == ["What is the answer?", "Something slow"]
