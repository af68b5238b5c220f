"""Analytics on a live server: /metrics (Prometheus), api/streamchat/metrics (JSON and SSE), the dashboard page."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from playwright.async_api import Browser, Page, expect
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import ALICE, BOB, SCRIPT, auth

from jupyter_server_extension.dashboard import MIN_INTERVAL
from streamchat import ToolCall
from streamchat.providers.base import UsageDelta

SCREENSHOTS = os.environ.get("STREAMCHAT_DASHBOARD_SCREENSHOTS", "/tmp/streamchat_dashboard")
MODEL = {"gen_ai_operation_name": "invoke_agent", "gen_ai_provider_name": "scripted", "gen_ai_request_model": "script"}


async def prometheus(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of jupyter_server's /metrics, by name and sorted labels."""
    response = await client.get("metrics")
    assert response.status_code == 200, response.status_code
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def tool_workload() -> None:
    """Each new session: a tool call, then an answer; the backend reports its token counts."""
    SCRIPT.turns = [
        [ToolCall("count_to", {"n": 2}), UsageDelta(prompt_tokens=30, completion_tokens=5)],
        ["All ", "done", UsageDelta(prompt_tokens=40, completion_tokens=2)],
    ]


async def test_prometheus_metrics_after_a_scripted_workload(base_url: str, jp_auth_header: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=jp_auth_header, timeout=20) as server:
        before = await prometheus(server)
        tool_workload()
        async with httpx.AsyncClient(base_url=base_url, headers=auth(ALICE), timeout=20) as alice:
            results = [(await alice.post("api/streamchat/chat", json={"message": "count"})).json() for _ in range(3)]
        after = await prometheus(server)

    def delta(name: str, **labels: str) -> float:
        return after.get(key(name, **labels), 0.0) - before.get(key(name, **labels), 0.0)

    assert [r["text"] for r in results] == ["All done"] * 3
    assert delta("streamchat_turns_total", reason="stop") == 3
    duration = "gen_ai_client_operation_duration_seconds"
    assert delta(f"{duration}_count", **MODEL, error_type="") == 3
    assert delta(f"{duration}_sum", **MODEL, error_type="") == pytest.approx(
        sum(r["metrics"]["duration_ms"] for r in results) / 1000
    )
    ttft = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert delta(f"{ttft}_sum", **MODEL) == pytest.approx(sum(r["metrics"]["ttft_ms"] for r in results) / 1000)
    usage = "gen_ai_client_token_usage"
    assert delta(f"{usage}_sum", **MODEL, gen_ai_token_type="input") == 3 * 70
    assert delta(f"{usage}_sum", **MODEL, gen_ai_token_type="output") == 3 * 7
    assert delta(f"{usage}_count", **MODEL, gen_ai_token_type="output") == 3
    tool = "gen_ai_execute_tool_duration_seconds"
    assert delta(f"{tool}_count", gen_ai_tool_name="count_to", error_type="") == 3
    assert delta(f"{tool}_sum", gen_ai_tool_name="count_to", error_type="") == pytest.approx(
        sum(r["metrics"]["tools"][0]["duration_ms"] for r in results) / 1000
    )
    assert after[key("streamchat_active_turns")] == 0
    assert delta("streamchat_sessions") == 3
    for labels in (dict(labels) for name, labels in after if name.startswith(("gen_ai", "streamchat"))):
        assert not any(len(value) == 32 for value in labels.values())  # never a session or turn id


