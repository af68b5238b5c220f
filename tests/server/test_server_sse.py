"""SSE routes against a real Jupyter server: framing, heartbeats, disconnect, resume."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from server_helpers import (
    GATE,
    PARALLEL_SCRIPT,
    SCRIPT,
    TOOLS,
    Frame,
    comparable,
    error_of,
    server_config,
    session_providers,
    sse_events,
)

from jupyter_server_extension.app import load_tools
from jupyter_server_extension.service import ChatService
from streamchat import ChatSession, ScriptedProvider, ToolCall, parse_event

DISCONNECTS = 200
"""Sessions left mid-turn in the memory test, once to warm up and once measured."""


async def direct_events(script: list[Any], message: str) -> list[dict[str, Any]]:
    """The events `ChatSession.stream` yields for the same script, called directly."""
    session = ChatSession(ScriptedProvider(script), tools=load_tools(TOOLS))
    return [comparable(event) async for event in session.stream(message)]


def check_framing(frames: list[Frame]) -> None:
    """Each frame's id is its event's turn and seq, and its name its event's type."""
    assert [f.id for f in frames] == [f"{f.event.turn_id}:{n}" for n, f in enumerate(frames, 1)]
    assert len({f.event.turn_id for f in frames}) == 1
    assert all(f.name == f.event.type for f in frames)


async def test_post_stream_gives_the_same_events_as_chat_session(client: httpx.AsyncClient) -> None:
    SCRIPT.turns = PARALLEL_SCRIPT
    frames = await sse_events(client, "POST", "api/streamchat/chat/stream", json={"message": "count"})
    check_framing(frames)
    assert [comparable(f.event) for f in frames] == await direct_events(PARALLEL_SCRIPT, "count")
    done = frames[-1].event
    assert done.type == "done" and done.text == "Let me count.Counted: **3** and\n2."
    assert done.session_id and {f.event.session_id for f in frames} == {done.session_id}  # a POST client learns its id
    assert [f.event.type for f in frames].count("tool_progress") == 5


async def test_get_stream_gives_the_same_events_and_creates_the_named_session(client: httpx.AsyncClient) -> None:
    SCRIPT.turns = PARALLEL_SCRIPT
    frames = await sse_events(client, "GET", "api/streamchat/sessions/my-chat_1/stream", params={"message": "count"})
    check_framing(frames)
    assert [comparable(f.event) for f in frames] == await direct_events(PARALLEL_SCRIPT, "count")
    assert {f.event.session_id for f in frames} == {"my-chat_1"}
    history = (await client.get("api/streamchat/sessions/my-chat_1")).json()["history"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]


async def test_tokens_with_line_breaks_and_field_names_arrive_intact(client: httpx.AsyncClient) -> None:
    tokens = ["a\nb", "c\r", "\r\nevent: fake\n", "id: 99\n\ndata: x", ": ping\n", "é\u2028😀"]
    SCRIPT.turns = [tokens]
    frames = await sse_events(client, "POST", "api/streamchat/chat/stream", json={"message": "hi"})
    check_framing(frames)
    assert [f.event.content for f in frames if f.event.type == "token"] == tokens
    assert frames[-1].event.text == "".join(tokens)


@pytest.mark.parametrize(
    ("session_id", "params"),
    [("bad!id", {"message": "hi"}), ("x" * 65, {"message": "hi"}), ("ok", {}), ("ok", {"message": "  "})],
)
async def test_get_stream_rejects_bad_ids_and_messages(
    client: httpx.AsyncClient, session_id: str, params: dict[str, str]
) -> None:
    response = await client.get(f"api/streamchat/sessions/{session_id}/stream", params=params)
    assert response.status_code == 400
    assert error_of(response)["code"] in {"bad_session_id", "bad_message"}


class TestHeartbeat:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(heartbeat_interval=0.2)

    async def test_headers_and_ping_comments_while_a_tool_runs(self, client: httpx.AsyncClient) -> None:
        GATE.reset()
        SCRIPT.turns = [[ToolCall("wait_here", {"label": "w"})], ["ok"]]
        lines = []
        async with client.stream("POST", "api/streamchat/chat/stream", json={"message": "go"}) as response:
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            async for line in response.aiter_lines():
                lines.append(line)
                if line == ": ping":
                    assert GATE.opened is not None
                    GATE.opened.set()
        assert lines.count(": ping") >= 1
        assert "event: done" in lines
        assert lines[0] == "retry: 100"  # EventSource reconnects within the 0.2 s grace window
        assert lines[1].startswith("id: ") and lines[1].endswith(":1")


