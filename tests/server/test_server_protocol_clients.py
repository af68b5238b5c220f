"""The frontends' real clients against a live Jupyter server: the `ai` package and `@ag-ui/client`.

Node scripts in tests/js (pinned packages: ``npm ci`` there, which .ci/run does) read a
scripted turn with two parallel tools through the AI SDK's `useChat` transport and
`readUIMessageStream`, and through AG-UI's `HttpAgent`: they must rebuild the same text,
tool inputs and outputs, and see each progress report. Stopping them (`useChat`'s stop,
`abortRun`) cancels the turn's tool within a second.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from protocol_helpers import BAD_ARGS, CHAT, RICH_SCRIPT, turn_ended, validated
from server_helpers import ALICE, GATE, SCRIPT, auth, server_config

from jupyter_server_extension.service import ChatService
from streamchat import ToolCall
from streamchat.providers.base import NoticeDelta

EXHAUSTED = "the scripted provider has 1 response(s) and was asked for response 2"
JS = Path(__file__).parents[1] / "js"
"""The npm test folder: package.json, package-lock.json and the client scripts."""

PROGRESS = [
    "call-a: step 1 of 2",
    "call-a: step 2 of 2",
    "call-b: step 1 of 3",
    "call-b: step 2 of 3",
    "call-b: step 3 of 3",
]
"""Every progress report of `RICH_SCRIPT`'s two counting calls, in order."""


@pytest.fixture
def node() -> str:
    """The `node` executable, with the pinned client packages installed in tests/js."""
    node = shutil.which("node")
    assert node is not None, "these tests need Node.js 20 or later (.ci/run installs it)"
    for package in ("ai", "@ag-ui/client"):
        assert (JS / "node_modules" / package / "package.json").exists(), (
            f"the npm package {package} is missing: run `npm ci` in {JS}"
        )
    return node


class NodeClient:
    """A client script running in Node: its output lines, as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> str:
        """The script's next output line (fails after 20 s instead of hanging)."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=20)
        assert line, await self.failure()
        return line.decode().rstrip("\n")

    async def result(self) -> dict[str, Any]:
        """The JSON line the script prints last; its exit status must be 0."""
        output: dict[str, Any] = json.loads(await self.line())
        assert await asyncio.wait_for(self.process.wait(), timeout=20) == 0, await self.failure()
        return output

    async def failure(self) -> str:
        """What the script printed on stderr."""
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode()


