"""The server's global limits, against a real Jupyter server: every refusal is a 429 saying what to do.

Sessions in all and per user, turns running per user and in all (REST, SSE and WebSocket
answer the same code), the history a session keeps; and one provider (one connection
pool) shared by every session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from backends.replay import ReplayServer, Reply
from backends.transcripts import ndjson, ollama_chunk, ollama_done
from server_helpers import (
    ALICE,
    BOB,
    GATE,
    SCRIPT,
    SessionScripts,
    ToolCall,
    aconnect_sse,
    auth,
    error_of,
    parse_event,
    receive,
    server_config,
    session_providers,
)

from jupyter_server_extension.service import ChatService, Follower, Limits
from streamchat import Event, ScriptedProvider, Settings
from streamchat.errors import TooManyTurnsError
from streamchat.providers import ProviderChoice
from streamchat.providers.base import ModelRequest
from streamchat.stores import MemoryStore


class TestSessionLimits:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_sessions=3, max_sessions_per_user=2)

    async def test_sessions_in_all_and_per_user_answer_429(
        self, client: httpx.AsyncClient, base_url: str, jp_ws_fetch: Any
    ) -> None:
        for _ in range(2):
            assert (await client.post("api/streamchat/chat", json={"message": "hi"})).status_code == 200
        mine = await client.post("api/streamchat/chat", json={"message": "hi"})
        assert mine.status_code == 429
        assert error_of(mine) == {
            "code": "too_many_sessions",
            "message": "you already have 2 sessions: delete one first",
        }
        async with httpx.AsyncClient(base_url=base_url, headers=auth(BOB)) as bob:
            first = await bob.post("api/streamchat/chat", json={"message": "hi"})
            assert first.status_code == 200
            full = await bob.get("api/streamchat/sessions/new/stream", params={"message": "hi"})
            assert full.status_code == 429
            assert error_of(full) == {
                "code": "too_many_sessions",
                "message": "the server has the most sessions it keeps (3): try again later, "
                "or delete a session you no longer need",
            }
            socket = await jp_ws_fetch("api", "streamchat", "ws", headers=auth(BOB))
            await socket.write_message(json.dumps({"type": "chat.message", "message": "hi"}))
            error = await receive(socket)
            assert (error["type"], error["code"]) == ("error", "too_many_sessions")
            socket.close()
            # a session deleted frees its place for anyone
            assert (await bob.delete(f"api/streamchat/sessions/{first.json()['session_id']}")).status_code == 204
            assert (await bob.post("api/streamchat/chat", json={"message": "hi"})).status_code == 200


class TestTurnLimits:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_running_turns_per_user=1, max_running_turns=1)

    async def test_running_turns_per_user_and_in_all_answer_429(
        self, client: httpx.AsyncClient, base_url: str, jp_ws_fetch: Any
    ) -> None:
        GATE.reset()
        SCRIPT.turns = [[ToolCall("wait_here", {"label": "long"})], ["long answer"]]
        running = asyncio.create_task(client.post("api/streamchat/chat", json={"message": "long"}))
        assert GATE.started is not None and GATE.opened is not None
        await GATE.started.wait()
        SCRIPT.turns = [["Hello", " there"]]
        mine = await client.post("api/streamchat/chat", json={"message": "another"})
        assert mine.status_code == 429
        assert error_of(mine) == {
            "code": "too_many_turns",
            "message": "you already have 1 turn running: wait for it to finish or cancel it",
        }
        stream = await client.get("api/streamchat/sessions/other/stream", params={"message": "another"})
        assert stream.status_code == 429 and error_of(stream)["code"] == "too_many_turns"
        async with httpx.AsyncClient(base_url=base_url, headers=auth(BOB)) as bob:
            busy = await bob.post("api/streamchat/chat/stream", json={"message": "hi"})
            assert busy.status_code == 429
            assert error_of(busy) == {
                "code": "too_many_turns",
                "message": "the server is already answering 1 message (its limit): try again in a moment",
            }
            socket = await jp_ws_fetch("api", "streamchat", "ws", headers=auth(BOB))
            await socket.write_message(json.dumps({"type": "chat.message", "message": "hi"}))
            error = await receive(socket)
            assert (error["type"], error["code"]) == ("error", "too_many_turns")
            assert "try again in a moment" in error["message"]
            GATE.opened.set()
            assert (await running).json()["text"] == "long answer"
            # the finished turn gave its place back
            await socket.write_message(json.dumps({"type": "chat.message", "message": "hi"}))
            assert [(await receive(socket))["type"] for _ in range(4)][-1] == "chat.complete"
            socket.close()
            assert (await bob.post("api/streamchat/chat", json={"message": "hi"})).json()["text"] == "Hello there"
        # a refused turn reached no model: one request for the long turn's two calls, one each for bob's two
        assert sorted(len(p.requests) for p in session_providers()) == [1, 1, 2]


class TestHistoryLimit:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_history_messages=5)

    async def test_a_session_keeps_its_latest_messages_from_a_user_message_on(self, client: httpx.AsyncClient) -> None:
        SCRIPT.turns = [["one"], [ToolCall("calculate", {"expression": "1 + 1"}, call_id="c")], ["two"], ["three"]]
        session_id = (await client.post("api/streamchat/chat", json={"message": "first"})).json()["session_id"]
        for message in ("second", "third"):
            await client.post("api/streamchat/chat", json={"message": message, "session_id": session_id})
        history = (await client.get(f"api/streamchat/sessions/{session_id}")).json()["history"]
        # 7 messages made: the oldest go, and a kept history starts with a user message (never a tool result)
        assert [(m["role"], m["content"]) for m in history] == [("user", "third"), ("assistant", "three")]
        (provider,) = session_providers()
        assert [m.content for m in provider.requests[-1].messages] == [
            "second",
            "",
            json.dumps({"expression": "1 + 1", "result": 2, "summary": "1 + 1 = 2"}),
            "two",
            "third",
        ]


class TestOneProvider:
    async def test_the_server_makes_one_provider_and_every_session_shares_it(
        self, client: httpx.AsyncClient, jp_serverapp: Any
    ) -> None:
        GATE.reset()
        SCRIPT.turns = [[ToolCall("wait_here", {"label": "a"})], ["first"]]
        running = asyncio.create_task(client.post("api/streamchat/chat", json={"message": "one"}))
        assert GATE.started is not None and GATE.opened is not None
        await GATE.started.wait()
        SCRIPT.turns = [["second"]]
        assert (await client.post("api/streamchat/chat", json={"message": "two"})).json()["text"] == "second"
        GATE.opened.set()
        assert (await running).json()["text"] == "first"
        (shared,) = [p for p in SCRIPT.providers if isinstance(p, SessionScripts)]  # the factory ran once
        assert (await jp_serverapp.web_app.settings["streamchat_service"].provider_choice()).provider is shared
        assert [len(p.requests) for p in session_providers()] == [2, 1]  # each session played its own script


class TestSharedConnectionPool:
    @pytest.fixture
    def jp_server_config(self, replay: ReplayServer) -> dict[str, Any]:
        return server_config(provider_factory="", provider="ollama", ollama_host=replay.url, tools=[])

    async def test_sessions_talk_to_the_backend_over_one_pool(
        self, client: httpx.AsyncClient, replay: ReplayServer
    ) -> None:
        replay.reset(*[Reply([ndjson(ollama_chunk("pooled"), ollama_done())]) for _ in range(3)])
        sessions = set()
        for _ in range(3):
            result = (await client.post("api/streamchat/chat", json={"message": "hi"})).json()
            assert result["text"] == "pooled"
            sessions.add(result["session_id"])
        assert len(sessions) == 3 and len(replay.requests) == 3
        assert replay.connections == 1  # one kept-alive connection: not one pool per session


TOOLS_LIST = json.dumps({"type": "tools.list"})


@contextlib.asynccontextmanager
async def raw_connection(
    port: int, request: str, token: str, **headers: str
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client that sends `request` ("GET /path …") and then reads only when the test says so.

    asyncio's streams stop reading the socket once 128 KiB wait unread, and the socket's
    receive window is small, so the server's writes to a client that never reads soon pile
    up on the server's side, as with a real slow client (tornado's and httpx's clients would
    keep reading the socket into memory).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, as a slow client's
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    lines = [f"{request} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Authorization: token {token}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        yield reader, writer
    finally:
        writer.close()


def ws_frame(text: str) -> bytes:
    """One masked text frame, as a client sends it (RFC 6455 §5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@contextlib.asynccontextmanager
async def raw_websocket(port: int, base_url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A WebSocket to ``api/streamchat/ws`` as alice, over a `raw_connection`."""
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec_WebSocket_Key": key, "Sec_WebSocket_Version": "13"}
    async with raw_connection(port, f"GET {base_url}api/streamchat/ws", ALICE, **upgrade) as (reader, writer):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        yield reader, writer


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next text message the server sent over a `raw_websocket`, parsed."""
    head = await reader.readexactly(2)
    assert head[0] == 0x81, head  # a whole text frame
    size = head[1] & 0x7F
    if size >= 126:
        size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8), "big")
    message: dict[str, Any] = json.loads(await reader.readexactly(size))
    return message


