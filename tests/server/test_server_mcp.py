"""MCP servers configured in the extension (`c.StreamChat.mcp_servers`), against a real Jupyter server.

The test MCP server (tests/mcp_server.py) runs over stdio, started by the extension when a
turn (or the tools route) first needs it; its progress reaches SSE and WebSocket clients,
and a WebSocket's ``tool.cancel`` reaches it as a cancellation it observes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from mcp_helpers import MCP_SERVER, WAIT, ServerRecord
from server_helpers import SCRIPT, TOOLS, server_config, sse_events
from tornado.websocket import WebSocketClientConnection

from jupyter_server_extension.app import load_mcp_servers
from streamchat import ConfigurationError, ToolCall


@pytest.fixture
def record(tmp_path: Path) -> ServerRecord:
    return ServerRecord(tmp_path / "record.txt")


@pytest.fixture
def jp_server_config(record: ServerRecord) -> dict[str, Any]:
    """streamchat with the test MCP server, in the usual mcpServers shape."""
    return server_config(
        mcp_servers={"mcpServers": {"test": {"command": sys.executable, "args": [MCP_SERVER, str(record.path)]}}}
    )


async def receive(ws: WebSocketClientConnection) -> dict[str, Any]:
    """The next message (the first turn starts the MCP server: a few seconds on a loaded machine)."""
    message = await asyncio.wait_for(ws.read_message(), timeout=WAIT)
    assert isinstance(message, str), "the socket closed"
    parsed: dict[str, Any] = json.loads(message)
    return parsed


async def test_the_tools_route_lists_the_mcp_servers_tools(client: httpx.AsyncClient, record: ServerRecord) -> None:
    assert record.pids() == []  # nothing started with the Jupyter server
    response = await client.get("api/streamchat/tools", timeout=WAIT)
    assert response.status_code == 200
    tools = {t["name"]: t for t in response.json()}
    assert set(tools) == {"count_to", "wait_here", "calculate", "count", "spin", "lockstep", "fail"}
    assert tools["count"]["parameters"]["required"] == ["tag", "steps"]
    assert len(record.pids()) == 1


async def test_mcp_progress_streams_over_sse_with_its_percents(client: httpx.AsyncClient) -> None:
    SCRIPT.turns = [
        [ToolCall("count", {"tag": "a", "steps": 4}), ToolCall("spin", {"tag": "b", "rounds": 2})],
        ["Done."],
    ]
    frames = await sse_events(client, "POST", "api/streamchat/chat/stream", json={"message": "go"}, timeout=WAIT)
    progress = [(f.event.call_id, f.event.message, f.event.percent) for f in frames if f.event.type == "tool_progress"]
    assert [p for p in progress if p[0] == "call_1"] == [("call_1", f"step {i} of 4", 25.0 * i) for i in range(5)]
    assert [p for p in progress if p[0] == "call_2"] == [("call_2", "round 1", None), ("call_2", "round 2", None)]
    results = [(f.event.call_id, f.event.status, f.event.result) for f in frames if f.event.type == "tool_result"]
    assert sorted(results) == [("call_1", "ok", "a: counted to 4"), ("call_2", "ok", "b: spun 2 rounds")]
    assert frames[-1].event.type == "done" and frames[-1].event.text == "Done."


async def test_a_websocket_cancel_reaches_the_mcp_server(ws: WebSocketClientConnection, record: ServerRecord) -> None:
    SCRIPT.turns = [[ToolCall("count", {"tag": "long", "steps": 1000, "delay": 0.05}, call_id="c1")], ["Stopped."]]
    await ws.write_message(json.dumps({"type": "chat.message", "message": "go"}))
    seen = [await receive(ws) for _ in range(3)]
    assert [(m["type"], m.get("message")) for m in seen] == [
        ("chat.thinking", None),
        ("tool.call", None),
        ("tool.progress", "step 0 of 1000"),
    ]
    await ws.write_message(json.dumps({"type": "tool.cancel", "call_id": "c1"}))
    message = await receive(ws)
    while message["type"] == "tool.progress":
        message = await receive(ws)
    assert (message["type"], message["call_id"], message["status"]) == ("tool.result", "c1", "cancelled")
    await record.wait_for("cancelled count long")
    while message["type"] != "chat.complete":
        message = await receive(ws)
    assert message["text"] == "Stopped."


def test_a_bad_mcp_servers_setting_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_mcp_servers({"x": {"command": "a", "url": "http://h/mcp"}})
    assert caught.value.message == (
        "StreamChat.mcp_servers: mcpServers['x']: give either 'command' (a stdio server) or 'url' (streamable HTTP)"
    )
    assert load_mcp_servers({}) == [] and TOOLS  # no MCP servers by default


async def test_the_mcp_server_stops_with_the_jupyter_server(
    client: httpx.AsyncClient, record: ServerRecord, jp_serverapp: Any
) -> None:
    assert (await client.get("api/streamchat/tools", timeout=WAIT)).status_code == 200
    [pid] = record.pids()
    assert psutil.pid_exists(pid)
    await jp_serverapp.web_app.settings["streamchat"].stop_extension()  # what the server's shutdown calls
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
