"""A real ipykernel: chat() interrupted mid-turn, and every demo notebook run twice in one kernel."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from kernel_helpers import run_cell, running_kernel
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

SETUP = """
from streamchat import ChatSession, ScriptedProvider, chat
words = [f"word{i} " for i in range(400)]
session = ChatSession(ScriptedProvider([words, ["Second ", "answer."]], token_delay=0.02), tools=[])
"""


@pytest.fixture
def kernel() -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    with running_kernel("widget") as started:
        yield started


def _widget_values(messages: list[dict[str, Any]]) -> list[str]:
    return [
        m["content"]["data"]["state"]["value"]
        for m in messages
        if m["msg_type"] in ("comm_open", "comm_msg") and "value" in m["content"]["data"].get("state", {})
    ]


def test_interrupting_chat_in_a_real_kernel_stops_the_turn_and_the_next_chat_works(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    assert run_cell(kc, SETUP)[-1]["content"]["execution_state"] == "idle"
    interrupted = []

    def interrupt_after_first_tokens(msg: dict[str, Any]) -> None:
        # Wait on the cell's own output, not on time: the live answer block showing words.
        if not interrupted and "word3 " in json.dumps(msg["content"]):
            km.interrupt_kernel()
            interrupted.append(True)

    messages = run_cell(kc, "r = chat('go', session=session)", on_message=interrupt_after_first_tokens)
    assert interrupted
    errors = [m["content"]["ename"] for m in messages if m["msg_type"] == "error"]
    assert errors == ["KeyboardInterrupt"]
    values = _widget_values(messages)
    assert "■ stopped" in values  # the status line of the cell's ChatView
    assert any(m["msg_type"] == "display_data" for m in messages)  # the view itself, shown in this cell

    check = run_cell(
        kc,
        "last = session.history[-1]\n"
        "print(last.role, last.interrupted, last.content.startswith('word0 word1 word2 word3 '), "
        "len(last.content.split()) < 400, session.busy)",
    )
    stdout = "".join(m["content"]["text"] for m in check if m["msg_type"] == "stream")
    assert stdout == "assistant True True True False\n"

    after = run_cell(kc, "r2 = chat('again', session=session)\nprint(repr(r2.text), r2.reason)")
    stdout = "".join(m["content"]["text"] for m in after if m["msg_type"] == "stream")
    assert stdout == "'Second answer.' stop\n"
    assert "Second answer." in "".join(_widget_values(after)).replace("<p>", "").replace("</p>", "")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_run_all_twice_in_the_same_kernel(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel(env={**os.environ, "STREAMCHAT_DISPLAY": "widget"}):
        for _ in range(2):
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)  # raises CellExecutionError on any error
                errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                assert not errors, (path.name, index, errors)


def test_load_ext_registers_the_chat_magics(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    _, kc = kernel
    messages = run_cell(kc, "%load_ext streamchat\n%chat --text --provider demo What is 6 * 7?")
    stdout = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert stdout.startswith("[calculate] Evaluating...\n[calculate] Done: 6 * 7 = 42\n6 * 7 = 42.\n")
    cell = run_cell(kc, "%%chat --text --provider demo\nWhat is 2 + 3?")
    stdout = "".join(m["content"]["text"] for m in cell if m["msg_type"] == "stream")
    assert stdout.startswith("[calculate] Evaluating...\n[calculate] Done: 2 + 3 = 5\n2 + 3 = 5.\n")


def test_the_stop_button_of_an_awaited_achat_works_in_a_real_kernel(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    _, kc = kernel
    run_cell(kc, SETUP)
    clicked = []

    def click_stop_once_words_show(msg: dict[str, Any]) -> None:
        # What a frontend sends when the Stop button is clicked: a comm message to its model.
        if msg["msg_type"] == "comm_open":
            state = msg["content"]["data"]["state"]
            if state.get("_model_name") == "ButtonModel" and state.get("description") == "Stop":
                stop_ids.append(msg["content"]["comm_id"])
        if not clicked and stop_ids and "word3 " in json.dumps(msg["content"]):
            content = {"comm_id": stop_ids[0], "data": {"method": "custom", "content": {"event": "click"}}}
            kc.shell_channel.send(kc.session.msg("comm_msg", content))
            clicked.append(True)

    stop_ids: list[str] = []
    code = "from streamchat import achat\nr = await achat('go', session=session)"
    messages = run_cell(kc, code, on_message=click_stop_once_words_show)
    assert clicked
    assert not [m for m in messages if m["msg_type"] == "error"]
    assert "■ stopped" in _widget_values(messages)
    check = run_cell(kc, "print(r.reason, session.history[-1].interrupted, len(r.text.split()) < 400)")
    assert "".join(m["content"]["text"] for m in check if m["msg_type"] == "stream") == "cancelled True True\n"


def test_a_finished_chat_leaves_a_document_in_place_of_its_live_view(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    _, kc = kernel
    messages = run_cell(kc, "from streamchat import chat\nr = chat('What is 6 * 7?', provider='demo')")
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    updated = [m for m in messages if m["msg_type"] == "update_display_data"]
    assert "application/vnd.jupyter.widget-view+json" in shown[0]["content"]["data"]
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert [m["content"]["transient"]["display_id"] for m in updated] == [display_id]
    document = updated[0]["content"]["data"]
    assert sorted(document) == ["text/html", "text/markdown", "text/plain"]
    assert document["text/plain"].startswith("[calculate] ✓ ok · ")
    assert "6 * 7 = 42." in document["text/markdown"] and "6 * 7 = 42." in document["text/html"]
    assert "first token " in document["text/plain"].splitlines()[-1]
    assert "streamchat-transcript" not in json.dumps(
        [m["content"] for m in messages]
    )  # the live view left no document of its own


def test_a_chat_view_displayed_by_itself_leaves_its_turn_as_a_document(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    _, kc = kernel
    code = (
        "from streamchat import ChatSession, ChatView, ScriptedProvider\n"
        "from streamchat.notebook.chat import consume\n"
        "view = ChatView('Say it')\n"
        "display(view)\n"
        "r = await consume(ChatSession(ScriptedProvider([['It is **said**.']]), tools=[]), 'Say it', view)"
    )
    messages = run_cell(kc, code)
    shown = [m["content"]["data"] for m in messages if m["msg_type"] == "display_data"]
    assert [sorted(data) for data in shown] == [
        ["application/vnd.jupyter.widget-view+json", "text/plain"],
        ["text/html", "text/markdown", "text/plain"],
    ]
    assert shown[1]["text/html"].startswith('<div class="streamchat-transcript"><style>')
    assert "It is <strong>said</strong>." in shown[1]["text/html"]
    assert shown[1]["text/markdown"].startswith("**You:** Say it\n\nIt is **said**.")


def _run_all(kc: BlockingKernelClient, code: str) -> tuple[str, list[dict[str, Any]]]:
    """Execute `code`; return its msg_id and every iopub message (of any parent) until it is idle."""
    msg_id = kc.execute(code)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        messages.append(msg)
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
        ):
            return msg_id, messages


WIDGET_SETUP = """
from streamchat import ChatSession, ChatWidget, ScriptedProvider, ToolCall, calculate
answer = ["First paragraph.\\n\\n", "- one\\n- two\\n\\n", "Last ", "words."]
w = ChatWidget(session=ChatSession(ScriptedProvider([[ToolCall("calculate", {"expression": "6 * 7"})], answer], token_delay=0.1),
               tools=[calculate]))