class TestWebSocketFlood:
    LIMIT = 16 * 1024

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_buffered_bytes=self.LIMIT, max_messages_in_flight=2)

    async def test_a_socket_that_floods_and_never_reads_is_dropped_while_others_go_on(
        self, jp_ws_fetch: Any, jp_serverapp: Any, jp_http_port: int, jp_base_url: str
    ) -> None:
        service = jp_serverapp.web_app.settings["streamchat_service"]
        other = await jp_ws_fetch("api", "streamchat", "ws", headers=auth(BOB))
        GATE.reset()
        SCRIPT.turns = [[ToolCall("wait_here", {"label": "other"})], ["still ", "here"]]
        await other.write_message(json.dumps({"type": "chat.message", "message": "go"}))
        assert [(await receive(other))["type"] for _ in range(3)] == ["chat.thinking", "tool.call", "tool.progress"]
        await other.write_message(TOOLS_LIST)
        reply = len(json.dumps(await receive(other), separators=(",", ":")))
        async with raw_websocket(jp_http_port, jp_base_url) as (_, writer):
            sent = 0
            while not any(client.dropped for client in service.clients):
                writer.write(ws_frame(TOOLS_LIST))  # and never read
                await writer.drain()
                sent += 1
                if sent % 200 == 0:  # meanwhile, the other socket gets its answers
                    await other.write_message(TOOLS_LIST)
                    assert (await receive(other))["type"] == "tools.list"
        (dropped,) = [client for client in service.clients if client.dropped]
        # the server held at most the limit plus one reply for it (measured before each reply)
        assert self.LIMIT < dropped.peak <= self.LIMIT + reply + 4  # + the frame's header
        assert GATE.opened is not None
        GATE.opened.set()  # the other socket's turn goes on to its end
        rest = [await receive(other) for _ in range(5)]
        assert [m["type"] for m in rest] == [
            "tool.progress",
            "tool.result",
            "chat.thinking",
            "chat.token",
            "chat.token",
        ]
        assert (await receive(other))["text"] == "still here"
        other.close()


