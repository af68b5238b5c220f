"""The server's global limits, against a real Jupyter server: every refusal is a 429 saying what to do.

Sessions in all and per user, turns running per user and in all (REST, SSE and WebSocket
answer the same code), the history a session keeps; and one provider (one connection
pool) shared by every session.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from backends.replay import ReplayServer, Reply
from backends.transcripts import ndjson, ollama_chunk, ollama_done
from server_helpers import (
    BOB,
    GATE,
    SCRIPT,
    SessionScripts,
    ToolCall,
    auth,
    error_of,
    receive,
    server_config,
    session_providers,
)


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
