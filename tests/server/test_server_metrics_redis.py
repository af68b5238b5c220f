"""The metrics routes with the Redis store: every server process's figures, combined in Redis.

The server under test is the real Jupyter server of the fixtures; "another process" is a
second recorder with its own `SharedMetrics` on its own `RedisStore` client of the same
Redis and prefix (a second server process has exactly these; its turns are played to its
recorder as `ChatSession.stream` hands them over).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from redis_helpers import RedisServer, redis_server  # noqa: F401  (a fixture, found by name)
from server_helpers import server_config
from test_analytics import close_to, play_turn

from jupyter_server_extension.dashboard import SHARED_POLL
from jupyter_server_extension.service import ChatService
from streamchat.analytics import Recorder
from streamchat.analytics.shared import SharedMetrics
from streamchat.redis_store import RedisStore

PREFIX = "test-metrics:"


@pytest.fixture
def jp_server_config(redis_server: RedisServer) -> dict[str, Any]:  # noqa: F811
    return server_config(store_url=redis_server.url, store_prefix=PREFIX)


class OtherProcess:
    """Another server process's recorder and shared metrics."""

    def __init__(self, url: str) -> None:
        self.recorder = Recorder()
        self.store = RedisStore.from_url(url, prefix=PREFIX)
        shared = SharedMetrics.for_store(self.store, holder="other process", recorder=self.recorder)
        assert shared is not None
        self.shared = shared


@pytest.fixture
async def other(redis_server: RedisServer) -> AsyncIterator[OtherProcess]:  # noqa: F811
    process = OtherProcess(redis_server.url)
    yield process
    await process.shared.aclose()
    await process.store.aclose()


def five_minutes(summary: dict[str, Any]) -> dict[str, Any]:
    window: dict[str, Any] = summary["windows"]["5m"]
    return window


async def test_the_metrics_json_of_either_process_shows_both_processes_turns(
    client: httpx.AsyncClient, chat_service: ChatService, other: OtherProcess, jp_auth_header: dict[str, str]
) -> None:
    assert chat_service.metrics is not None
    before = (await client.get("api/streamchat/metrics")).json()
    assert before["partial"] is False and before["shared"] is True and before["scope"] == "user"
    for _ in range(2):  # two turns on the server, as alice
        assert (await client.post("api/streamchat/chat", json={"message": "hi"})).status_code == 200
    for n in (100, 200, 300):  # three on the other process, as alice, with a tool call each
        play_turn(other.recorder, ttft_ms=float(n), duration_ms=1000.0, scope="alice", tools=(("search", "ok", 40.0),))
    play_turn(other.recorder, ttft_ms=5.0, duration_ms=50.0, scope="bob")
    other.recorder.retry("ollama")
    assert await other.shared.flush()

    after = (await client.get("api/streamchat/metrics")).json()
    assert after["partial"] is False
    assert five_minutes(after)["turns"] - five_minutes(before)["turns"] == 5
    assert five_minutes(after)["tool_calls"] - five_minutes(before)["tool_calls"] == 3
    search = {row["tool"]: row for row in five_minutes(after)["tools"]}["search"]
    assert search["ok"] >= 3 and close_to(search["duration_ms"]["max"], 40)
    # the other process's slowest first token, unless one of alice's turns in earlier tests of this process was slower
    slowest_before = five_minutes(before)["ttft_ms"]["max"] or 0.0
    assert close_to(five_minutes(after)["ttft_ms"]["max"], max(slowest_before, 300.0))
    assert five_minutes(after)["reasons"]["stop"] - five_minutes(before)["reasons"].get("stop", 0) == 5

    async with httpx.AsyncClient(base_url=str(client.base_url), headers=jp_auth_header, timeout=20) as server:
        everything = (await server.get("api/streamchat/metrics")).json()
    assert everything["scope"] == "server" and everything["partial"] is False
    assert five_minutes(everything)["turns"] >= five_minutes(after)["turns"] + 1  # bob's turn there too
    assert everything["retries"] >= 1

    # and the other way round: the server's turns reach the other process once the server has written them
    deadline = time.monotonic() + 10
    while five_minutes(await other.shared.summary("alice"))["turns"] < 5:
        assert time.monotonic() < deadline, "the server never wrote its turns to Redis"
        await asyncio.sleep(0.1)
    there = await other.shared.summary("alice")
    assert five_minutes(there)["turns"] == five_minutes(after)["turns"]
    assert five_minutes(there)["ttft_ms"] == five_minutes(after)["ttft_ms"]


async def test_the_live_stream_shows_another_process_turn(client: httpx.AsyncClient, other: OtherProcess) -> None:
    async with aconnect_sse(client, "GET", "api/streamchat/metrics/stream") as source:
        events = source.aiter_sse()
        first = json.loads((await anext(events)).data)
        assert first["partial"] is False
        play_turn(other.recorder, ttft_ms=10.0, duration_ms=100.0, scope="alice")
        assert await other.shared.flush()
        started = time.monotonic()
        while True:
            event = await asyncio.wait_for(anext(events), SHARED_POLL + 5)
            if (
                event.event == "summary"
                and five_minutes(json.loads(event.data))["turns"] > five_minutes(first)["turns"]
            ):
                break
        assert time.monotonic() - started < SHARED_POLL + 2  # looked again by itself: no change here woke it


async def test_with_redis_down_the_metrics_are_this_process_own_marked_partial(
    client: httpx.AsyncClient,
    other: OtherProcess,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    answer = await client.post("api/streamchat/chat", json={"message": "hi"})
    assert answer.status_code == 200
    play_turn(other.recorder, ttft_ms=10.0, duration_ms=100.0, scope="alice")
    assert await other.shared.flush()
    both = five_minutes((await client.get("api/streamchat/metrics")).json())["turns"]
    redis_server.stop()
    try:
        response = await client.get("api/streamchat/metrics")
        assert response.status_code == 200
        down = response.json()
        assert down["partial"] is True and five_minutes(down)["turns"] == both - 1  # the other process's is missing
        assert (
            await client.get(f"api/streamchat/sessions/{answer.json()['session_id']}")
        ).status_code == 503  # the sessions need the store
    finally:
        redis_server.start()
    deadline = time.monotonic() + 10
    while (await client.get("api/streamchat/metrics")).json()["partial"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert await other.shared.flush(force=True)  # finds its figures gone with Redis's data: writes them again
    assert five_minutes((await client.get("api/streamchat/metrics")).json())["turns"] == both