class TestMessagesInFlight:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_messages_in_flight=2)  # and the default byte limit, 1 MiB

    async def test_messages_past_the_in_flight_limit_get_an_error_and_the_socket_goes_on(
        self, jp_serverapp: Any, base_url: str, jp_http_port: int, jp_base_url: str
    ) -> None:
        service = jp_serverapp.web_app.settings["streamchat_service"]
        async with raw_websocket(jp_http_port, jp_base_url) as (reader, writer):
            writer.write(ws_frame(TOOLS_LIST))
            reply = len(json.dumps(await read_frame(reader), separators=(",", ":"))) + 4
            (client,) = service.clients
            sent = 1
            while client.pending() <= 2 * reply:  # until both replies in flight wait, and a refusal behind them
                writer.write(ws_frame(TOOLS_LIST))
                await writer.drain()
                await asyncio.sleep(0)  # let the server take it (loopback takes MBs without making drain wait)
                sent += 1
            answers = [await read_frame(reader) for _ in range(sent - 1)]  # now read everything
            refusals = [answer for answer in answers if answer["type"] == "error"]
            assert refusals and all(answer["type"] == "tools.list" for answer in answers if answer not in refusals)
            assert refusals[0] == {
                "type": "error",
                "code": "too_many_in_flight",
                "message": "2 messages of this socket are still being handled: wait for their replies before "
                "sending more",
            }
            writer.write(ws_frame(TOOLS_LIST))  # a client that reads has its messages handled again
            assert (await read_frame(reader))["type"] == "tools.list"
            assert not client.dropped


