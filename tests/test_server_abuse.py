"""Abuse cases against a real Jupyter server: each test is an attack that must fail.

One test (or a few) per hardening item: a turn started in a victim's name by a rendered
image, images and forms in model output, ownership when a request carries both a login
cookie and the server token, resume across turns, a DELETE racing a new turn, and
malformed input that must answer a 4xx JSON error without leaking internals.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from server_helpers import *  # noqa: F403
from server_helpers import ALICE, SCRIPT, auth, error_of, session_providers, sse_events

CHROMIUM = os.environ.get("STREAMCHAT_CHROMIUM", "/usr/bin/chromium")


@contextlib.asynccontextmanager
async def logged_in(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client for alice: it logged in once with her token and now has only cookies."""
    async with httpx.AsyncClient(base_url=base_url) as browser:
        page = await browser.get("streamchat/", headers=auth(ALICE))
        assert page.status_code == 200 and "_xsrf" in browser.cookies
        yield browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium (as in test_server_page.py)."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield chromium
        await chromium.close()


@pytest.fixture
def requested() -> list[str]:
    """Every URL the `page` asked for after it loaded."""
    return []


@pytest.fixture
async def page(browser: Browser, base_url: str, requested: list[str]) -> AsyncIterator[Page]:
    """The chat page, logged in as alice (the token in the URL sets Jupyter's login cookie)."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{base_url}streamchat/?token={ALICE}")
    await expect(page.locator("#status")).to_have_text("connected")
    page.on("request", lambda request: requested.append(request.url))
    yield page
    await context.close()


async def ask(page: Page, question: str) -> None:
    """Type a question, press Enter and wait for the answer to end."""
    await page.locator("#prompt").fill(question)
    await page.locator("#prompt").press("Enter")
    await expect(page.locator(".assistant").last).to_have_attribute("data-reason", "stop")


async def images_settled(page: Page) -> None:
    """Wait until every image in the page has loaded or failed (a request it made has been answered)."""
    await page.evaluate(
        """() => Promise.all([...document.images].map((img) => img.complete ? null
             : new Promise((done) => { img.onload = img.onerror = done; })))"""
    )


def service_of(jp_serverapp: Any) -> Any:
    """The extension's ChatService."""
    return jp_serverapp.web_app.settings["streamchat_service"]


# -- item 2: a GET that starts a turn needs an explicit XSRF token ---------------------------------------


async def test_a_cookie_get_with_only_a_same_host_referer_starts_no_turn(base_url: str, jp_serverapp: Any) -> None:
    async with logged_in(base_url) as browser:
        refused = await browser.get(
            "api/streamchat/sessions/pwn/stream", params={"message": "pwned"}, headers={"Referer": base_url}
        )
        assert refused.status_code == 403, refused.status_code
        assert "_xsrf" in error_of(refused)["message"]  # it says what a browser client must send
        assert session_providers() == [] and await service_of(jp_serverapp).store.get("pwn") is None
        xsrf = browser.cookies["_xsrf"]
        frames = await sse_events(
            browser,
            "GET",
            "api/streamchat/sessions/mine/stream",
            params={"message": "hi"},
            headers={"Referer": base_url, "X-XSRFToken": xsrf},
        )
        assert frames[-1].event.text == "Hello there"  # the explicit token (header or _xsrf argument) still works


async def test_an_image_in_model_output_does_not_start_a_turn_in_the_page(
    page: Page, jp_serverapp: Any, jp_base_url: str
) -> None:
    SCRIPT.turns = [[f"Look: ![x]({jp_base_url}api/streamchat/sessions/pwn/stream?message=pwned)"]]
    await ask(page, "show me")
    await images_settled(page)
    assert await service_of(jp_serverapp).store.get("pwn") is None
    assert len(session_providers()) == 1  # only the page's own session ever reached the model
