"""Event models: tags, JSON round trip, immutability, validation."""

from __future__ import annotations

import copy
import pickle

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamchat import (
    DoneEvent,
    ErrorEvent,
    Metrics,
    ThinkingEvent,
    TokenEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
    ToolTiming,
    Usage,
    parse_event,
)
from streamchat.events import trusted_thinking, trusted_token
from streamchat.result import ResultCollector

COMMON = {"session_id": "s1", "turn_id": "t1", "seq": 1}

EVENTS = [
    ThinkingEvent(**COMMON, text="Thinking…", kind="status"),
    ThinkingEvent(**COMMON, text="Let me see"),
    TokenEvent(**COMMON, content="Hello\n\r event: id: 世界"),
    ToolCallEvent(**COMMON, call_id="c1", tool="get_weather", args={"city": "Seoul"}),
    ToolProgressEvent(
        **COMMON, call_id="c1", tool="get_weather", message="Checking location...", stage="geo", percent=0
    ),
    ToolResultEvent(
        **COMMON, call_id="c1", tool="get_weather", status="ok", result={"summary": "21°C, Clear"}, duration_ms=12.5
    ),
    ToolResultEvent(**COMMON, call_id="c2", tool="calculate", status="timeout", error="timed out", duration_ms=1.0),
    ErrorEvent(**COMMON, message="backend down", code="backend_unreachable", retryable=True),
    DoneEvent(
        **COMMON,
        reason="stop",
        text="Hello",
        usage=Usage(prompt_tokens=3, completion_tokens=2),
        metrics=Metrics(
            ttft_ms=5,
            tokens_per_s=10,
            duration_ms=50,
            model_calls=2,
            tools=(ToolTiming(call_id="c1", tool="get_weather", status="ok", duration_ms=12.5),),
        ),
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_json_round_trip_gives_the_same_event(event):
    text = event.model_dump_json()
    assert "\n" not in text  # one line: safe as an SSE data field
    parsed = parse_event(text)
    assert parsed == event and type(parsed) is type(event)
    assert parse_event(event.model_dump(mode="json")) == event


def test_type_tags_are_the_design_names():
    assert [e.type for e in EVENTS] == [
        "thinking",
        "thinking",
        "token",
        "tool_call",
        "tool_progress",
        "tool_result",
        "tool_result",
        "error",
        "done",
    ]


def test_events_are_immutable():
    with pytest.raises(pydantic.ValidationError):
        EVENTS[2].content = "changed"  # type: ignore[misc]


def test_invalid_events_are_rejected():
    with pytest.raises(pydantic.ValidationError):
        parse_event({"type": "token", "session_id": "s", "turn_id": "t", "seq": 0, "content": "x"})
    with pytest.raises(pydantic.ValidationError):
        parse_event({"type": "nonsense", "session_id": "s", "turn_id": "t", "seq": 1})
    with pytest.raises(pydantic.ValidationError):
        ToolProgressEvent(**COMMON, call_id="c", tool="t", message="m", percent=101)


def test_usage_adds_up_and_keeps_unknown_as_none():
    assert Usage() + Usage() == Usage()
    assert Usage(prompt_tokens=1) + Usage(prompt_tokens=2, completion_tokens=3) == Usage(
        prompt_tokens=3, completion_tokens=3
    )


def test_tool_result_summary():
    assert EVENTS[5].summary == "Done: 21°C, Clear"
    assert EVENTS[6].summary == "Timeout: timed out"


def test_result_collector_pairs_calls_with_results_and_refuses_a_call_without_one():
    call, progress, result, done = EVENTS[3], EVENTS[4], EVENTS[5], EVENTS[8]
    collector = ResultCollector()
    for event in (call, progress, result, done):
        collector.add(event)
    summary = collector.build().tool_calls
    assert [(c.call_id, c.status, c.result) for c in summary] == [("c1", "ok", {"summary": "21°C, Clear"})]

    broken = ResultCollector()
    for event in (call, progress, done):  # no tool_result: not a whole turn's stream
        broken.add(event)
    with pytest.raises(RuntimeError, match=r"tool call 'c1' \(get_weather\) has no tool_result"):
        broken.build()


# -- the hot path's events, made without validation --------------------------------------------

# What the turn hands the trusted constructors: ids, a seq from its counter, text a
# provider's delta carries (any string: lone surrogates were repaired in the delta, but the
# constructors must not care).
IDS = st.text(max_size=40)
SEQS = st.integers(min_value=1, max_value=2**62)


def same_event(fast: pydantic.BaseModel, validated: pydantic.BaseModel) -> None:
    """`fast` is what validation made, to every observable: equal, same fields set, same dumps, same repr."""
    assert type(fast) is type(validated)
    assert fast == validated
    assert fast.__dict__ == validated.__dict__ and list(fast.__dict__) == list(validated.__dict__)
    assert fast.model_fields_set == validated.model_fields_set
    assert fast.model_fields_set is not validated.model_fields_set
    assert fast.model_dump() == validated.model_dump()
    assert fast.model_dump(exclude_unset=True) == validated.model_dump(exclude_unset=True)
    assert fast.model_dump_json() == validated.model_dump_json()
    assert repr(fast) == repr(validated)
    assert hash(fast) == hash(validated)
    assert parse_event(fast.model_dump_json()) == fast
    assert pickle.loads(pickle.dumps(fast)) == validated and copy.deepcopy(fast) == validated
    updated, expected = fast.model_copy(update={"seq": 7}), validated.model_copy(update={"seq": 7})
    assert updated == expected and updated.model_fields_set == expected.model_fields_set
    assert fast.__pydantic_extra__ is None and fast.__pydantic_private__ is None
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        fast.seq = 2  # type: ignore[misc]


@given(session_id=IDS, turn_id=IDS, seq=SEQS, content=st.text())
def test_trusted_token_is_the_validated_token_event(session_id, turn_id, seq, content):
    same_event(
        trusted_token(session_id, turn_id, seq, content),
        TokenEvent(session_id=session_id, turn_id=turn_id, seq=seq, content=content),
    )


@given(session_id=IDS, turn_id=IDS, seq=SEQS, text=st.text(), kind=st.sampled_from(["status", "reasoning"]))
def test_trusted_thinking_is_the_validated_thinking_event(session_id, turn_id, seq, text, kind):
    same_event(
        trusted_thinking(session_id, turn_id, seq, text, kind),
        ThinkingEvent(session_id=session_id, turn_id=turn_id, seq=seq, text=text, kind=kind),
    )


@pytest.mark.parametrize(("model", "fields"), [(TokenEvent, {"content"}), (ThinkingEvent, {"text", "kind"})])
def test_trusted_constructors_know_every_field(model, fields):
    """A field added to these events must be added to their trusted constructors too (this fails until it is)."""
    assert set(model.model_fields) == {"session_id", "turn_id", "seq", "type", *fields}