w
"""


def test_a_chat_widget_sends_blocks_and_turn_documents_to_the_cell_that_displayed_it(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    _, kc = kernel
    home, shown = _run_all(kc, WIDGET_SETUP)
    outputs = [m["msg_type"] for m in shown if m["msg_type"] in ("display_data", "execute_result")]
    assert outputs == ["execute_result"]  # the widget
    asked, messages = _run_all(kc, "r = await w.ask('What is 6 * 7?')\nprint(r.text)")
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        by_parent.setdefault(m["parent_header"].get("msg_id", ""), []).append(m)
    assert [m["msg_type"] for m in by_parent[asked] if "display" in m["msg_type"]] == []  # nothing in the asking cell
    to_home = [m for m in by_parent[home] if m["msg_type"] == "display_data"]
    *blocks, document = to_home
    # The finished blocks, captured by the answer's Output widget, whose msg_id is the home cell's.
    assert [b["content"]["data"]["text/html"] for b in blocks] == [
        "<p>First paragraph.</p>\n",
        "<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n",
    ]
    capture_ids = [
        m["content"]["data"]["state"]["msg_id"]
        for m in messages
        if m["msg_type"] == "comm_msg" and "msg_id" in m["content"]["data"].get("state", {})
    ]
    assert capture_ids == [home, ""]  # set before the first block, unset when the answer ended
    # The turn as a document, with the style that shows it only when the widget is gone.
    data = document["content"]["data"]
    assert sorted(data) == ["text/html", "text/markdown", "text/plain"]
    assert data["text/html"].startswith('<div class="streamchat-transcript"><style>.jp-OutputArea:has(')
    assert "Last words." in data["text/html"] and "6 * 7" in data["text/markdown"]
    assert data["text/plain"].startswith("You: What is 6 * 7?\n[calculate] ✓ ok · ")
    display_id = document["content"]["transient"]["display_id"]

    _, messages = _run_all(kc, "w.clear()")
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    assert [(m["parent_header"]["msg_id"], m["content"]["transient"]["display_id"]) for m in updates] == [
        (home, display_id)
    ]
    assert updates[0]["content"]["data"]["text/plain"] == ""
