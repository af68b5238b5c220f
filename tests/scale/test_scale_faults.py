"""Faults of a two-process deployment: a killed server, a restarted or missing Redis, both servers restarted.

Each test gets a fresh Redis and two fresh servers (`cluster`), since it kills, stops or
restarts one of them. Nothing may escape as a traceback into a server's log (the
fixture checks both logs at the end; the tests check at the moment that matters too).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis_helpers import free_port
from scale_helpers import (
    LEASE,
    Cluster,
    JupyterProcess,
    SseReader,
    counted,
    error_of,
    lines_matching,
    new_session_id,
    seqs,
    streamchat_config,
    text_of,
)
from scale_provider import paced

pytestmark = pytest.mark.timeout(240)


def stream_url(session_id: str) -> str:
    """The resumable SSE route of a session."""
    return f"api/streamchat/sessions/{session_id}/stream"


async def test_kill_9_of_the_owner_ends_the_followers_turn_within_the_lease(cluster: Cluster) -> None:
    session_id = new_session_id()
    async with cluster.a.client() as on_a, cluster.b.client() as on_b:
        owner = SseReader.open(on_a, "GET", stream_url(session_id), params={"message": paced(400, 0.05)})
        turn_id = (await owner.wait_for(2))[0].event.turn_id
        follower = SseReader.open(on_b, "GET", stream_url(session_id), headers={"Last-Event-ID": f"{turn_id}:0"})
        await follower.wait_for(6)
        killed = time.monotonic()
        cluster.a.kill()
        frames = await follower.finish(timeout=LEASE + 30)
        await owner.close()
        assert follower.status == 200, follower.body
        # every event once, in order; the turn ends with an error saying why, then done(reason="error")
        assert seqs(frames) == list(range(1, len(frames) + 1))
        assert [f.name for f in frames[-2:]] == ["error", "done"], [f.data for f in frames[-3:]]
        assert [f.name for f in frames[:-2]] == ["thinking", *["token"] * (len(frames) - 3)]
        error, done = frames[-2].event, frames[-1].event
        assert error.type == "error" and "stopped" in error.message and "server" in error.message, error
        assert done.type == "done" and done.reason == "error"
        assert done.text == text_of(frames)
        waited = frames[-1].at - killed
        assert waited <= LEASE + 2, f"the follower got its final event {waited:.2f} s after the kill (lease {LEASE} s)"

        # the session is usable again, on the process that is left; the partial answer stays, marked interrupted
        answered = await on_b.post("api/streamchat/chat", json={"session_id": session_id, "message": paced(3, 0)})
        assert answered.status_code == 200, answered.text
        assert answered.json()["text"] == counted(3)
        history = (await on_b.get(f"api/streamchat/sessions/{session_id}")).json()["history"]
        assert [(m["role"], m["content"], m["interrupted"]) for m in history] == [
            ("user", paced(400, 0.05), False),
            ("assistant", done.text, True),
            ("user", paced(3, 0), False),
            ("assistant", counted(3), False),
        ]
    assert not cluster.b.tracebacks()


async def test_redis_restarted_mid_turn_the_turn_completes_and_later_requests_work(cluster: Cluster) -> None:
    async with cluster.a.client() as on_a:
        running = SseReader.open(on_a, "POST", "api/streamchat/chat/stream", json={"message": paced(80, 0.05)})
        await running.wait_for(10)
        cluster.redis.stop()
        await asyncio.sleep(1.0)  # the turn goes on, 20 tokens, with no Redis
        cluster.redis.start()  # empty: nothing was persisted
        frames = await running.finish(timeout=60)
        turn_id = frames[0].event.turn_id
        # the turn's local stream is complete: every event once, in order, to done(reason="stop")
        assert [f.id for f in frames] == [f"{turn_id}:{seq}" for seq in range(1, 83)]
        assert [f.name for f in frames] == ["thinking", *["token"] * 80, "done"], [f.data for f in frames[-3:]]
        assert frames[-1].event.type == "done" and frames[-1].event.reason == "stop"
        assert text_of(frames) == counted(80) == frames[-1].event.text
    assert cluster.tracebacks() == {}
    # later requests succeed on both processes, without restarting them
    for server in cluster.servers:
        async with server.client() as client:
            answered = await client.post("api/streamchat/chat", json={"message": paced(3, 0)})
            assert answered.status_code == 200, (server.name, answered.text)
            assert answered.json()["text"] == counted(3)
            session_id = answered.json()["session_id"]
            history = await client.get(f"api/streamchat/sessions/{session_id}")
            assert history.status_code == 200 and len(history.json()["history"]) == 2, history.text
    assert cluster.tracebacks() == {}


async def test_history_survives_both_servers_restarting(cluster: Cluster) -> None:
    async with cluster.a.client() as on_a, cluster.b.client() as on_b:
        first = await on_a.post("api/streamchat/chat", json={"message": paced(3, 0)})
        assert first.status_code == 200, first.text
        session_id = first.json()["session_id"]
        second = await on_b.post("api/streamchat/chat", json={"session_id": session_id, "message": paced(2, 0)})
        assert second.status_code == 200, second.text
    expected = [
        ("user", paced(3, 0)),
        ("assistant", counted(3)),
        ("user", paced(2, 0)),
        ("assistant", counted(2)),
    ]
    cluster.stop()
    cluster.restart()
    async with cluster.a.client() as on_a, cluster.b.client() as on_b:
        for client in (on_a, on_b):
            history = await client.get(f"api/streamchat/sessions/{session_id}")
            assert history.status_code == 200, history.text
            assert [(m["role"], m["content"]) for m in history.json()["history"]] == expected
        third = await on_a.post("api/streamchat/chat", json={"session_id": session_id, "message": paced(1, 0)})
        assert third.status_code == 200 and third.json()["text"] == counted(1), third.text


async def test_redis_unreachable_at_startup_the_extension_does_not_start(tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    config = streamchat_config("", "test:")
    del config["store_url"]  # given by the environment variable instead
    server = JupyterProcess("alone", tmp_path, token="t0ken", streamchat=config, env={"STREAMCHAT_STORE_URL": nowhere})
    server.start()
    try:
        server.wait_ready()  # Jupyter itself runs, without streamchat
        async with server.client() as client:
            health = await client.get("api/streamchat/health")
            assert health.status_code == 404, health.text  # not loaded: no silent fallback to the memory store
    finally:
        server.stop()
    log = server.log()
    said = lines_matching(log, "streamchat: the extension cannot start")
    assert len(said) == 1, log[-4000:]
    assert nowhere.removeprefix("redis://").removesuffix("/0") in said[0], said[0]
    assert server.tracebacks() == [], log[-4000:]


async def test_redis_down_during_requests_answers_503_then_recovers(cluster: Cluster) -> None:
    async with cluster.a.client() as on_a:
        kept = await on_a.post("api/streamchat/chat", json={"message": paced(2, 0)})
        assert kept.status_code == 200, kept.text
        session_id = kept.json()["session_id"]
    cluster.redis.stop()
    for server in cluster.servers:
        async with server.client() as client:
            refusals = [
                await client.post("api/streamchat/chat", json={"message": "hi"}),
                await client.post("api/streamchat/chat/stream", json={"message": "hi"}),
                await client.get(stream_url(new_session_id()), params={"message": "hi"}),
                await client.get(f"api/streamchat/sessions/{session_id}"),
                await client.delete(f"api/streamchat/sessions/{session_id}"),
            ]
            for refused in refusals:
                where = (server.name, refused.request.method, str(refused.request.url))
                assert refused.status_code == 503, (where, refused.text)
                assert refused.headers["Content-Type"].startswith("application/json"), where
                message = error_of(refused)["message"]
                assert "redis" in message.lower() or "store" in message.lower(), (where, message)
    assert cluster.tracebacks() == {}
    cluster.redis.start()  # empty again: later requests work without restarting Jupyter
    for server in cluster.servers:
        async with server.client() as client:
            answered = await client.post("api/streamchat/chat", json={"message": paced(2, 0)})
            assert answered.status_code == 200, (server.name, answered.text)
            assert answered.json()["text"] == counted(2)