class TestHeartbeatWhileEventsFlow:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(heartbeat_interval=0.5)

    async def test_no_ping_while_events_come_then_pings_once_the_turn_is_quiet(self, client: httpx.AsyncClient) -> None:
        # 30 tokens 20 ms apart: 0.6 s of events, more than a heartbeat interval, each well within it
        GATE.reset()
        SCRIPT.token_delay = 0.02
        SCRIPT.turns = [[*[f"t{i} " for i in range(30)], ToolCall("wait_here", {"label": "w"})], ["ok"]]
        lines = []
        async with client.stream("POST", "api/streamchat/chat/stream", json={"message": "go"}) as response:
            async for line in response.aiter_lines():
                lines.append(line)
                if line == ": ping":
                    assert GATE.opened is not None
                    GATE.opened.set()
        quiet_from = lines.index("event: tool_call")
        assert ": ping" not in lines[:quiet_from]
        assert ": ping" in lines[quiet_from:]
        assert lines.count("event: token") == 31 and "event: done" in lines


class TestDisconnect:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(disconnect_grace=0.2)

    async def test_a_client_leaving_cancels_the_backend_and_the_tool(self, client: httpx.AsyncClient) -> None:
        GATE.reset()
        SCRIPT.turns = [[ToolCall("wait_here", {"label": "w"}, call_id="c1")], ["never"]]
        frames = await sse_events(
            client,
            "GET",
            "api/streamchat/sessions/gone/stream",
            params={"message": "go"},
            stop=lambda f: f.event.type == "tool_progress",
        )
        assert [f.event.type for f in frames] == ["thinking", "tool_call", "tool_progress"]
        assert GATE.cancelled_event is not None
        await asyncio.wait_for(GATE.cancelled_event.wait(), timeout=1.0)  # acceptance: within a second
        assert GATE.cancelled == ["w"]
        # the turn ended with done(cancelled), kept for a late resume, and its partial answer is in history
        rest = await sse_events(
            client, "GET", "api/streamchat/sessions/gone/stream", headers={"Last-Event-ID": frames[-1].id}
        )
        assert [(f.event.type, getattr(f.event, "status", None) or getattr(f.event, "reason", None)) for f in rest] == [
            ("tool_result", "cancelled"),
            ("done", "cancelled"),
        ]
        history = (await client.get("api/streamchat/sessions/gone")).json()["history"]
        assert history[1]["interrupted"] is True
        assert [len(p.requests) for p in session_providers()] == [1]

    async def test_a_client_leaving_mid_answer_closes_the_backend_stream(self, client: httpx.AsyncClient) -> None:
        closed = asyncio.Event()

        async def endless(request: Any) -> AsyncIterator[str]:
            yield "one "
            try:
                while True:
                    await asyncio.sleep(0.005)
                    yield "more "
            except (asyncio.CancelledError, GeneratorExit):
                closed.set()
                raise

        SCRIPT.turns = [endless]
        frames = await sse_events(
            client, "POST", "api/streamchat/chat/stream", json={"message": "go"}, stop=lambda f: f.event.type == "token"
        )
        assert [f.event.type for f in frames] == ["thinking", "token"]
        await asyncio.wait_for(closed.wait(), timeout=1.0)  # acceptance: within a second
        (provider,) = session_providers()
        assert provider.cancellations == 1


