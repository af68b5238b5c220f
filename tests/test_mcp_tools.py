"""MCP tools: a real MCP server (tests/mcp_server.py, written with the SDK) over stdio and streamable HTTP.

Progress becomes tool_progress with its percent (or none without a total), Cancel and a
stopped turn reach the server as a cancellation it observes, a killed server fails its call
and is started again by the next one, calls in parallel interleave, pause holds progress.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from core_helpers import check_invariants, collect
from mcp_helpers import MCP_SERVER, HttpMcpServer, ServerRecord, by_call, kill, stdio_tools, until

from streamchat import (
    ChatSession,
    ConfigurationError,
    Event,
    MCPToolset,
    ScriptedProvider,
    ToolCall,
    mcp_servers,
    mcp_tools,
)
from streamchat.tools.mcp import PAUSED_MESSAGE

COUNT_4 = [("progress", f"step {i} of 4", 25.0 * i) for i in range(5)]
"""The progress of ``count(steps=4)``: 0, 25, 50, 75, 100 %."""


@dataclass
class Harness:
    """One transport to the test server: its toolset, its record, and how to kill and revive it."""

    transport: str
    record: ServerRecord
    toolset: MCPToolset
    http: HttpMcpServer | None

    def kill(self) -> None:
        """Kill the server in the middle of whatever it does."""
        if self.http is not None:
            self.http.kill()
        else:
            kill(self.record.pids()[-1])

    async def revive(self) -> None:
        """What brings a killed server back: the next call (stdio), or starting it again (HTTP)."""
        if self.http is not None:
            await self.http.start()


@pytest.fixture(params=["stdio", "http"])
async def mcp(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    record = ServerRecord(tmp_path / "record.txt")
    http: HttpMcpServer | None = None
    if request.param == "http":
        http = HttpMcpServer(record)
        await http.start()
        toolset = http.tools()
    else:
        toolset = stdio_tools(record)
    try:
        yield Harness(request.param, record, toolset, http)
    finally:
        await toolset.aclose()
        if http is not None:
            http.kill()


def session_with(toolset: MCPToolset, script: list[list[object]], **options: object) -> ChatSession:
    return ChatSession(ScriptedProvider(script), tools=[toolset], **options)  # type: ignore[arg-type]


async def test_progress_becomes_tool_progress_with_percents(mcp: Harness) -> None:
    session = session_with(
        mcp.toolset,
        [[ToolCall("count", {"tag": "a", "steps": 4}), ToolCall("spin", {"tag": "b", "rounds": 3})], ["Done."]],
    )
    events = await collect(session, "go")
    check_invariants(events)
    assert by_call(events, "call_1") == [*COUNT_4, ("result", "ok", "a: counted to 4", None)]
    assert by_call(events, "call_2") == [
        ("progress", "round 1", None),  # no total: an indeterminate bar
        ("progress", "round 2", None),
        ("progress", "round 3", None),
        ("result", "ok", "b: spun 3 rounds", None),
    ]
    assert events[-1].type == "done" and events[-1].reason == "stop" and events[-1].text == "Done."
    # the model was told the server's tools, with the server's schemas
    definitions = {d.name: d for d in session.provider.requests[0].tools}  # type: ignore[attr-defined]
    assert {"count", "spin", "lockstep", "fail"} <= set(definitions)
    assert definitions["count"].parameters["required"] == ["tag", "steps"]
    assert definitions["count"].description.startswith("Count from 0 to `steps`")
    # and read the results
    tool_messages = [m.content for m in session.history if m.role == "tool"]
    assert tool_messages == ["a: counted to 4", "b: spun 3 rounds"]
    await session.aclose()


async def test_cancel_stops_one_call_and_the_server_observes_it(mcp: Harness) -> None:
    session = session_with(
        mcp.toolset,
        [
            [
                ToolCall("count", {"tag": "long", "steps": 1000, "delay": 0.05}),
                ToolCall("count", {"tag": "short", "steps": 4, "delay": 0.05}),
            ],
            ["Cancelled one."],
        ],
    )
    events: list[Event] = []
    async for event in session.stream("go"):
        events.append(event)
        if event.type == "tool_progress" and event.call_id == "call_1" and event.message == "step 0 of 1000":
            assert session.control_tool("call_1", "cancel")
    check_invariants(events)
    assert by_call(events, "call_1")[-1] == ("result", "cancelled", None, "cancelled")
    assert by_call(events, "call_2") == [*COUNT_4, ("result", "ok", "short: counted to 4", None)]
    await mcp.record.wait_for("cancelled count long")
    assert "end count long" not in mcp.record.lines()
    assert events[-1].type == "done" and events[-1].reason == "stop"
    await session.aclose()


async def test_a_stopped_turn_cancels_its_calls_on_the_server(mcp: Harness) -> None:
    session = session_with(mcp.toolset, [[ToolCall("count", {"tag": "long", "steps": 1000, "delay": 0.05})]])
    events: list[Event] = []
    async for event in session.stream("go"):
        events.append(event)
        if event.type == "tool_progress" and event.message == "step 1 of 1000":
            assert session.cancel()
    check_invariants(events)
    assert by_call(events, "call_1")[-1] == ("result", "cancelled", None, "cancelled")
    assert events[-1].type == "done" and events[-1].reason == "cancelled"
    await mcp.record.wait_for("cancelled count long")
    await session.aclose()


async def test_a_killed_server_fails_its_call_the_turn_goes_on_and_the_next_call_revives_it(mcp: Harness) -> None:
    session = session_with(
        mcp.toolset,
        [
            [ToolCall("count", {"tag": "doomed", "steps": 1000, "delay": 0.05})],
            ["The server died."],
            [ToolCall("count", {"tag": "after", "steps": 4}, call_id="after")],
            ["It is back."],
        ],
    )
    events: list[Event] = []
    async for event in session.stream("go"):
        events.append(event)
        if event.type == "tool_progress" and event.message == "step 1 of 1000":
            mcp.kill()
    check_invariants(events)
    last = by_call(events, "call_1")[-1]
    assert last[:3] == ("result", "error", None)
    again = "it is started again" if mcp.transport == "stdio" else "the connection is opened again"
    assert last[3] == (
        f"MCP server 'test' closed the connection during the call (it exited or crashed); {again} at the next call"
    )
    assert [e.text for e in events if e.type == "done"] == ["The server died."]  # the model read the error
    assert session.history[-2].content.startswith("Error (error): MCP server 'test'")

    await mcp.revive()
    events = await collect(session, "again")
    check_invariants(events)
    assert by_call(events, "after") == [*COUNT_4, ("result", "ok", "after: counted to 4", None)]
    assert len(mcp.record.pids()) == 2 and len(set(mcp.record.pids())) == 2  # a new server process
    await session.aclose()


async def test_two_calls_in_parallel_interleave_their_progress(mcp: Harness) -> None:
    session = session_with(
        mcp.toolset,
        [
            [
                ToolCall("lockstep", {"tag": "a", "partner": "b", "steps": 4}),
                ToolCall("lockstep", {"tag": "b", "partner": "a", "steps": 4}),
            ],
            ["Both done."],
        ],
    )
    events = await collect(session, "go")
    check_invariants(events)
    for call_id, tag in (("call_1", "a"), ("call_2", "b")):
        assert by_call(events, call_id) == [
            *[("progress", f"{tag} step {i}", 25.0 * i) for i in range(1, 5)],
            ("result", "ok", f"{tag}: done", None),
        ]
    order = [e.call_id for e in events if e.type == "tool_progress"]
    first = {c: order.index(c) for c in ("call_1", "call_2")}
    last = {c: len(order) - 1 - order[::-1].index(c) for c in ("call_1", "call_2")}
    assert first["call_2"] < last["call_1"] and first["call_1"] < last["call_2"], order
    await session.aclose()


async def test_pause_holds_the_progress_while_the_server_keeps_running(mcp: Harness) -> None:
    session = session_with(mcp.toolset, [[ToolCall("count", {"tag": "p", "steps": 10, "delay": 0.02})], ["ok"]])
    events: list[Event] = []
    async for event in session.stream("go"):
        events.append(event)
        if event.type == "tool_progress" and event.message == "step 0 of 10":
            assert session.control_tool("call_1", "pause")
        if event.type == "tool_progress" and event.stage == "paused":
            await mcp.record.wait_for("end count p")  # the server finished meanwhile
            assert session.control_tool("call_1", "resume")
    check_invariants(events)
    calls = [
        (e.type, getattr(e, "message", None), getattr(e, "stage", None), getattr(e, "percent", None))
        for e in events
        if e.type in ("tool_progress", "tool_result")
    ]
    paused = calls.index(("tool_progress", PAUSED_MESSAGE, "paused", None))
    resumed = calls.index(("tool_progress", "Resumed", "resumed", None))
    assert resumed == paused + 1  # nothing shown while paused
    after = calls[resumed + 1 :]
    # on Resume the held updates collapse to the latest (the next one may still be arriving), then the result
    assert 2 <= len(after) <= 3 and after[-2] == ("tool_progress", "step 10 of 10", None, 100.0)
    assert after[-1][0] == "tool_result" and by_call(events, "call_1")[-1] == ("result", "ok", "p: counted to 10", None)
    await session.aclose()


# -- stdio only: the connection's lifetime, timeouts, failures, configuration ------------------------------


async def test_the_server_starts_lazily_is_reused_across_turns_and_stops_on_aclose(tmp_path: Path) -> None:
    record = ServerRecord(tmp_path / "record.txt")
    toolset = stdio_tools(record)
    session = ChatSession(
        ScriptedProvider([[ToolCall("count", {"tag": "1", "steps": 4})], ["one"], ["two"]]), tools=[toolset]
    )
    assert record.pids() == [] and not toolset.connected  # nothing started yet
    assert [e.type for e in await collect(session, "first")][-1] == "done"
    assert [e.type for e in await collect(session, "second")][-1] == "done"
    [pid] = record.pids()  # one server for both turns
    assert toolset.connected and psutil.pid_exists(pid)
    await session.aclose()
    assert not toolset.connected
    await until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "exit")


async def test_the_session_tool_timeout_cancels_the_call_on_the_server(tmp_path: Path) -> None:
    record = ServerRecord(tmp_path / "record.txt")
    session = ChatSession(
        ScriptedProvider([[ToolCall("count", {"tag": "slow", "steps": 1000, "delay": 0.05})], ["late"]]),
        tools=[stdio_tools(record)],
        tool_timeout=0.5,
    )
    events = await collect(session, "go")
    assert by_call(events, "call_1")[-1] == ("result", "timeout", None, "timed out after 0.5 s")
    await record.wait_for("cancelled count slow")
    await session.aclose()


async def test_invalid_arguments_and_tool_errors_reach_the_model(tmp_path: Path) -> None:
    record = ServerRecord(tmp_path / "record.txt")
    session = ChatSession(
        ScriptedProvider([[ToolCall("count", {"tag": 7}), ToolCall("fail", {"reason": "no such file"})], ["I see."]]),
        tools=[stdio_tools(record)],
    )
    events = await collect(session, "go")
    check_invariants(events)
    assert by_call(events, "call_1") == [
        (
            "result",
            "error",
            None,
            "invalid arguments: arguments: 'steps' is a required property; tag: 7 is not of type 'string'",
        )
    ]
    assert by_call(events, "call_2") == [("result", "error", None, "Error executing tool fail: no such file")]
    assert not any(line.startswith("begin count") for line in record.lines())  # checked before it was sent
    await session.aclose()


async def test_a_server_that_cannot_start_is_left_out_of_the_turn_with_an_error() -> None:
    broken = mcp_tools([sys.executable, "-c", "import sys; sys.exit(3)"], name="broken")
    session = ChatSession(ScriptedProvider([["Fine without it."]]), tools=[broken])
    events = await collect(session, "go")
    check_invariants(events)
    errors = [e for e in events if e.type == "error"]
    assert len(errors) == 1 and errors[0].code == "toolset_unavailable" and errors[0].retryable
    assert errors[0].message == (
        "MCP server 'broken' could not be started: "
        "it closed the connection before listing its tools (did it exit? its stderr says why)"
    )
    assert events[-1].type == "done" and events[-1].reason == "stop" and events[-1].text == "Fine without it."
    assert session.provider.requests[0].tools == ()  # type: ignore[attr-defined]
    await session.aclose()


async def test_a_connection_belongs_to_its_loop_and_is_opened_again_on_another(tmp_path: Path) -> None:
    record = ServerRecord(tmp_path / "record.txt")
    toolset = stdio_tools(record)
    script = [[ToolCall("count", {"tag": str(i), "steps": 4}, call_id=f"c{i}")] for i in range(3)]
    session = ChatSession(ScriptedProvider([step for call in script for step in (call, ["ok"])]), tools=[toolset])

    async def turn(index: int) -> None:
        events = await collect(session, f"turn {index}")
        assert by_call(events, f"c{index}") == [*COUNT_4, ("result", "ok", f"{index}: counted to 4", None)]

    await turn(0)  # on this loop
    await asyncio.to_thread(asyncio.run, turn(1))  # on another loop, while this one runs
    assert len(set(record.pids())) == 2  # a server of its own
    first = record.pids()[0]  # the first loop's, stopped on that loop
    await until(lambda: not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie", "first exit")
    await turn(2)  # back here: the other loop is closed, and its server went with it
    assert len(set(record.pids())) == 3
    await session.aclose()


async def test_http_headers_reach_the_server(tmp_path: Path) -> None:
    record = ServerRecord(tmp_path / "record.txt")
    http = HttpMcpServer(record, token="s3cret")
    await http.start()
    script = [[ToolCall("count", {"tag": "h", "steps": 4})], ["ok"]]
    try:
        refused = ChatSession(ScriptedProvider([["no tools"]]), tools=[mcp_tools(http.url, name="guarded")])
        events = await collect(refused, "go")
        [error] = [e for e in events if e.type == "error"]
        assert error.code == "toolset_unavailable" and error.message == (
            "MCP server 'guarded' could not be reached: MCPError: Server returned an error response"
        )
        await refused.aclose()
        allowed = mcp_tools(http.url, name="guarded", headers={"Authorization": "Bearer s3cret"})
        session = ChatSession(ScriptedProvider(script), tools=[allowed])
        events = await collect(session, "go")
        assert by_call(events, "call_1") == [*COUNT_4, ("result", "ok", "h: counted to 4", None)]
        await session.aclose()
    finally:
        http.kill()


def test_configuration_in_the_mcpservers_shape() -> None:
    stdio, http = mcp_servers(
        {
            "mcpServers": {
                "files": {"command": "uvx", "args": ["mcp-files", "/data"], "env": {"TOKEN": "x"}},
                "search": {"url": "https://example.org/mcp", "headers": {"Authorization": "Bearer y"}},
            }
        }
    )
    assert (stdio.name, stdio.command, stdio.env, stdio.url) == (
        "files",
        ["uvx", "mcp-files", "/data"],
        {"TOKEN": "x"},
        None,
    )
    assert (http.name, http.url, http.headers, http.command) == (
        "search",
        "https://example.org/mcp",
        {"Authorization": "Bearer y"},
        None,
    )
    assert mcp_tools("python -m server --flag").command == ["python", "-m", "server", "--flag"]
    assert mcp_tools("http://127.0.0.1:8000/mcp").url == "http://127.0.0.1:8000/mcp"
    for bad, message in [
        ({"x": {"args": []}}, "mcpServers['x']: give either 'command' (a stdio server) or 'url' (streamable HTTP)"),
        ({"x": {"command": "a", "url": "http://h"}}, "mcpServers['x']: give either"),
        ({"x": {"command": "a", "argz": []}}, "mcpServers['x']: unknown keys ['argz']"),
        ({"x": {"command": ["a"]}}, "mcpServers['x']: 'command' must be a string"),
        ({"x": {"url": "ftp://h"}}, "MCP server 'x': 'ftp://h' is not an http:// or https:// URL"),
        ({"x": {"url": "http://h", "type": "sse"}}, "mcpServers['x']: transport 'sse' is not supported"),
        ([], "MCP servers are configured as an object"),
    ]:
        with pytest.raises(ConfigurationError) as caught:
            mcp_servers(bad)  # type: ignore[arg-type]
        assert caught.value.message.startswith(message)
    with pytest.raises(TypeError, match=r"put the MCP toolset itself in tools=\[\.\.\.\]"):
        ChatSession(ScriptedProvider([]), tools=[*mcp_tools("python -m server")])


MCP_CLI = """
import sys
from streamchat.cli import main
from streamchat.providers import PROVIDERS, ScriptedProvider, ToolCall
PROVIDERS["mcp-script"] = lambda model, settings: ScriptedProvider(
    [[ToolCall("count", {"tag": "cli", "steps": 4})], ["Counted."]]
)
sys.exit(main(["chat", "--provider", "mcp-script", "--mcp", sys.argv[1], "count to four"]))
"""


@pytest.mark.parametrize("form", ["command", "json file"])
def test_the_cli_takes_mcp_servers_and_prints_their_progress(tmp_path: Path, form: str) -> None:
    record = ServerRecord(tmp_path / "record.txt")
    command = [sys.executable, MCP_SERVER, str(record.path)]
    if form == "command":
        server = shlex.join(command)
    else:
        server = str(tmp_path / "servers.json")
        Path(server).write_text(json.dumps({"mcpServers": {"test": {"command": command[0], "args": command[1:]}}}))
    proc = subprocess.run(
        [sys.executable, "-c", MCP_CLI, server], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "[count] step 0 of 4\n"
        "[count] step 1 of 4 (25%)\n"
        "[count] step 2 of 4 (50%)\n"
        "[count] step 3 of 4 (75%)\n"
        "[count] step 4 of 4 (100%)\n"
        "[count] Done: cli: counted to 4\n"
        "Counted.\n"
    )
    assert record.lines()[1:] == ["begin count cli", "end count cli"]
