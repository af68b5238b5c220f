"""MCP progress in the notebook view: the tool card's bar, driven through a recording comm.

The test MCP server (tests/mcp_server.py) runs over stdio; `ChatView` renders the turn's
events and the recorder keeps every state the frontend would receive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp_helpers import ServerRecord, stdio_tools
from test_notebook_view import Recorder, close_widgets, recorder  # noqa: F401  (fixtures, found by name)

from streamchat import ChatSession, MCPToolset, ScriptedProvider, ToolCall
from streamchat.notebook.view import ChatView

BAR = '<progress max="100" value="{0}"></progress><br>'
SPINNER = "<progress></progress><br>"
PAUSED = '<b class="streamchat-paused"><i class="fa fa-pause" aria-hidden="true"></i> paused</b>'


@pytest.fixture
def sent(recorder: Recorder) -> Recorder:  # noqa: F811  (the imported fixture)
    """What the widgets sent to the frontend (`recorder` of the view tests)."""
    return recorder


@pytest.fixture
async def toolset(tmp_path: Path) -> AsyncIterator[MCPToolset]:
    toolset = stdio_tools(ServerRecord(tmp_path / "record.txt"))
    yield toolset
    await toolset.aclose()


async def test_mcp_progress_fills_the_cards_bar(sent: Recorder, toolset: MCPToolset) -> None:
    session = ChatSession(
        ScriptedProvider(
            [[ToolCall("count", {"tag": "a", "steps": 4}), ToolCall("spin", {"tag": "b", "rounds": 2})], ["Done."]]
        ),
        tools=[toolset],
    )
    view = ChatView("go")
    async for event in session.stream("go"):
        view.handle(event)
    assert view.result is not None
    duration = {c.tool: c.duration_ms / 1000 for c in view.result.tool_calls}
    count_card, spin_card = view.body.children[:2]
    assert sent.values(count_card.detail.model_id) == [
        SPINNER + "starting…",
        *[BAR.format(25 * i) + f"step {i} of 4 · {25 * i} %" for i in range(5)],
        BAR.format(100)
        + f'<span class="streamchat-ok">✓ <b>ok</b> · {duration["count"]:.2f} s · Done: a: counted to 4</span>',
    ]
    assert sent.values(spin_card.detail.model_id) == [  # no total: the indeterminate bar
        SPINNER + "starting…",
        SPINNER + "round 1",
        SPINNER + "round 2",
        BAR.format(100)
        + f'<span class="streamchat-ok">✓ <b>ok</b> · {duration["spin"]:.2f} s · Done: b: spun 2 rounds</span>',
    ]


async def test_a_paused_mcp_card_says_the_server_keeps_running(sent: Recorder, toolset: MCPToolset) -> None:
    session = ChatSession(
        ScriptedProvider([[ToolCall("count", {"tag": "p", "steps": 1000, "delay": 0.05})], ["Stopped."]]),
        tools=[toolset],
    )
    view = ChatView("go", controls=session.control_tool)
    async for event in session.stream("go"):
        view.handle(event)
        if event.type == "tool_progress" and event.message == "step 0 of 1000":
            assert session.control_tool("call_1", "pause")
        elif event.type == "tool_progress" and event.stage == "paused":
            card = view.body.children[0]
            assert sent.states()[card.detail.model_id]["value"] == (
                BAR.format(0) + "step 0 of 1000 · 0 % · " + PAUSED + ": "
                "the MCP server keeps running; its progress is held until you resume"
            )
            assert session.control_tool("call_1", "cancel")
    card = view.body.children[0]
    assert card.status == "cancelled"
