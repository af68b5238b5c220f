"""The WebSocket route against a real Jupyter server: messages, several sessions, controls, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from server_helpers import (
    GATE,
    PARALLEL_SCRIPT,
    SCRIPT,
    TOOLS,
    comparable,
    receive,
    server_config,
    session_providers,
)
from tornado.websocket import WebSocketClientConnection

from jupyter_server_extension.app import load_tools
from jupyter_server_extension.wire import event_from_ws
from streamchat import ChatSession, ScriptedProvider, ToolCall


async def until_complete(ws: WebSocketClientConnection, session_id: str | None = None) -> list[dict[str, Any]]:
    """Messages up to and including the `chat.complete` (of `session_id`, when given)."""
    messages = []
    while True:
        message = await receive(ws)
        messages.append(message)
        if message["type"] == "chat.complete" and session_id in (None, message["session_id"]):
            return messages


async def test_ws_gives_the_same_events_as_chat_session(ws: WebSocketClientConnection) -> None:
    SCRIPT.turns = PARALLEL_SCRIPT
    await ws.write_message(json.dumps({"type": "chat.message", "message": "count"}))
    messages = await until_complete(ws)
    direct = ChatSession(ScriptedProvider(PARALLEL_SCRIPT), tools=load_tools(TOOLS))
    expected = [comparable(event) async for event in direct.stream("count")]
    assert [comparable(event_from_ws(m)) for m in messages] == expected
    assert [m["type"] for m in messages][:4] == ["chat.thinking", "chat.token", "chat.token", "tool.call"]
    assert messages[-1]["text"] == "Let me count.Counted: **3** and\n2."


async def test_tokens_with_line_breaks_and_field_names_arrive_intact(ws: WebSocketClientConnection) -> None:
    tokens = ["a\nb", "c\r", "\r\nevent: fake\n", "id: 99\n\ndata: x", "é\u2028😀"]
    SCRIPT.turns = [tokens]
    await ws.write_message(json.dumps({"type": "chat.message", "message": "hi"}))
    messages = await until_complete(ws)
    assert [m["content"] for m in messages if m["type"] == "chat.token"] == tokens
    assert messages[-1]["text"] == "".join(tokens)


async def test_one_socket_runs_turns_on_several_sessions(ws: WebSocketClientConnection) -> None:
    GATE.reset()
    SCRIPT.turns = [[ToolCall("wait_here", {"label": "slow"}, call_id="s1")], ["slow answer"], ["again"]]
    await ws.write_message(json.dumps({"type": "chat.message", "message": "slow one"}))
    first = [await receive(ws) for _ in range(3)]
    assert [m["type"] for m in first] == ["chat.thinking", "tool.call", "tool.progress"]
    slow_session = first[0]["session_id"]
    SCRIPT.turns = [["quick ", "answer"]]
    await ws.write_message(json.dumps({"type": "chat.message", "message": "quick one"}))
    quick = await until_complete(ws)
    assert quick[-1]["text"] == "quick answer" and quick[-1]["session_id"] != slow_session
    assert {m["session_id"] for m in quick} == {quick[-1]["session_id"]}
    assert GATE.opened is not None
    GATE.opened.set()
    slow = await until_complete(ws)
    assert slow[-1]["text"] == "slow answer" and slow[-1]["session_id"] == slow_session
    # the second message of a session continues it: the model sees the history
    SCRIPT.turns = [["again"]]
    await ws.write_message(json.dumps({"type": "chat.message", "message": "more", "session_id": slow_session}))
    third = await until_complete(ws)
    assert [m["type"] for m in third] == ["chat.thinking", "chat.token", "chat.complete"]
    assert third[-1]["text"] == "again"
    provider = session_providers()[0]
    assert [m.content for m in provider.requests[-1].messages if m.role == "user"] == ["slow one", "more"]


async def test_cancel_and_tool_controls_act_on_the_running_turn(ws: WebSocketClientConnection) -> None:
    GATE.reset()
    SCRIPT.turns = [
        [ToolCall("wait_here", {"label": "p"}, call_id="p1"), ToolCall("wait_here", {"label": "c"}, call_id="c1")],
        ["after tools"],
        [ToolCall("wait_here", {"label": "x"}, call_id="x1")],
    ]
    await ws.write_message(json.dumps({"type": "chat.message", "message": "go"}))
    seen = [await receive(ws) for _ in range(5)]
    assert [m["type"] for m in seen] == ["chat.thinking", "tool.call", "tool.call", "tool.progress", "tool.progress"]
    session_id = seen[0]["session_id"]
    await ws.write_message(json.dumps({"type": "tool.cancel", "call_id": "c1"}))
    result = await receive(ws)
    assert (result["type"], result["call_id"], result["status"]) == ("tool.result", "c1", "cancelled")
    await ws.write_message(json.dumps({"type": "tool.pause", "call_id": "p1"}))
    await ws.write_message(json.dumps({"type": "tool.pause", "call_id": "nope"}))
    paused, error = await receive(ws), await receive(ws)
    assert (paused["type"], paused["call_id"], paused["message"]) == ("tool.progress", "p1", "Paused")
    assert error["type"] == "error" and error["code"] == "not_running"
    assert GATE.opened is not None
    GATE.opened.set()  # p1 reports progress once more, and the pause holds it there
    released = await receive(ws)
    assert (released["type"], released["message"]) == ("tool.progress", "p released")
    await ws.write_message(json.dumps({"type": "tool.resume", "call_id": "p1"}))
    rest = await until_complete(ws)
    assert [(m["type"], m.get("message") or m.get("status")) for m in rest[:2]] == [
        ("tool.progress", "Resumed"),  # held until now: otherwise the result would have come first
        ("tool.result", "ok"),
    ]
    assert rest[-1]["text"] == "after tools" and rest[-1]["reason"] == "stop"
    # chat.cancel stops a running turn: it ends with chat.complete(reason=cancelled)
    GATE.reset()
    await ws.write_message(json.dumps({"type": "chat.message", "message": "again", "session_id": session_id}))
    assert [(await receive(ws))["type"] for _ in range(3)] == ["chat.thinking", "tool.call", "tool.progress"]
    await ws.write_message(json.dumps({"type": "chat.message", "message": "busy?", "session_id": session_id}))
    assert (await receive(ws))["code"] == "session_busy"
    await ws.write_message(json.dumps({"type": "chat.cancel"}))
    cancelled = await until_complete(ws)
    assert [m["type"] for m in cancelled] == ["tool.result", "chat.complete"]
    assert cancelled[-1]["reason"] == "cancelled" and GATE.cancelled == ["x"]
    await ws.write_message(json.dumps({"type": "chat.cancel"}))
    assert (await receive(ws))["code"] == "not_running"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "bad_message"),
        ('{"type": "chat.shout"}', "unknown_message"),
        ('{"type": "chat.message"}', "bad_message"),
        ('{"type": "chat.message", "message": 5}', "bad_message"),
        ('{"type": "chat.message", "message": "   "}', "bad_message"),
        ('{"type": "chat.message", "message": "hi", "session_id": "no such"}', "bad_message"),
        ('{"type": "chat.message", "message": "hi", "session_id": "unknown"}', "session_not_found"),
        ('{"type": "tool.cancel"}', "bad_message"),
        ('{"type": "chat.clear"}', "bad_message"),
    ],
)
async def test_bad_messages_get_an_error_and_the_socket_stays_open(
    ws: WebSocketClientConnection, raw: str, code: str
) -> None:
    await ws.write_message(raw)
    error = await receive(ws)
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await ws.write_message(json.dumps({"type": "tools.list"}))
    tools = await receive(ws)
    assert tools["type"] == "tools.list"
    assert [t["name"] for t in tools["tools"]] == ["count_to", "wait_here", "calculate"]


class TestSizeLimit:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_message_size=1000)

    async def test_large_messages_are_refused_and_huge_frames_close_the_socket(
        self, ws: WebSocketClientConnection
    ) -> None:
        await ws.write_message(json.dumps({"type": "chat.message", "message": "x" * 1001}))
        assert (await receive(ws))["code"] == "message_too_large"
        await ws.write_message(json.dumps({"type": "chat.message", "message": "x" * 1000}))
        assert (await until_complete(ws))[-1]["text"] == "Hello there"
        await ws.write_message("y" * 20_000)  # over the frame limit (6 × 1000 + 4096 bytes)
        assert await ws.read_message() is None
        assert ws.close_code == 1009
