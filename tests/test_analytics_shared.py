"""Metrics of several processes combined in Redis (`SharedMetrics`): a real `redis-server`, two recorders."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_helpers import RedisServer, redis_server  # noqa: F401  (a fixture, found by name)
from test_analytics import FakeClock, FakeSession, close_to, play_turn

from streamchat.analytics import Recorder
from streamchat.analytics.shared import LIVE_TTL_S, SLOT_MARGIN_S, SharedMetrics
from streamchat.redis_store import RedisStore
from streamchat.stores import MemoryStore

PREFIX = "metrics-test:"


class Process:
    """One server process's metrics: its recorder (on the shared fake clock) and its `SharedMetrics`."""

    def __init__(self, url: str, holder: str, clock: FakeClock) -> None:
        self.recorder = Recorder(clock=clock)
        self.store = RedisStore.from_url(url, prefix=PREFIX)
        shared = SharedMetrics.for_store(self.store, holder=holder, recorder=self.recorder)
        assert shared is not None
        self.shared = shared

    async def aclose(self) -> None:
        await self.shared.aclose()
        await self.store.aclose()


@pytest.fixture
async def processes(redis_server: RedisServer) -> AsyncIterator[tuple[Process, Process, FakeClock]]:  # noqa: F811
    clock = FakeClock()
    a, b = Process(redis_server.url, "A", clock), Process(redis_server.url, "B", clock)
    yield a, b, clock
    await a.aclose()
    await b.aclose()


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    """What two summaries of the same turns share (not the version, the time or the flag)."""
    return {k: v for k, v in summary.items() if k not in ("version", "now", "partial")}


def workload(a: Recorder, b: Recorder, everything: Recorder, clock: FakeClock) -> None:
    """100 turns (TTFT 1 … 100 ms) over 3 minutes, 60 on A and 40 on B; tools and errors on both."""
    for n in range(1, 101):
        clock.now = 1_000_000.0 + n * 1.8
        turn: dict[str, Any] = {
            "ttft_ms": float(n),
            "duration_ms": float(10 * n),
            "reason": "error" if n % 10 == 0 else "stop",
            "errors": ("backend_error",) if n % 10 == 0 else (),
            "tools": (("search", "ok" if n % 4 else "error", float(n)), ("fetch", "ok", 5.0)),
            "scope": "alice" if n % 2 else "bob",
        }
        play_turn(a if n <= 60 else b, **turn)
        play_turn(everything, **turn)


async def test_every_process_shows_the_sum_of_all_processes(processes: tuple[Process, Process, FakeClock]) -> None:
    a, b, clock = processes
    everything = Recorder(clock=clock)  # one recorder that saw every turn: what the deployment's figures must be
    workload(a.recorder, b.recorder, everything, clock)
    a.recorder.retry("ollama")
    b.recorder.retry("ollama")
    b.recorder.session_created("alice")
    b.recorder.stream_opened("sse", "alice")
    running = b.recorder.turn(FakeSession(), scope="alice")  # a turn still running on B
    assert await a.shared.flush() and await b.shared.flush()
    for process in (a, b):
        for scope in (None, "alice", "bob"):
            combined = await process.shared.summary(scope)
            expected = everything.summary(scope)
            if scope is None:
                expected["retries"] = 2
            expected["active_turns"] += 1 if scope in (None, "alice") else 0
            expected["sessions"] += 1 if scope in (None, "alice") else 0
            expected["open_streams"]["sse"] += 1 if scope in (None, "alice") else 0
            assert combined["partial"] is False
            assert figures(combined) == figures(expected), (process.shared.holder, scope)
    total = (await a.shared.summary())["windows"]["5m"]
    assert total["turns"] == 100 and total["reasons"] == {"stop": 90, "error": 10}
    assert total["errors"] == {"backend_error": 10} and total["error_rate"] == 0.1
    assert close_to(total["ttft_ms"]["p50"], 50) and close_to(total["ttft_ms"]["p95"], 95)
    assert close_to(total["ttft_ms"]["p99"], 99) and total["ttft_ms"]["avg"] == 50.5
    tools = {row["tool"]: row for row in total["tools"]}
    assert tools["search"]["calls"] == 100 and tools["search"]["ok"] == 75 and tools["search"]["success_rate"] == 0.75
    assert close_to(tools["search"]["duration_ms"]["p95"], 95) and tools["fetch"]["calls"] == 100
    assert total["tool_calls"] == 200
    alice = (await b.shared.summary("alice"))["windows"]["5m"]
    assert alice["turns"] == 50 and close_to(alice["ttft_ms"]["p50"], 49)  # TTFT 1, 3 … 99
    running.close()