class TestManyDisconnects:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(disconnect_grace=0.0, max_sessions_per_user=DISCONNECTS)

    async def test_memory_and_tasks_return_to_baseline_after_200_disconnects(
        self, client: httpx.AsyncClient, chat_service: ChatService
    ) -> None:
        async def one_disconnect(n: int) -> None:
            GATE.reset()
            SCRIPT.turns = [[ToolCall("wait_here", {"label": f"w{n}"})], ["never"]]
            url = f"api/streamchat/sessions/s{n}/stream"
            await sse_events(
                client, "GET", url, params={"message": "go"}, stop=lambda f: f.event.type == "tool_progress"
            )
            assert GATE.cancelled_event is not None
            await asyncio.wait_for(GATE.cancelled_event.wait(), timeout=5)

        async def disconnects(first: int) -> None:
            """DISCONNECTS sessions left mid-turn, then the server's idle expiry, an hour later."""
            numbers = range(first, first + DISCONNECTS)
            for n in numbers:
                await one_disconnect(n)
            # Wait for the cancelled turns to end (the server names its turn tasks
            # "streamchat …"; one that never ends fails here), then let the server's own idle
            # expiry, an hour later, drop the sessions: it skips a session whose turn still
            # runs, and whatever it keeps of a session elsewhere stays in the measured memory.
            turns = [task for task in asyncio.all_tasks() if task.get_name().startswith("streamchat ")]
            await asyncio.wait_for(asyncio.gather(*turns), timeout=5)
            later = time.time() + chat_service.limits.idle_timeout + 1
            assert sorted(await chat_service.expire_idle(now=later)) == sorted(f"s{n}" for n in numbers)
            del SCRIPT.providers[1:]  # the test's own list of the providers made: not the server's memory

        # Warm up with as many sessions (caches, pools, the store's tables at their size,
        # asyncio's heap of cancelled timers, which keeps each timer's context until
        # purged), then check that 200 more disconnects leave nothing behind.
        logging.disable(logging.WARNING)  # pytest keeps every captured log record: not the server's memory
        tracemalloc.start()
        try:
            await disconnects(0)
            gc.collect()
            tasks_before = len(asyncio.all_tasks())
            memory_before = tracemalloc.get_traced_memory()[0]
            await disconnects(DISCONNECTS)
            gc.collect()
            tasks_after = len(asyncio.all_tasks())
            memory_after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
            logging.disable(logging.NOTSET)
        assert tasks_after <= tasks_before
        assert memory_after - memory_before < 256 * 1024, f"grew by {memory_after - memory_before} bytes"


class TestResume:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(disconnect_grace=60.0)  # this test resumes; the cut must not cancel the turn

    async def test_resume_after_event_k_yields_the_rest_exactly_once(self, client: httpx.AsyncClient) -> None:
        GATE.reset()
        script = [["Thinking about it. ", ToolCall("wait_here", {"label": "r"}, call_id="r1")], ["Resumed ", "fine."]]
        SCRIPT.turns = script
        url = "api/streamchat/sessions/resume-me/stream"
        first = await sse_events(
            client, "GET", url, params={"message": "go"}, stop=lambda f: f.event.type == "tool_progress"
        )
        turn_id = first[0].event.turn_id
        k = int(first[-1].id.removeprefix(f"{turn_id}:"))
        assert k == 4
        assert GATE.started is not None and GATE.opened is not None
        async with aconnect_sse(
            client, "GET", url, params={"message": "go"}, headers={"Last-Event-ID": first[-1].id}
        ) as source:
            assert source.response.status_code == 200
            GATE.opened.set()  # the tool finishes only now, while the resumed stream is attached
            rest = [Frame(sse.id, sse.event, parse_event(sse.data)) async for sse in source.aiter_sse()]
        assert [f.id for f in rest] == [f"{turn_id}:{n}" for n in range(k + 1, k + 1 + len(rest))]
        assert rest[-1].event.type == "done"
        assert [comparable(f.event) for f in first + rest] == await direct_events(script, "go")
        assert [len(p.requests) for p in session_providers()] == [2]  # no second turn started
        # after done, a reconnect is told there is nothing more (EventSource stops on 204)
        again = await client.get(url, params={"message": "go"}, headers={"Last-Event-ID": rest[-1].id})
        assert again.status_code == 204
        replay = await sse_events(client, "GET", url, headers={"Last-Event-ID": "0"})
        assert [f.id for f in replay] == [f.id for f in first + rest]

    async def test_resume_of_an_unknown_session_is_404_and_a_bad_id_400(self, client: httpx.AsyncClient) -> None:
        response = await client.get("api/streamchat/sessions/nobody/stream", headers={"Last-Event-ID": "1"})
        assert response.status_code == 404 and error_of(response)["code"] == "session_not_found"
        await sse_events(client, "GET", "api/streamchat/sessions/known/stream", params={"message": "hi"})
        response = await client.get("api/streamchat/sessions/known/stream", headers={"Last-Event-ID": "x"})
        assert response.status_code == 400 and error_of(response)["code"] == "bad_last_event_id"
