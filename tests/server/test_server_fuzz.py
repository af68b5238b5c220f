"""Property-based fuzzing of the server's input parsers (`jupyter_server_extension.wire`).

Whatever a client sends (bytes, text, any JSON, JSON shaped almost like a valid message,
headers), a parser either returns a valid message or raises `ClientMessageError` /
`BadRequestError` with a code and a message: never another exception, which the server
would answer with a 500 or by dropping the WebSocket.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_server_extension import wire
from streamchat.errors import BadRequestError, ClientMessageError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
MESSAGE_TYPES = ["chat.message", "chat.cancel", "chat.clear", "tools.list", "tool.cancel", "tool.pause", "tool.resume"]
FIELDS = ["type", "message", "session_id", "call_id"]
near_messages = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6),
    st.sampled_from(MESSAGE_TYPES) | st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True) | json_values,
    max_size=5,
)
"""Objects built from the protocol's own keys and values, mixed with anything: they reach validation."""


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_messages.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 50_000).map(nested),
    st.integers(4300, 6000).map(lambda n: b'{"message": "hi", "session_id": ' + b"9" * n + b"}"),
)


def check_refusal(exc: ClientMessageError | BadRequestError) -> None:
    assert exc.status == 400 and exc.code and exc.message
    assert "Traceback" not in exc.message


@FUZZ
@given(raw=raw_bodies)
def test_the_chat_body_parser_returns_a_request_or_a_client_error(raw: bytes) -> None:
    try:
        request = wire.parse_chat_request(raw)
    except ClientMessageError as exc:
        check_refusal(exc)
    else:
        assert isinstance(request.message, str)
        assert request.session_id is None or len(request.session_id) <= 64


@FUZZ
@given(raw=raw_bodies | raw_bodies.map(lambda b: b.decode("utf-8", "replace")))
def test_the_websocket_parser_returns_a_message_or_a_client_error(raw: str | bytes) -> None:
    try:
        message: Any = wire.parse_client_message(raw)
    except ClientMessageError as exc:
        check_refusal(exc)
    else:
        assert message.type in MESSAGE_TYPES


@FUZZ
@given(value=st.text(max_size=120) | st.from_regex(r"([A-Za-z0-9_-]{0,70}:)?[0-9+-]{0,40}", fullmatch=True))
def test_the_last_event_id_parser_returns_a_bounded_seq_or_a_client_error(value: str) -> None:
    try:
        turn_id, seq = wire.parse_last_event_id(value)
    except BadRequestError as exc:
        check_refusal(exc)
    else:
        assert 0 <= seq < 10**9 and (turn_id is None or 1 <= len(turn_id) <= 64)


@pytest.mark.parametrize("depth", [100_000, 1_000_000])
def test_deep_nesting_is_refused_by_both_parsers(depth: int) -> None:
    for parse in (wire.parse_chat_request, wire.parse_client_message):
        with pytest.raises(ClientMessageError) as refused:
            parse(nested(depth))  # (how deep json.loads goes depends on the stack: only far deeper is sure)
        assert refused.value.code == "invalid_json" and "nests too deeply" in refused.value.message