class TestSlowSseReader:
    LIMIT = 64 * 1024

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_buffered_bytes=self.LIMIT)

    async def test_a_follower_that_never_reads_is_dropped_and_the_others_get_everything(
        self, client: httpx.AsyncClient, jp_serverapp: Any, jp_http_port: int, jp_base_url: str
    ) -> None:
        service = jp_serverapp.web_app.settings["streamchat_service"]
        tokens: list[str] = []

        async def until_a_client_is_dropped(request: Any) -> AsyncIterator[str]:
            # 16 kB tokens until the slow client is dropped (loopback buffers take MBs first), then three more
            while len(tokens) < 2000 and not any(buffer.dropped for buffer in service.clients):
                tokens.append(f"{len(tokens):05d}" + "x" * 16_000)
                yield tokens[-1]
            for _ in range(3):
                tokens.append(f"{len(tokens):05d} after")
                yield tokens[-1]

        GATE.reset()
        SCRIPT.turns = [[ToolCall("wait_here", {"label": "g"}, call_id="g")], until_a_client_is_dropped]
        SCRIPT.token_delay = 0.001  # the model's pace
        url = "api/streamchat/sessions/shared/stream"
        async with aconnect_sse(client, "GET", url, params={"message": "go"}) as fast:
            events = fast.aiter_sse()
            frames = [parse_event((await anext(events)).data) for _ in range(3)]
            assert [e.type for e in frames] == ["thinking", "tool_call", "tool_progress"]
            (fast_buffer,) = service.clients
            slow = raw_connection(jp_http_port, f"GET {jp_base_url}{url}", ALICE, Last_Event_ID="0")
            async with slow as (reader, _):  # follows the same turn, and reads nothing but the head
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
                (slow_buffer,) = [buffer for buffer in service.clients if buffer is not fast_buffer]
                assert GATE.opened is not None
                GATE.opened.set()
                frames += [parse_event(sse.data) async for sse in events]
                assert slow_buffer.dropped and not fast_buffer.dropped
                received = await reader.read()  # what reached the client before the server dropped it
        assert len(tokens) < 2000
        assert [e.content for e in frames if e.type == "token"] == tokens
        assert frames[-1].type == "done" and frames[-1].text == "".join(tokens)
        assert self.LIMIT < slow_buffer.peak <= self.LIMIT + 16_200  # at most one event over the limit
        assert b"event: done" not in received


