"""`streamchat.dashboard()`: its rendering, its live updates in a real kernel, and a saved notebook's static copy."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import nbformat
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from kernel_helpers import run_cell, running_kernel
from nbclient import NotebookClient

from streamchat.analytics import Recorder
from streamchat.events import DoneEvent, Metrics, ToolCallEvent, ToolResultEvent, Usage
from streamchat.notebook.dashboard import render_dashboard

SETUP = """
from streamchat import ChatSession, ScriptedProvider, ToolCall, chat, dashboard
def session():
    return ChatSession(ScriptedProvider([[ToolCall("calculate", {"expression": "6 * 7"})], ["It is ", "42."]]))
board = dashboard()
"""
CHAT = "chat('What is 6 * 7?', session=session())"


def test_the_rendering_shows_tiles_charts_and_an_escaped_tool_table() -> None:
    rec = Recorder()

    class Session:
        class provider:  # a provider's two attributes
            name, model = "scripted", "m"

        tools: ClassVar[dict[str, None]] = {"<b>evil</b>": None}
        analytics_scope = None

    observer = rec.turn(Session())
    stamp = {"session_id": "s", "turn_id": "t", "call_id": "c", "tool": "<b>evil</b>"}
    observer.observe(ToolCallEvent(**stamp, seq=1, args={}))
    observer.observe(ToolResultEvent(**stamp, seq=2, status="error", error="<script>x</script>", duration_ms=12))
    observer.observe(
        DoneEvent(
            session_id="s",
            turn_id="t",
            seq=3,
            reason="stop",
            text="",
            usage=Usage(prompt_tokens=1, completion_tokens=2),
            metrics=Metrics(ttft_ms=250, duration_ms=900, tokens_per_s=40),
        )
    )
    bundle = render_dashboard(rec.summary())
    page = bundle["text/html"]
    assert '<div class="streamchat-kpi" data-kpi="Turns" style="font-size:20px;font-weight:600">1</div>' in page
    assert "250 ms" in page and page.count("<svg") == 4
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>evil" not in page
    assert "| &lt;b&gt;evil" not in bundle["text/markdown"] and "| <b>evil</b> | 1 | 0 % |" in bundle["text/markdown"]
    assert "Turns: 1" in bundle["text/plain"]


@pytest.fixture
def kernel() -> Iterator[BlockingKernelClient]:
    with running_kernel("text") as (_, kc):
        yield kc


def run(kc: BlockingKernelClient, code: str) -> list[dict[str, Any]]:
    """Execute `code`; the iopub messages of this request until it is idle (an error fails the test)."""
    messages = run_cell(kc, code)
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert not errors, errors
    return messages


def turns_shown(content: dict[str, Any]) -> str:
    page = "".join(content["data"]["text/html"])  # a saved notebook keeps it as a list of lines
    start = page.index('data-kpi="Turns"')
    return page[page.index(">", start) + 1 : page.index("</div>", start)]


def test_the_dashboard_updates_in_place_after_chat_turns_in_a_real_kernel(kernel: BlockingKernelClient) -> None:
    shown = [m for m in run(kernel, SETUP) if m["msg_type"] == "display_data"]
    [first] = shown
    display_id = first["content"]["transient"]["display_id"]
    assert turns_shown(first["content"]) == "0"
    for turn in (1, 2):
        updates = [
            m["content"]
            for m in run(kernel, CHAT)
            if m["msg_type"] == "update_display_data" and m["content"]["transient"]["display_id"] == display_id
        ]
        assert updates, "the dashboard was not redrawn during the chat() cell"
        assert turns_shown(updates[-1]) == str(turn)
        assert '<tr data-tool="calculate">' in updates[-1]["data"]["text/html"]


def test_a_saved_notebook_keeps_the_last_rendering(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(SETUP), *(nbformat.v4.new_code_cell(CHAT) for _ in range(2))]
    )
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env={**os.environ, "STREAMCHAT_DISPLAY": "text"})
    path = tmp_path / "dashboard.ipynb"
    nbformat.write(notebook, path)
    saved = json.loads(path.read_text())
    [output] = saved["cells"][0]["outputs"]  # the dashboard's own output, updated in place by both turns
    assert output["output_type"] == "display_data"
    assert turns_shown(output) == "2"
    assert "<svg" in "".join(output["data"]["text/html"])
    assert "| calculate | 2 | 100 % |" in "".join(output["data"]["text/markdown"])
    assert "application/vnd.jupyter.widget-view+json" not in output["data"]
