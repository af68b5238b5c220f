"""The fast event encoding (`jupyter_server_extension.frames`) writes exactly json's bytes, for any text."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_server_extension import frames, wire
from streamchat.events import (
    DoneEvent,
    ErrorEvent,
    Event,
    ThinkingEvent,
    TokenEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
)

# every code point, lone surrogates, controls and DEL included
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=40)
ASCII_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=40)
TEXT = st.one_of(ANY_TEXT, ASCII_TEXT)
SEQ = st.one_of(st.integers(min_value=1, max_value=10**6), st.integers(min_value=2**62, max_value=2**70))
IDS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)


def json_bytes(event: Event) -> bytes:
    """What the protocol has always sent: json's compact, ASCII-only dump of the event."""
    return json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()


def old_frame(event: Event) -> bytes:
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.turn_id}:{event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


@st.composite
def events(draw: st.DrawFn) -> Event:
    base: dict[str, Any] = {"session_id": draw(IDS), "turn_id": draw(IDS), "seq": draw(SEQ)}
    kind = draw(st.sampled_from(["token", "thinking", "error", "tool_call", "tool_progress", "tool_result", "done"]))
    if kind == "token":
        return TokenEvent(**base, content=draw(TEXT))
    if kind == "thinking":
        return ThinkingEvent(**base, text=draw(TEXT), kind=draw(st.sampled_from(["status", "reasoning"])))
    if kind == "error":
        return ErrorEvent(**base, message=draw(TEXT), code=draw(TEXT), retryable=draw(st.booleans()))
    if kind == "tool_call":  # args that hold a "type" of their own, as the event's
        args = {draw(TEXT): draw(TEXT), "type": draw(st.sampled_from(["tool_call", "token", "x"]))}
        return ToolCallEvent(**base, call_id=draw(TEXT), tool=draw(TEXT), args=args)
    if kind == "tool_progress":
        return ToolProgressEvent(**base, call_id="c", tool=draw(TEXT), message=draw(TEXT), stage=draw(TEXT))
    if kind == "tool_result":
        result = draw(st.one_of(TEXT, st.fixed_dictionaries({"type": st.just("tool_result"), "x": TEXT})))
        return ToolResultEvent(**base, call_id="c", tool="t", status="ok", result=result, duration_ms=1.5)
    return DoneEvent(**base, reason="stop", text=draw(TEXT))


@settings(max_examples=600)
@given(events())
def test_event_json_is_jsons_own_output(event: Event) -> None:
    assert frames.event_json(event) == json_bytes(event)


@settings(max_examples=300)
@given(events())
def test_sse_frames_are_byte_identical_to_the_protocols(event: Event) -> None:
    assert wire.sse_event(event) == old_frame(event)
    assert wire.NativeSse(250).encode([event, event]) == b"retry: 250\n" + old_frame(event) * 2


@settings(max_examples=300)
@given(events())
def test_websocket_messages_are_jsons_own_output_under_the_protocols_type(event: Event) -> None:
    body = event.model_dump(mode="json")
    body["type"] = wire.WS_TYPES[event.type]
    assert wire.ws_event(event) == json.dumps(body, separators=(",", ":"))


def test_every_event_dumps_its_ids_and_seq_before_its_type() -> None:
    """What `ws_event` relies on: the first "type" of an event's JSON is its own."""
    for model in (DoneEvent, ErrorEvent, ThinkingEvent, TokenEvent, ToolCallEvent, ToolProgressEvent, ToolResultEvent):
        assert list(model.model_fields)[:4] == ["session_id", "turn_id", "seq", "type"], model


@given(ANY_TEXT)
def test_a_constructed_token_holding_another_type_is_dumped_as_pydantic_does(text: str) -> None:
    event = TokenEvent.model_construct(session_id="s", turn_id="t", seq=True, type="token", content=text)
    assert frames._fast_json(event) is None  # a bool where the model holds an int: not the fast path


def test_flat_events_take_the_fast_paths_and_the_rest_fall_back() -> None:
    token = TokenEvent(session_id="s", turn_id="t", seq=3, content='a "quoted"\nline\t\x00')
    assert frames._fast_json(token) == json_bytes(token)
    # what orjson writes raw, or cannot write, json's escaping writes field by field
    for other in (
        TokenEvent(session_id="s", turn_id="t", seq=3, content="서울은 맑음 é"),
        TokenEvent(session_id="s", turn_id="t", seq=3, content="\x7f"),
        TokenEvent(session_id="s", turn_id="t", seq=3, content="\ud800"),
        TokenEvent(session_id="s", turn_id="t", seq=2**64, content="x"),
        ThinkingEvent(session_id="s", turn_id="t", seq=1, text="Thinking…", kind="status"),
    ):
        assert frames._fast_json(other) == json_bytes(other)
    assert frames._fast_json(DoneEvent(session_id="s", turn_id="t", seq=3, reason="stop", text="x")) is None
    error = ErrorEvent(session_id="s", turn_id="t", seq=3, message="m", code="c", retryable=True)
    assert frames._fast_json(error) == json_bytes(error)