async def test_prometheus_metrics_need_credentials(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as anonymous:
        response = await anonymous.get("metrics")
    assert response.status_code == 403
    assert "gen_ai_client_operation_duration_seconds" not in response.text


async def test_metrics_json_is_per_user_and_server_wide_for_the_server_token(
    base_url: str, jp_auth_header: dict[str, str]
) -> None:
    tool_workload()
    async with (
        httpx.AsyncClient(base_url=base_url, headers=auth(ALICE), timeout=20) as alice,
        httpx.AsyncClient(base_url=base_url, headers=auth(BOB), timeout=20) as bob,
        httpx.AsyncClient(base_url=base_url, headers=jp_auth_header, timeout=20) as server,
        httpx.AsyncClient(base_url=base_url, timeout=20) as nobody,
    ):
        anonymous = await nobody.get("api/streamchat/metrics")
        bob_before = (await bob.get("api/streamchat/metrics")).json()
        server_before = (await server.get("api/streamchat/metrics")).json()
        alice_before = (await alice.get("api/streamchat/metrics")).json()
        for _ in range(2):
            assert (await alice.post("api/streamchat/chat", json={"message": "count"})).status_code == 200
        mine = (await alice.get("api/streamchat/metrics")).json()
        others = (await bob.get("api/streamchat/metrics")).json()
        everything = (await server.get("api/streamchat/metrics")).json()
    assert anonymous.status_code == 403
    assert (mine["scope"], others["scope"], everything["scope"]) == ("user", "user", "server")
    assert (everything["shared"], everything["partial"]) == (False, False)  # the memory store: this process is all
    hour = "1h"
    assert mine["windows"][hour]["turns"] - alice_before["windows"][hour]["turns"] == 2
    assert others["windows"][hour]["turns"] == bob_before["windows"][hour]["turns"]
    assert everything["windows"][hour]["turns"] - server_before["windows"][hour]["turns"] == 2
    [row] = [row for row in mine["windows"][hour]["tools"] if row["tool"] == "count_to"]
    assert row["success_rate"] == 1.0 and row["last_error"] is None
    assert mine["active_turns"] == 0 and mine["sessions"] - alice_before["sessions"] == 2


async def read_summaries(
    client: httpx.AsyncClient, received: list[tuple[float, dict[str, Any]]], first: asyncio.Event, turns: int
) -> None:
    """Read the live stream into `received` (with the time each summary arrived) until it shows `turns` more turns."""
    async with aconnect_sse(client, "GET", "api/streamchat/metrics/stream") as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            assert sse.event == "summary"
            received.append((time.monotonic(), json.loads(sse.data)))
            first.set()
            if received[-1][1]["windows"]["5m"]["turns"] == received[0][1]["windows"]["5m"]["turns"] + turns:
                return


async def test_the_live_stream_pushes_a_summary_per_change_at_most_every_min_interval(base_url: str) -> None:
    SCRIPT.turns = [["Hi"]]
    received: list[tuple[float, dict[str, Any]]] = []
    first = asyncio.Event()
    async with httpx.AsyncClient(base_url=base_url, headers=auth(ALICE), timeout=20) as alice:
        reader = asyncio.create_task(read_summaries(alice, received, first, turns=3))
        await asyncio.wait_for(first.wait(), 10)
        for _ in range(3):  # three turns in quick succession: their changes are coalesced
            assert (await alice.post("api/streamchat/chat", json={"message": "hi"})).status_code == 200
        await asyncio.wait_for(reader, 10)
    assert len(received) >= 2
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(received)]
    assert all(gap >= MIN_INTERVAL - 0.02 for gap in gaps), gaps  # at most one summary per 0.45 s (timer slack aside)
    versions = [summary["version"] for _, summary in received]
    assert versions == sorted(versions)


async def test_open_streams_and_active_turns_are_counted(base_url: str) -> None:
    SCRIPT.turns = [["slow", "ly"]]
    SCRIPT.token_delay = 0.3
    during: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=base_url, headers=auth(ALICE), timeout=20) as alice:
        async with aconnect_sse(alice, "POST", "api/streamchat/chat/stream", json={"message": "x"}) as source:
            async for _ in source.aiter_sse():
                if not during:  # the turn's first event: its stream is open and it runs
                    during.append((await alice.get("api/streamchat/metrics")).json())
        after = (await alice.get("api/streamchat/metrics")).json()
    assert during[0]["open_streams"]["sse"] == 1 and during[0]["active_turns"] == 1
    assert after["open_streams"]["sse"] == 0 and after["active_turns"] == 0


# -- the dashboard page -------------------------------------------------------------------------------