async def test_only_changed_slots_are_written_and_a_write_counts_once(
    processes: tuple[Process, Process, FakeClock],
) -> None:
    a, b, clock = processes
    play_turn(a.recorder, ttft_ms=10.0, duration_ms=100.0)
    assert await a.shared.flush()
    assert await a.shared.flush(force=True)  # written again: the slot's state, not an increment
    assert (await b.shared.summary())["windows"]["5m"]["turns"] == 1
    clock.now += 20  # two 10 s slots on; the same 1 min slot
    play_turn(a.recorder, ttft_ms=30.0, duration_ms=100.0, scope="alice")
    slots, live = a.recorder.take_changes()
    recent, hour = math.floor(clock.now / 10), math.floor(clock.now / 60)
    assert sorted((scope or "", window, number) for scope, window, number, _ in slots) == [
        ("", "1h", hour),
        ("", "5m", recent),
        ("alice", "1h", hour),
        ("alice", "5m", recent),
    ]
    assert live["process"]["active_turns"] == 0 and live["retries"] == 0
    assert a.recorder.take_changes()[0] == []  # taken: nothing changed since
    play_turn(a.recorder, ttft_ms=20.0, duration_ms=100.0)
    assert await a.shared.flush()
    summary = await b.shared.summary()
    assert summary["windows"]["5m"]["turns"] == 3  # each slot written whole: nothing lost, nothing doubled
    assert close_to(summary["windows"]["5m"]["ttft_ms"]["max"], 30)


async def test_every_key_has_the_prefix_and_a_ttl(
    processes: tuple[Process, Process, FakeClock],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a, _, _ = processes
    play_turn(a.recorder, ttft_ms=10.0, duration_ms=100.0, scope="alice")
    assert await a.shared.flush()
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = sorted(k.decode() for k in await raw.keys("*"))
        slot = 1_000_000 // 10, 1_000_000 // 60
        assert keys == sorted(
            [
                f"{PREFIX}metrics:live:A",
                f"{PREFIX}metrics:processes",
                f"{PREFIX}metrics:slot:5m:*:{slot[0]}",
                f"{PREFIX}metrics:slot:5m:user:alice:{slot[0]}",
                f"{PREFIX}metrics:slot:1h:*:{slot[1]}",
                f"{PREFIX}metrics:slot:1h:user:alice:{slot[1]}",
            ]
        )
        for key in keys:
            ttl = await raw.ttl(key)
            limit = 300 + SLOT_MARGIN_S if ":5m:" in key else 3600 + SLOT_MARGIN_S if ":1h:" in key else 4 * LIVE_TTL_S
            assert 0 < ttl <= limit, (key, ttl)
        state = json.loads(await raw.hget(f"{PREFIX}metrics:slot:5m:*:{slot[0]}", "A"))
        assert state["turns"] == 1
        await a.shared.aclose()  # a process that stops takes its live counts out
        assert await raw.exists(f"{PREFIX}metrics:live:A") == 0
        assert await raw.zscore(f"{PREFIX}metrics:processes", "A") is None
    finally:
        await raw.aclose()


async def test_without_redis_a_process_shows_its_own_figures_marked_partial_and_rewrites_them_after(
    processes: tuple[Process, Process, FakeClock],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b, _ = processes
    play_turn(a.recorder, ttft_ms=10.0, duration_ms=100.0)
    play_turn(b.recorder, ttft_ms=20.0, duration_ms=100.0)
    assert await a.shared.flush() and await b.shared.flush()
    assert (await a.shared.summary())["windows"]["5m"]["turns"] == 2
    redis_server.stop()
    play_turn(a.recorder, ttft_ms=30.0, duration_ms=100.0)
    assert await a.shared.flush() is False
    down = await a.shared.summary()
    assert down["partial"] is True and down["windows"]["5m"]["turns"] == 2  # A's own two
    redis_server.start()  # empty: what was shared is lost, and every process writes all it keeps again
    assert await a.shared.flush()  # A failed before: it writes everything
    assert await b.shared.flush(force=True)  # B finds its live counts gone: it writes everything too
    for process in (a, b):
        up = await process.shared.summary()
        assert up["partial"] is False and up["windows"]["5m"]["turns"] == 3


def test_only_a_redis_store_shares_metrics() -> None:
    assert SharedMetrics.for_store(MemoryStore(), holder="A", recorder=Recorder()) is None
