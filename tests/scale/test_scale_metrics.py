"""Two real `jupyter server` processes on one Redis: either one's metrics JSON shows both processes' turns."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from scale_helpers import Cluster, counted
from scale_provider import paced

pytestmark = pytest.mark.timeout(180)


async def metrics(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("api/streamchat/metrics")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def turn(client: httpx.AsyncClient, message: str) -> dict[str, Any]:
    response = await client.post("api/streamchat/chat", json={"message": message})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_each_process_metrics_show_the_turns_and_tool_calls_of_both(cluster: Cluster) -> None:
    async with cluster.a.client() as on_a, cluster.b.client() as on_b:
        before = await metrics(on_a)
        assert before["shared"] is True and before["partial"] is False and before["scope"] == "server"
        assert before["windows"]["5m"]["turns"] == 0  # a fresh Redis and fresh processes
        for _ in range(3):
            assert (await turn(on_a, paced(5, 0.01)))["text"] == counted(5)
        for _ in range(2):
            assert (await turn(on_b, "tick 2"))["text"] == "ticked."
        # each process writes what changed at most every 0.5 s: both show all five turns soon
        deadline = time.monotonic() + 15
        while True:
            seen = [await metrics(on_a), await metrics(on_b)]
            if all(s["windows"]["5m"]["turns"] == 5 for s in seen):
                break
            assert time.monotonic() < deadline, [s["windows"]["5m"]["turns"] for s in seen]
            await asyncio.sleep(0.2)
    for summary in seen:
        window = summary["windows"]["5m"]
        assert window["reasons"] == {"stop": 5} and window["error_rate"] == 0
        assert window["tool_calls"] == 2
        tick = {row["tool"]: row for row in window["tools"]}["tick"]
        assert tick["calls"] == 2 and tick["success_rate"] == 1
        assert summary["windows"]["1h"]["turns"] == 5
        assert summary["partial"] is False
    a, b = seen
    for figures in ("ttft_ms", "duration_ms", "tokens_per_s"):  # the same merged histograms on both
        assert a["windows"]["5m"][figures]["p95"] == b["windows"]["5m"][figures]["p95"]
    assert a["tool_histogram"] == b["tool_histogram"] and sum(a["tool_histogram"]["total"]) == 2

    raw = aioredis.Redis.from_url(cluster.redis.url)
    try:
        keys = [k.decode() for k in await raw.keys(f"{cluster.prefix}metrics:*")]
        assert any(":slot:5m:*:" in k for k in keys) and any(":slot:1h:*:" in k for k in keys), keys
        assert sum(k.startswith(f"{cluster.prefix}metrics:live:") for k in keys) == 2  # one per live process
        for key in keys:
            assert await raw.ttl(key) > 0, key
        assert await raw.keys("metrics:*") == []  # nothing outside the prefix
    finally:
        await raw.aclose()