@pytest.fixture
async def run_client(node: str, base_url: str) -> AsyncIterator[Any]:
    """Starts ``node tests/js/<script> <url> <token> <id> <text> [option]``; killed at the end if still running."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(script: str, session_id: str, text: str, *option: str) -> NodeClient:
        args = [str(JS / script), base_url + CHAT, ALICE, session_id, text, *option]
        process = await asyncio.create_subprocess_exec(
            node, *args, cwd=JS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        processes.append(process)
        return NodeClient(process)

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_ai_sdk_rebuilds_the_turn_and_sees_each_progress_report(
    run_client: Any, chat_service: ChatService
) -> None:
    SCRIPT.turns = RICH_SCRIPT
    # the transport configured as in the README: only the newest message is sent
    output = await (await run_client("ai_sdk_client.mjs", "vercel-chat", "count", "newest-only")).result()
    assert output["errors"] == [] and output["aborted"] is False
    assert output["sent"] == [
        {"id": "vercel-chat", "message": {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "count"}]}}
    ]
    assert output["progress"] == PROGRESS
    message = output["message"]
    assert message["id"] == await chat_service.store.latest_turn_id("vercel-chat")
    assert message["role"] == "assistant"
    parts = message["parts"]
    text = "".join(p["text"] for p in parts if p["type"] == "text")
    assert text == "Let me count.Counted to 2 and 3."
    assert [(p["type"], p["text"]) for p in parts if p["type"] == "reasoning"] == [
        ("reasoning", "Two counts and a bad call.")
    ]
    tools = [p for p in parts if p["type"] == "tool-count_to"]
    assert [(t["toolCallId"], t["state"], t["input"], t.get("output"), t.get("errorText")) for t in tools] == [
        ("call-a", "output-available", {"n": 2}, {"summary": "counted to 2", "n": 2}, None),
        ("call-b", "output-available", {"n": 3}, {"summary": "counted to 3", "n": 3}, None),
        ("call-c", "output-error", {"n": "many"}, None, f"Error: {BAD_ARGS}"),
    ]
    # each call's latest progress is kept, in a part of its own
    assert [
        (p["id"], p["data"]["message"], p["data"]["percent"]) for p in parts if p["type"] == "data-tool-progress"
    ] == [
        ("call-a", "step 2 of 2", 100),
        ("call-b", "step 3 of 3", 100),
    ]
    assert [p["type"] for p in parts].count("step-start") == 2
    chunk_types = [chunk["type"] for chunk in output["chunks"]]
    assert chunk_types[0] == "start" and chunk_types[-1] == "finish"
    assert chunk_types.count("data-tool-progress") == 5 and chunk_types.count("data-status") == 2


async def test_ag_ui_http_agent_rebuilds_the_turn_and_sees_each_progress_report(
    run_client: Any, chat_service: ChatService
) -> None:
    SCRIPT.turns = RICH_SCRIPT
    output = await (await run_client("agui_client.mjs", "agui-thread", "count")).result()
    assert output["outcome"] == "success"
    assert output["progress"] == PROGRESS
    for event in output["events"]:
        validated({key: value for key, value in event.items() if key != "timestamp"})
    turn = await chat_service.store.latest_turn_id("agui-thread")
    messages = output["messages"]
    assert [(m["id"].replace(str(turn), "T"), m["role"]) for m in messages] == [
        ("u1", "user"),
        ("T-1-reasoning", "reasoning"),
        ("T-1", "assistant"),
        ("T-call-c-result", "tool"),  # the client puts results after their call's message, as they come
        ("T-call-a-result", "tool"),
        ("T-call-b-result", "tool"),
        ("T-call-a-progress", "activity"),
        ("T-call-b-progress", "activity"),
        ("T-2", "assistant"),
    ]
    by_role = {(m["role"], m["id"].replace(str(turn), "T")): m for m in messages}
    assert by_role[("reasoning", "T-1-reasoning")]["content"] == "Two counts and a bad call."
    first = by_role[("assistant", "T-1")]
    assert first["content"] == "Let me count."
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in first["toolCalls"]] == [
        ("call-a", "count_to", {"n": 2}),
        ("call-b", "count_to", {"n": 3}),
        ("call-c", "count_to", {"n": "many"}),
    ]
    results = [m for m in messages if m["role"] == "tool"]
    assert [(m["toolCallId"], m["content"]) for m in results] == [
        ("call-c", f"Error: {BAD_ARGS}"),
        ("call-a", '{"summary": "counted to 2", "n": 2}'),
        ("call-b", '{"summary": "counted to 3", "n": 3}'),
    ]
    activities = [m for m in messages if m["role"] == "activity"]
    assert [(m["activityType"], m["content"]["message"], m["content"]["percent"]) for m in activities] == [
        ("TOOL_PROGRESS", "step 2 of 2", 100),
        ("TOOL_PROGRESS", "step 3 of 3", 100),
    ]
    assert by_role[("assistant", "T-2")]["content"] == "Counted to 2 and 3."


class TestStop:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(disconnect_grace=0.2)

    @pytest.mark.parametrize("script", ["ai_sdk_client.mjs", "agui_client.mjs"])
    async def test_stopping_the_client_cancels_the_tool_within_a_second(
        self, run_client: Any, client: httpx.AsyncClient, script: str
    ) -> None:
        GATE.reset()
        SCRIPT.turns = [["Waiting.", ToolCall("wait_here", {"label": "w"}, call_id="call-w")], ["never"]]
        running = await run_client(script, "stopped", "wait", "stop")
        assert await running.line() == "STOPPING"  # the client saw progress and aborts its request now
        assert GATE.cancelled_event is not None
        await asyncio.wait_for(GATE.cancelled_event.wait(), timeout=1.0)  # acceptance: within a second
        assert GATE.cancelled == ["w"]
        output = await running.result()
        assert output["progress"] == ["call-w: w waiting"]
        await turn_ended("stopped")
        history = (await client.get("api/streamchat/sessions/stopped")).json()["history"]
        assert history[0]["content"] == "wait" and history[1]["interrupted"] is True


class TestHeartbeat:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(heartbeat_interval=0.02)

    @pytest.mark.parametrize("script", ["ai_sdk_client.mjs", "agui_client.mjs"])
    async def test_the_clients_read_past_ping_comments(self, run_client: Any, base_url: str, script: str) -> None:
        SCRIPT.turns = [["Slow ", "and ", "steady."]]
        SCRIPT.token_delay = 0.1  # quiet spells: the server sends `: ping` comments between tokens
        async with httpx.AsyncClient(base_url=base_url, headers=auth(ALICE)) as probe:
            body = {"id": "probe", "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
            async with probe.stream("POST", CHAT, json=body) as response:
                assert ": ping" in [line async for line in response.aiter_lines()]
        output = await (await run_client(script, "slow", "hi")).result()
        if script == "ai_sdk_client.mjs":
            assert sorted(output["sent"][0]) == ["id", "messages", "trigger"]  # useChat's own body
            assert [p["text"] for p in output["message"]["parts"] if p["type"] == "text"] == ["Slow and steady."]
        else:
            assert [m["content"] for m in output["messages"] if m["role"] == "assistant"] == ["Slow and steady."]


@pytest.mark.parametrize("script", ["ai_sdk_client.mjs", "agui_client.mjs"])
async def test_the_clients_see_a_notice_and_then_the_turn_fail(run_client: Any, script: str) -> None:
    # a notice mid-answer, a tool call, then the second model call fails: the script has one response
    notice = NoticeDelta(message="skipped a malformed line", code="bad_line")
    SCRIPT.turns = [["Partial ", notice, "answer.", ToolCall("count_to", {"n": 1}, call_id="call-d")]]
    output = await (await run_client(script, "failing", "go")).result()
    assert output["progress"] == ["call-d: step 1 of 1"]
    notice_fields = {"code": "bad_line", "message": "skipped a malformed line", "retryable": False}
    if script == "ai_sdk_client.mjs":
        assert output["errors"] == [f"Error: {EXHAUSTED}"]  # the `error` part reached onError
        parts = output["message"]["parts"]
        assert [p["text"] for p in parts if p["type"] == "text"] == ["Partial answer."]
        assert [p["data"] for p in parts if p["type"] == "data-notice"] == [notice_fields]
        assert [(p["toolCallId"], p["state"]) for p in parts if p["type"] == "tool-count_to"] == [
            ("call-d", "output-available")
        ]
    else:
        assert output["outcome"] == f"error: {EXHAUSTED}"  # RUN_ERROR
        notices = [e["value"] for e in output["events"] if e["type"] == "CUSTOM" and e["name"] == "streamchat.notice"]
        assert notices == [notice_fields]
        assert [(m["role"], m["content"]) for m in output["messages"] if m["role"] in ("assistant", "tool")] == [
            ("assistant", "Partial answer."),
            ("tool", '{"summary": "counted to 1", "n": 1}'),
        ]