@pytest.fixture
async def dashboard(browser: Browser, base_url: str) -> AsyncIterator[Page]:
    """The dashboard, logged in as alice, in light theme."""
    context = await browser.new_context(viewport={"width": 1200, "height": 1000}, color_scheme="light")
    page = await context.new_page()
    outside: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(base_url) else outside.append(request.url))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    await page.goto(f"{base_url}streamchat/dashboard?token={ALICE}")
    await expect(page.locator("#status")).to_have_text("live")
    yield page
    assert outside == [] and problems == []
    await context.close()


async def test_the_dashboard_updates_live_with_charts_and_the_tool_table(dashboard: Page, base_url: str) -> None:
    page = dashboard
    tool_workload()
    turns_before = int(await page.locator("#kpi-turns").inner_text())
    # the moment the turns count changes in the DOM, on the page's clock (the same machine's)
    await page.evaluate(
        """() => new MutationObserver(() => { window.updatedAt = Date.now(); })
            .observe(document.getElementById('kpi-turns'), {childList: true, characterData: true, subtree: true})"""
    )
    async with httpx.AsyncClient(base_url=base_url, headers=auth(ALICE), timeout=20) as alice:
        tools_before = (await alice.get("api/streamchat/metrics")).json()["windows"]["1h"]["tools"]
        calls_before = sum(row["calls"] for row in tools_before if row["tool"] == "count_to")
        sent = time.time()
        async with aconnect_sse(alice, "POST", "api/streamchat/chat/stream", json={"message": "count"}) as source:
            async for sse in source.aiter_sse():
                if sse.event == "done":
                    done_seen, done = time.time(), json.loads(sse.data)
    await expect(page.locator("#kpi-turns")).to_have_text(str(turns_before + 1))
    # The turn ended before its `done` reached this client, and no earlier than its duration after it was sent.
    updated = await page.evaluate("() => window.updatedAt") / 1000
    at_least, at_most = updated - done_seen, updated - (sent + done["metrics"]["duration_ms"] / 1000)
    print(f"the dashboard showed the turn {at_least * 1000:.0f} to {at_most * 1000:.0f} ms after it ended")
    with open(f"{SCREENSHOTS}_latency.txt", "a") as out:
        out.write(f"{at_least * 1000:.1f} {at_most * 1000:.1f}\n")
    row = page.locator('#tools tr[data-tool="count_to"]')
    await expect(row.locator(".calls")).to_have_text(str(calls_before + 1))
    await expect(row.locator(".success")).to_have_text("100 %")
    assert await page.locator("#kpi-streams").inner_text() == "0"
    for chart in ("ttft", "tps", "turns", "tools"):
        assert await page.locator(f"#chart-{chart} canvas").count() == 1
    await page.screenshot(path=f"{SCREENSHOTS}_light.png", full_page=True)
    await page.emulate_media(color_scheme="dark")
    background = await page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"
    await page.screenshot(path=f"{SCREENSHOTS}_dark.png", full_page=True)


async def test_the_chat_page_links_to_the_dashboard(browser: Browser, base_url: str) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{base_url}streamchat/?token={ALICE}")
    await page.locator("#dashboard-link").click()
    await expect(page.locator("#status")).to_have_text("live")
    assert page.url.split("?")[0] == f"{base_url}streamchat/dashboard"
    await context.close()


async def test_the_dashboard_needs_credentials(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as anonymous:
        page = await anonymous.get("streamchat/dashboard")
        stream = await anonymous.get("api/streamchat/metrics/stream")
    assert page.status_code == 403 and stream.status_code == 403


async def test_an_open_websocket_is_counted_until_it_closes(
    base_url: str, jp_auth_header: dict[str, str], jp_ws_fetch: Any
) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=jp_auth_header, timeout=20) as server:
        before = (await server.get("api/streamchat/metrics")).json()["open_streams"]["websocket"]
        socket = await jp_ws_fetch("api", "streamchat", "ws")
        during = (await server.get("api/streamchat/metrics")).json()["open_streams"]["websocket"]
        socket.close()
        async with aconnect_sse(server, "GET", "api/streamchat/metrics/stream") as source:
            async for sse in source.aiter_sse():  # a summary follows the change: wait for the close to count
                if json.loads(sse.data)["open_streams"]["websocket"] == before:
                    break
    assert during == before + 1
