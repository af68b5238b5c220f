"""Two server processes, one Redis: a turn is followed, resumed, refused, stopped and deleted from either.

Every test here leaves both servers running (`shared_cluster`) and uses sessions of its
own. The turns come from `scale_provider`'s paced model: ``count N every S`` is a thinking
event, N tokens ``"1 "`` … ``"N "``, then `done`, so every expected stream is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
from scale_helpers import DISCONNECT_GRACE, Cluster, SseReader, counted, error_of, new_session_id, seqs, text_of
from scale_provider import TICK_CALL, paced
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

pytestmark = pytest.mark.timeout(180)


def stream_url(session_id: str) -> str:
    """The resumable SSE route of a session."""
    return f"api/streamchat/sessions/{session_id}/stream"


async def test_a_turn_started_on_a_is_followed_on_b_event_for_event(shared_cluster: Cluster) -> None:
    async with shared_cluster.a.client() as on_a, shared_cluster.b.client() as on_b:
        from_a = SseReader.open(on_a, "POST", "api/streamchat/chat/stream", json={"message": paced(30, 0.05)})
        first = (await from_a.wait_for(1))[0].event
        # B joins the running turn from its start: Last-Event-ID <turn_id>:0
        from_b = SseReader.open(
            on_b, "GET", stream_url(first.session_id), headers={"Last-Event-ID": f"{first.turn_id}:0"}
        )
        on_a_frames = await from_a.finish()
        on_b_frames = await from_b.finish()
    assert [f.name for f in on_a_frames] == ["thinking", *["token"] * 30, "done"]
    assert [f.id for f in on_a_frames] == [f"{first.turn_id}:{seq}" for seq in range(1, 33)]
    done = on_a_frames[-1].event
    assert done.type == "done" and done.reason == "stop" and done.text == counted(30)
    assert from_b.status == 200, from_b.body
    # event for event: the same ids, names and data
    assert [(f.id, f.name, f.data) for f in on_b_frames] == [(f.id, f.name, f.data) for f in on_a_frames]


async def test_cut_after_event_k_on_a_and_resumed_on_b_yields_the_rest_exactly_once(shared_cluster: Cluster) -> None:
    k = 9  # the next id is 10: ids compared as strings ("10" < "9") would lose the rest
    session_id = new_session_id()
    async with shared_cluster.a.client() as on_a, shared_cluster.b.client() as on_b:
        cut = SseReader.open(
            on_a, "GET", stream_url(session_id), params={"message": paced(40, 0.05)}, stop=lambda f: f.event.seq == k
        )
        before = await cut.finish()  # the connection is dropped after event k
        assert cut.status == 200, cut.body
        assert seqs(before) == list(range(1, k + 1))
        resumed = SseReader.open(on_b, "GET", stream_url(session_id), headers={"Last-Event-ID": str(k)})
        rest = await resumed.finish()
        assert resumed.status == 200, resumed.body
        turn_id = before[0].event.turn_id
        assert [f.id for f in rest] == [f"{turn_id}:{seq}" for seq in range(k + 1, 43)]
        assert [f.name for f in rest] == [*["token"] * 32, "done"]
        done = rest[-1].event
        # B resumed within the disconnect grace: the turn was not cancelled
        assert done.type == "done" and done.reason == "stop"
        assert text_of(before + rest) == counted(40) == done.text
        # resuming after the last event, on either process, sends nothing more
        for name, client in (("A", on_a), ("B", on_b)):
            after_done = await client.get(stream_url(session_id), headers={"Last-Event-ID": f"{turn_id}:42"})
            assert after_done.status_code == 204, (name, after_done.status_code, after_done.text)
        history = (await on_a.get(f"api/streamchat/sessions/{session_id}")).json()["history"]
        assert [(m["role"], m["content"], m["interrupted"]) for m in history] == [
            ("user", paced(40, 0.05), False),
            ("assistant", counted(40), False),
        ]


async def test_a_follower_on_b_keeps_the_turn_going_when_a_s_client_leaves(shared_cluster: Cluster) -> None:
    session_id = new_session_id()
    async with shared_cluster.a.client() as on_a, shared_cluster.b.client() as on_b:
        started = SseReader.open(
            on_a, "GET", stream_url(session_id), params={"message": paced(60, 0.05)}, stop=lambda f: f.event.seq == 3
        )
        turn_id = (await started.finish())[0].event.turn_id  # A's only client is gone after event 3
        follower = SseReader.open(on_b, "GET", stream_url(session_id), headers={"Last-Event-ID": f"{turn_id}:3"})
        rest = await follower.finish()  # the turn lasts 3 s: past the 2 s grace, counted on every process
    assert follower.status == 200, follower.body
    assert seqs(rest) == list(range(4, 63))
    assert rest[-1].event.type == "done" and rest[-1].event.reason == "stop"


async def test_a_busy_session_answers_409_on_b(shared_cluster: Cluster) -> None:
    session_id = new_session_id()
    async with shared_cluster.a.client() as on_a, shared_cluster.b.client() as on_b:
        running = SseReader.open(on_a, "GET", stream_url(session_id), params={"message": paced(200, 0.05)})
        await running.wait_for(2)
        refusals = [
            await on_b.post("api/streamchat/chat", json={"session_id": session_id, "message": "hi"}),
            await on_b.post("api/streamchat/chat/stream", json={"session_id": session_id, "message": "hi"}),
            await on_b.get(stream_url(session_id), params={"message": "hi"}),
            await on_a.post("api/streamchat/chat", json={"session_id": session_id, "message": "hi"}),
        ]
        for refused in refusals:
            assert refused.status_code == 409, (refused.request.url, refused.text)
            assert error_of(refused)["code"] == "session_busy"
        assert (await on_a.delete(f"api/streamchat/sessions/{session_id}")).status_code == 204
        frames = await running.finish()
    assert frames[-1].event.type == "done" and frames[-1].event.reason == "cancelled"


async def test_stop_sent_to_b_stops_the_turn_on_a_within_a_second(shared_cluster: Cluster) -> None:
    session_id = new_session_id()
    b = shared_cluster.b
    async with shared_cluster.a.client() as on_a, b.client() as on_b:
        running = SseReader.open(on_a, "GET", stream_url(session_id), params={"message": paced(200, 0.05)})
        await running.wait_for(3)
        ws = await websocket_connect(HTTPRequest(b.ws_url(), headers=b.auth))
        try:
            sent = time.monotonic()
            await ws.write_message(json.dumps({"type": "chat.cancel", "session_id": session_id}))
            try:
                frames = await running.finish(timeout=5)
            except TimeoutError:
                with contextlib.suppress(TimeoutError):
                    reply = await asyncio.wait_for(ws.read_message(), 1.0)
                    pytest.fail(f"the turn on A still ran 5 s after B was told to stop it; B answered {reply!r}")
                pytest.fail("the turn on A still ran 5 s after B was told to stop it; B answered nothing")
            done = frames[-1]
            assert done.event.type == "done" and done.event.reason == "cancelled", [f.name for f in frames[-3:]]
            assert done.at - sent < 1.0, f"the turn on A stopped {done.at - sent:.2f} s after B was told to stop it"
            with pytest.raises(TimeoutError):  # B took the stop: no error reply (such as not_running)
                reply = await asyncio.wait_for(ws.read_message(), 1.0)
                pytest.fail(f"B answered the stop with {reply!r}")
        finally:
            ws.close()
        assert seqs(frames) == list(range(1, len(frames) + 1))
        history = (await on_b.get(f"api/streamchat/sessions/{session_id}")).json()["history"]
        assert [(m["role"], m["interrupted"]) for m in history] == [("user", False), ("assistant", True)]
        assert history[1]["content"] == text_of(frames) == done.event.text


async def test_delete_on_b_removes_the_session_for_a(shared_cluster: Cluster) -> None:
    async with shared_cluster.a.client() as on_a, shared_cluster.b.client() as on_b:
        # a finished session
        answered = await on_a.post("api/streamchat/chat", json={"message": paced(3, 0)})
        assert answered.status_code == 200, answered.text
        idle = answered.json()["session_id"]
        assert (await on_b.delete(f"api/streamchat/sessions/{idle}")).status_code == 204
        assert (await on_a.get(f"api/streamchat/sessions/{idle}")).status_code == 404
        again = await on_a.post("api/streamchat/chat", json={"session_id": idle, "message": "hi"})
        assert again.status_code == 404 and error_of(again)["code"] == "session_not_found"

        # a session whose turn runs on A: the turn stops, and the session stays gone
        busy = new_session_id()
        running = SseReader.open(on_a, "GET", stream_url(busy), params={"message": paced(200, 0.05)})
        await running.wait_for(3)
        assert (await on_b.delete(f"api/streamchat/sessions/{busy}")).status_code == 204
        frames = await running.finish(timeout=10)
        assert frames[-1].event.type == "done" and frames[-1].event.reason == "cancelled"
        for client in (on_a, on_b):
            gone = await client.get(f"api/streamchat/sessions/{busy}")
            assert gone.status_code == 404, gone.text
        assert (await on_b.delete(f"api/streamchat/sessions/{busy}")).status_code == 404


async def test_tool_controls_sent_to_b_reach_the_tool_call_on_a(shared_cluster: Cluster) -> None:
    b = shared_cluster.b
    async with shared_cluster.a.client() as on_a:
        paused = new_session_id()
        running = SseReader.open(on_a, "GET", stream_url(paused), params={"message": "tick 40"})
        await running.wait_for(4)  # thinking, tool_call, two progress reports
        ws = await websocket_connect(HTTPRequest(b.ws_url(), headers=b.auth))
        try:
            # pause: the tool holds at its next progress report; resume: it goes on to the end
            await ws.write_message(json.dumps({"type": "tool.pause", "session_id": paused, "call_id": TICK_CALL}))
            await asyncio.sleep(1.5)
            held = len(running.frames)
            await asyncio.sleep(1.0)
            assert len(running.frames) == held, "the tool went on reporting after B paused it"
            await ws.write_message(json.dumps({"type": "tool.resume", "session_id": paused, "call_id": TICK_CALL}))
            frames = await running.finish(timeout=30)
            names = [f.name for f in frames]
            assert names[:2] == ["thinking", "tool_call"] and names[-4:] == ["tool_result", "thinking", "token", "done"]
            steps = [f.event.message for f in frames[2:-4] if f.name == "tool_progress"]  # type: ignore[union-attr]
            assert len(steps) == len(frames) - 6  # only progress between the call and its result
            assert [m for m in steps if m.startswith("step ")] == [f"step {i} of 40" for i in range(1, 41)]
            assert frames[-4].event.status == "ok"  # type: ignore[union-attr]

            # cancel: the call ends as cancelled on A, and the turn goes on to its answer
            cancelled = new_session_id()
            running = SseReader.open(on_a, "GET", stream_url(cancelled), params={"message": "tick 400"})
            await running.wait_for(4)
            sent = time.monotonic()
            await ws.write_message(json.dumps({"type": "tool.cancel", "session_id": cancelled, "call_id": TICK_CALL}))
            frames = await running.finish(timeout=30)
            result = next(f for f in frames if f.name == "tool_result")
            assert result.event.status == "cancelled", result.data  # type: ignore[union-attr]
            assert result.at - sent < 1.0, f"the call on A was cancelled {result.at - sent:.2f} s after B was told"
            assert frames[-1].event.type == "done" and frames[-1].event.reason == "stop"
            with pytest.raises(TimeoutError):  # B took every control: no error reply (such as not_running)
                reply = await asyncio.wait_for(ws.read_message(), 1.0)
                pytest.fail(f"B answered a tool control with {reply!r}")
        finally:
            ws.close()


async def test_the_turn_stops_once_its_last_follower_on_any_process_has_left(shared_cluster: Cluster) -> None:
    session_id = new_session_id()
    async with shared_cluster.a.client() as on_a, shared_cluster.b.client() as on_b:
        started = SseReader.open(
            on_a, "GET", stream_url(session_id), params={"message": paced(400, 0.05)}, stop=lambda f: f.event.seq == 3
        )
        turn_id = (await started.finish())[0].event.turn_id  # A's client leaves; B's follows
        follower = SseReader.open(
            on_b,
            "GET",
            stream_url(session_id),
            headers={"Last-Event-ID": f"{turn_id}:3"},
            stop=lambda f: f.event.seq == 60,
        )
        await follower.finish()  # B's client leaves too, after 60 events (3 s: the turn outlived A's client)
        assert seqs(follower.frames) == list(range(4, 61))
        # after the disconnect grace, the owner cancels the turn; its partial answer is kept, interrupted
        deadline = time.monotonic() + DISCONNECT_GRACE + 10
        history: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            history = (await on_b.get(f"api/streamchat/sessions/{session_id}")).json()["history"]
            if len(history) == 2:
                break
            await asyncio.sleep(0.2)
        assert [(m["role"], m["interrupted"]) for m in history] == [("user", False), ("assistant", True)], history
        assert counted(400).startswith(history[1]["content"]) and len(history[1]["content"]) < len(counted(400))
        answered = await on_b.post("api/streamchat/chat", json={"session_id": session_id, "message": paced(1, 0)})
        assert answered.status_code == 200, answered.text
