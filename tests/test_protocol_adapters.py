"""Property test: for any scripted conversation, the protocol adapters give well-formed streams.

The turns of test_core_invariants.py's strategy (text, reasoning, tool calls with
progress, failing and unknown tools, notices, backend failures, cancellation at any
point) are encoded by both adapters, the events handed over in arbitrary batches as a
connection would get them. The AI SDK stream must keep its part structure and carry the
turn's text; every AG-UI event must validate with `ag-ui-protocol`'s models and follow
the ordering rules `@ag-ui/client` enforces, and its activities, patched, end at each
call's last progress. The exact parts of given turns, and the real clients, are tested
against a live server (tests/server/test_server_protocols.py, test_server_protocol_clients.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ag_ui.core import Event as AgUiEvent
from core_helpers import check_invariants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from test_core_invariants import echo, fail, responses, steps

from jupyter_server_extension.agui import AgUiStream
from jupyter_server_extension.protocols import choose_protocol
from jupyter_server_extension.ui_message_stream import UiMessageStream
from streamchat import ChatSession, ScriptedProvider
from streamchat.events import DoneEvent, Event, ToolProgressEvent

AG_UI_EVENT: TypeAdapter[Any] = TypeAdapter(AgUiEvent)


async def turn(script: Any, cancel_after: int | None) -> list[Event]:
    """The events of one scripted turn, cancelled after `cancel_after` events if given."""
    session = ChatSession(ScriptedProvider(script), tools=[echo, steps, fail], max_turns=3)
    events: list[Event] = []
    async for event in session.stream("go"):
        events.append(event)
        if len(events) == cancel_after:
            session.cancel()
    check_invariants(events)
    return events


def encoded(encoder: UiMessageStream | AgUiStream, events: list[Event], cuts: list[int]) -> list[Any]:
    """What `encoder` sends for `events` handed over in batches split at `cuts`, parsed."""
    data = b""
    start = 0
    for cut in [*sorted({c % (len(events) + 1) for c in cuts}), len(events)]:
        if cut > start:
            data += encoder.encode(events[start:cut])
            start = cut
    frames = data.decode().split("\n\n")
    assert frames.pop() == ""
    assert all(frame.startswith("data: ") and "\n" not in frame for frame in frames)
    return [frame[6:] if frame == "data: [DONE]" else json.loads(frame[6:]) for frame in frames]


def check_ui_message_stream(parts: list[Any], events: list[Event]) -> None:
    """The AI SDK's part structure, and the turn's text, reasoning, tools and errors in it."""
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert parts[0] == {"type": "start", "messageId": done.turn_id} and parts[-1] == "[DONE]"
    terminal = {"cancelled": "abort", "error": "finish"}.get(done.reason, "finish")
    assert parts[-2]["type"] == terminal and [p["type"] for p in parts[:-1]].count(terminal) == 1
    body = parts[1:-2] if done.reason != "error" else parts[1:-3]
    if done.reason == "error":
        assert parts[-3]["type"] == "error" and parts[-2] == {"type": "finish", "finishReason": "error"}
    open_block: tuple[str, str] | None = None
    step_open = False
    inputs: set[str] = set()
    outputs: set[str] = set()
    text = reasoning = ""
    for part in body:
        kind = part["type"]
        block, _, phase = kind.rpartition("-")
        if block in ("text", "reasoning"):
            assert step_open
            if phase == "start":
                assert open_block is None
                open_block = (block, part["id"])
            else:
                assert open_block == (block, part["id"]), (open_block, part)
                if phase == "end":
                    open_block = None
                elif block == "text":
                    text += part["delta"]
                else:
                    reasoning += part["delta"]
            continue
        if kind not in ("data-notice", "data-status"):
            assert open_block is None, part  # only data parts may come while a block is open
        if kind == "start-step":
            assert not step_open
            step_open = True
        elif kind == "finish-step":
            assert step_open
            step_open = False
        elif kind == "tool-input-available":
            assert part["toolCallId"] not in inputs
            inputs.add(part["toolCallId"])
        elif kind in ("tool-output-available", "tool-output-error"):
            assert part["toolCallId"] in inputs - outputs
            outputs.add(part["toolCallId"])
        elif kind == "data-tool-progress":
            assert part["id"] == part["data"]["toolCallId"] and part["id"] in inputs - outputs
        else:
            assert kind in ("data-notice", "data-status"), part
    assert open_block is None and not step_open
    assert inputs == outputs  # every call got its outcome
    assert text == done.text
    assert reasoning == "".join(e.text for e in events if e.type == "thinking" and e.kind == "reasoning")
    errors = [e for e in events if e.type == "error"]
    failed = 1 if done.reason == "error" and errors else 0
    assert [p["type"] for p in body].count("data-notice") == len(errors) - failed


def check_ag_ui(parts: list[Any], events: list[Event]) -> None:
    """Every event validates; the ordering rules of `@ag-ui/client`'s verifier; text, tools and progress carried."""
    done = events[-1]
    assert isinstance(done, DoneEvent)
    for part in parts:
        model = AG_UI_EVENT.validate_python(part)
        declared = {field.alias or name for name, field in type(model).model_fields.items()}
        assert set(part) <= declared, part
    assert parts[0] == {"type": "RUN_STARTED", "threadId": "thread", "runId": "run"}
    terminal = "RUN_ERROR" if done.reason == "error" else "RUN_FINISHED"
    assert parts[-1]["type"] == terminal
    assert [p["type"] for p in parts].count("RUN_FINISHED") + [p["type"] for p in parts].count("RUN_ERROR") == 1
    if terminal == "RUN_FINISHED":
        assert parts[-1]["outcome"] == {"type": "cancelled" if done.reason == "cancelled" else "success"}
    texts: set[str] = set()
    reasoning_spans: set[str] = set()
    reasoning_messages: set[str] = set()
    calls: set[str] = set()
    ended: set[str] = set()
    results: set[str] = set()
    activities: dict[str, dict[str, Any]] = {}
    text = ""
    for part in parts[1:-1]:
        kind = part["type"]
        if kind == "TEXT_MESSAGE_START":
            assert part["messageId"] not in texts
            texts.add(part["messageId"])
        elif kind == "TEXT_MESSAGE_CONTENT":
            assert part["messageId"] in texts
            text += part["delta"]
        elif kind == "TEXT_MESSAGE_END":
            texts.remove(part["messageId"])
        elif kind == "REASONING_START":
            assert part["messageId"] not in reasoning_spans
            reasoning_spans.add(part["messageId"])
        elif kind == "REASONING_MESSAGE_START":
            assert part["messageId"] in reasoning_spans and part["messageId"] not in reasoning_messages
            reasoning_messages.add(part["messageId"])
        elif kind == "REASONING_MESSAGE_CONTENT":
            assert part["messageId"] in reasoning_messages
        elif kind == "REASONING_MESSAGE_END":
            reasoning_messages.remove(part["messageId"])
        elif kind == "REASONING_END":
            assert part["messageId"] not in reasoning_messages
            reasoning_spans.remove(part["messageId"])
        elif kind == "TOOL_CALL_START":
            assert part["toolCallId"] not in calls | ended and not texts  # the step's text ends first
            calls.add(part["toolCallId"])
        elif kind == "TOOL_CALL_ARGS":
            assert part["toolCallId"] in calls and isinstance(json.loads(part["delta"]), dict)
        elif kind == "TOOL_CALL_END":
            calls.remove(part["toolCallId"])
            ended.add(part["toolCallId"])
        elif kind == "TOOL_CALL_RESULT":
            assert part["toolCallId"] in ended - results
            results.add(part["toolCallId"])
        elif kind == "ACTIVITY_SNAPSHOT":
            assert part["messageId"] not in activities
            activities[part["messageId"]] = dict(part["content"])
        elif kind == "ACTIVITY_DELTA":
            content = activities[part["messageId"]]
            for op in part["patch"]:
                assert op["op"] == "replace" and op["path"][1:] in content
                content[op["path"][1:]] = op["value"]
        else:
            assert kind == "CUSTOM" and part["name"] in ("streamchat.status", "streamchat.notice"), part
    assert not texts and not reasoning_spans and not reasoning_messages and not calls
    assert ended == results
    assert text == done.text
    last: dict[str, ToolProgressEvent] = {}
    for event in events:
        if isinstance(event, ToolProgressEvent):
            last[event.call_id] = event
    assert {
        f"{done.turn_id}-{call}-progress": {
            "toolCallId": call,
            "toolName": e.tool,
            "message": e.message,
            "stage": e.stage,
            "percent": e.percent,
        }
        for call, e in last.items()
    } == activities


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=responses,
    cancel_after=st.one_of(st.none(), st.integers(1, 12)),
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_any_turn_is_a_well_formed_stream_in_both_protocols(
    script: Any, cancel_after: int | None, cuts: list[int]
) -> None:
    events = asyncio.run(turn(script, cancel_after))
    check_ui_message_stream(encoded(UiMessageStream(), events, cuts), events)
    check_ag_ui(encoded(AgUiStream("thread", "run"), events, cuts), events)


@pytest.mark.parametrize(
    ("query", "body", "protocol"),
    [
        (None, {"message": "hi", "session_id": "s"}, "streamchat"),
        (None, {"message": "hi", "messages": []}, "streamchat"),  # a string message is ours
        (None, {"id": "c", "messages": []}, "ai-sdk"),
        (None, {"id": "c", "message": {"role": "user", "parts": []}}, "ai-sdk"),
        (None, {"threadId": "t", "runId": "r", "messages": []}, "ag-ui"),
        (None, {"threadId": "t", "messages": []}, "ai-sdk"),  # no runId: not a RunAgentInput
        (None, ["not", "an", "object"], "streamchat"),  # ours, which says what to send
        ("ag-ui", {"message": "hi"}, "ag-ui"),  # the parameter wins
        ("streamchat", {"id": "c", "messages": []}, "streamchat"),
    ],
)
def test_the_protocol_is_the_parameter_or_the_body_shape(query: str | None, body: Any, protocol: str) -> None:
    assert choose_protocol(query, body) == protocol