async def test_a_socket_closed_with_replies_unsent_leaves_no_unretrieved_task_error(
    jp_serverapp: Any, base_url: str, jp_http_port: int, jp_base_url: str, jp_ws_fetch: Any
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        async with raw_websocket(jp_http_port, jp_base_url) as (_, writer):
            for _ in range(5000):  # far more replies than loopback buffers take; never read
                writer.write(ws_frame(TOOLS_LIST))
            await writer.drain()
            other = await jp_ws_fetch("api", "streamchat", "ws")
            await other.write_message(TOOLS_LIST)
            await receive(other)  # the server has read the flood by now
            other.close()
        for _ in range(10_000):  # until the server has seen the close: no write is pending any more
            if not [task for task in asyncio.all_tasks() if "write_message" in repr(task.get_coro())]:
                break
            await asyncio.sleep(0)
        gc.collect()  # an unretrieved task error is reported when its task is collected
    finally:
        loop.set_exception_handler(None)
    assert [context["message"] for context in reported] == []


class FailingStore(MemoryStore):
    """A memory store that fails to keep the events of a message saying "fail"."""

    async def append_event(self, session_id: str, event: Event) -> None:
        if event.type == "token":
            raise RuntimeError("the store is gone")
        await super().append_event(session_id, event)


class TestFailingTurn:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(store_class=FailingStore)

    async def test_a_turn_task_that_fails_is_logged_not_left_unretrieved(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))
        try:
            response = await client.post("api/streamchat/chat/stream", json={"message": "hi"})
            assert response.status_code == 200 and "event: thinking" in response.text
            assert "event: done" not in response.text  # the turn could not go on
            gc.collect()  # an unretrieved task error is reported when its task is collected
        finally:
            loop.set_exception_handler(None)
        assert [context["message"] for context in reported] == []
        (failure,) = [record for record in caplog.records if record.name == "streamchat.server"]
        assert failure.getMessage().startswith("streamchat: the turn task streamchat ")
        assert failure.exc_info is not None and str(failure.exc_info[1]) == "the store is gone"


async def test_running_turns_are_counted_per_user_through_restarts_in_one_session() -> None:
    """The per-user and global turn limits count each running turn once: one that ended gives its place back,
    and a session's next turn, started as soon as the previous one said `done`, takes that turn's place."""
    gates: dict[str, asyncio.Event] = {}

    async def answer(request: ModelRequest) -> AsyncIterator[str]:
        label = str(request.messages[-1].content)
        if label.startswith("wait"):
            gates[label] = asyncio.Event()
            await gates[label].wait()
        yield f"answer to {label}"

    async def choice() -> ProviderChoice:
        return ProviderChoice(provider=provider, announcement="the test's", new_provider=lambda: provider)

    provider = ScriptedProvider([answer] * 20)
    limits = Limits(max_running_turns_per_user=2, max_running_turns=3)
    service = ChatService(MemoryStore(), provider_choice=choice, tools=[], settings=Settings(), limits=limits)

    async def text(follower: Follower) -> str:
        return (await service.collect(follower)).text

    async def start(owner: str, session: str, message: str) -> Follower:
        return await service.start_turn(owner, session, message, create_missing=True)

    try:
        for _ in range(2):  # the second round finds every place given back
            # a session's turns back to back: each next message sent as soon as `done` came
            for n in range(3):
                assert await text(await start("alice", "s", f"again {n}")) == f"answer to again {n}"
            alice = [await start("alice", session, f"wait {session}") for session in ("s", "t")]
            with pytest.raises(TooManyTurnsError, match="you already have 2 turns running"):
                await start("alice", "u", "hi")
            bob = await start("bob", "b", "wait b")
            with pytest.raises(TooManyTurnsError, match="the server is already answering 3 messages"):
                await start("bob", "c", "hi")
            while len(gates) < 3:
                await asyncio.sleep(0)
            gates.pop("wait s").set()
            assert await text(alice[0]) == "answer to wait s"
            while service.running("s") is not None:
                await asyncio.sleep(0)
            assert await text(await start("bob", "c", "hi")) == "answer to hi"
            for gate in gates.values():
                gate.set()
            gates.clear()
            assert [await text(f) for f in (alice[1], bob)] == ["answer to wait t", "answer to wait b"]
            for session in ("s", "t", "b", "c"):
                while service.running(session) is not None:
                    await asyncio.sleep(0)
    finally:
        await service.aclose()
