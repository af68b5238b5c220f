"""Shared parts of the protocol adapter tests: request bodies, a stream reader, AG-UI's own models.

A reply is read as the frontends' protocols define it: one ``data:`` JSON object per
SSE event (the AI SDK's stream ends with ``data: [DONE]``, kept here as the string
``"[DONE]"``). `validated` checks an AG-UI event against the `ag-ui-protocol` package's
models: every event validates, and carries no field they do not declare.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from ag_ui.core import Event as AgUiEvent
from httpx_sse import aconnect_sse
from pydantic import TypeAdapter

from streamchat import ToolCall
from streamchat.providers.base import ThinkingDelta
from streamchat.providers.scripted import ScriptTurn

CHAT = "api/streamchat/chat/stream"
"""The route every protocol streams from."""

RICH_SCRIPT: list[ScriptTurn] = [
    [
        ThinkingDelta(text="Two counts"),
        ThinkingDelta(text=" and a bad call."),
        "Let me ",
        "count.",
        ToolCall("count_to", {"n": 2}, call_id="call-a"),
        ToolCall("count_to", {"n": 3}, call_id="call-b"),
        ToolCall("count_to", {"n": "many"}, call_id="call-c"),
    ],
    ["Counted ", "to 2 and 3."],
]
"""Reasoning, text, two parallel tool calls with progress and one that fails, then the answer."""
BAD_ARGS = "invalid arguments: n: Input should be a valid integer, unable to parse string as an integer"
"""Why call-c of `RICH_SCRIPT` fails."""


def ui_body(chat_id: str, text: str) -> dict[str, Any]:
    """The body `useChat`'s default transport posts for a first message."""
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message", "messageId": None}


def agui_body(thread_id: str, text: str, run_id: str = "run-1") -> dict[str, Any]:
    """A `RunAgentInput` with one user message, as an AG-UI client posts it."""
    return {
        "threadId": thread_id,
        "runId": run_id,
        "state": {},
        "messages": [{"id": "m1", "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


@dataclass
class Reply:
    """A protocol stream as received."""

    headers: httpx.Headers
    parts: list[Any]
    """Each ``data:`` as parsed JSON (``"[DONE]"`` as the string)."""


async def stream(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    protocol: str | None = None,
    stop: Callable[[Any], bool] | None = None,
) -> Reply:
    """POST `body` and read the stream to its end (or until `stop` says so, then drop the connection)."""
    params = {"protocol": protocol} if protocol else {}
    parts: list[Any] = []
    async with aconnect_sse(client, "POST", CHAT, json=body, params=params) as source:
        assert source.response.status_code == 200, source.response.status_code
        async for sse in source.aiter_sse():
            assert sse.event == "message" and not sse.id, sse  # only `data:` lines
            part = sse.data if sse.data == "[DONE]" else json.loads(sse.data)
            parts.append(part)
            if stop is not None and stop(part):
                break
        return Reply(source.response.headers, parts)


async def turn_ended(session_id: str) -> None:
    """Wait until the session's turn task (the server names it ``streamchat <session>``) has ended."""
    turns = [task for task in asyncio.all_tasks() if task.get_name() == f"streamchat {session_id}"]
    await asyncio.wait_for(asyncio.gather(*turns), timeout=5)


def anonymized(parts: list[Any], turn_id: str) -> list[Any]:
    """`parts` with the turn id (random) written ``T``."""
    result: list[Any] = json.loads(json.dumps(parts).replace(turn_id, "T"))
    return result


_AG_UI_EVENT: TypeAdapter[Any] = TypeAdapter(AgUiEvent)


def validated(event: dict[str, Any]) -> dict[str, Any]:
    """`event`, checked by the `ag-ui-protocol` package's models (no undeclared field either)."""
    model = _AG_UI_EVENT.validate_python(event)
    declared = {field.alias or name for name, field in type(model).model_fields.items()}
    assert set(event) <= declared, f"{event['type']} has fields AG-UI does not declare: {set(event) - declared}"
    return event
