"""The one event→wire encoding, shared by the SSE and WebSocket routes (the wire protocol: docs/architecture.md).

SSE: ``id: <turn_id>:<seq>``, ``event: <type>``, ``data: <one-line JSON>``, blank line.
JSON escapes every control character, so a token holding ``\\n``, ``\\r``, ``event:`` or
``id:`` can never start a field of its own. The id names its turn, so a client resuming
with ``Last-Event-ID`` after the session moved on to another turn is told so (410)
instead of getting the new turn's events (`parse_last_event_id`).
The frame itself is built in `frames` (byte for byte json's ASCII output, fast).

WebSocket: the same JSON object, with `type` renamed to the WebSocket message type
(`token` → `chat.token`, `done` → `chat.complete` …). `event_from_ws` reverses it.

Client → server WebSocket messages are parsed into the `ClientMessage` union here too.

An SSE response writes its events through an `SseEncoder`: ours is `NativeSse`; the
frontends' protocols have theirs (`ui_message_stream`, `agui`; chosen in `protocols`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streamchat.errors import BadRequestError, ClientMessageError
from streamchat.events import Event, parse_event

from .frames import event_json, sse_event
from .service import SESSION_ID_PATTERN

__all__ = [
    "SSE_HEADERS",
    "WS_TYPES",
    "ChatCancel",
    "ChatClear",
    "ChatMessage",
    "ChatRequest",
    "ClientMessage",
    "NativeSse",
    "SessionId",
    "SseEncoder",
    "ToolControl",
    "ToolsList",
    "error_body",
    "event_from_ws",
    "load_json_body",
    "parse_chat_body",
    "parse_chat_request",
    "parse_client_message",
    "parse_last_event_id",
    "problems",
    "sse_comment",
    "sse_event",
    "sse_retry",
    "ws_error",
    "ws_event",
]

WS_TYPES: dict[str, str] = {
    "thinking": "chat.thinking",
    "token": "chat.token",
    "tool_call": "tool.call",
    "tool_progress": "tool.progress",
    "tool_result": "tool.result",
    "error": "chat.error",
    "done": "chat.complete",
}
"""WebSocket message type of each event type."""
_EVENT_TYPES = {ws: event for event, ws in WS_TYPES.items()}

SessionId: TypeAlias = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]
"""A session id: 1–64 letters, digits, `-` or `_`."""


# -- server → client ------------------------------------------------------------------------


# ASCII digits only (str.isdigit() and int() also take "²" or "١٢"), and a bound: no
# turn has a billion events, and a 30-digit seq must not reach the replay buffer.
_LAST_EVENT_ID = re.compile(r"(?:([A-Za-z0-9_-]{1,64}):)?([0-9]{1,9})")


def parse_last_event_id(value: str) -> tuple[str | None, int]:
    """The turn (None for a bare seq) and seq of a ``Last-Event-ID``; `BadRequestError` if malformed."""
    match = _LAST_EVENT_ID.fullmatch(value.strip(" "))
    if match is None:
        raise BadRequestError(
            "Last-Event-ID must be the id of the last event you received, '<turn_id>:<seq>' "
            "(or a bare <seq> of the session's latest turn, 0 to 999999999)",
            code="bad_last_event_id",
        )
    return match[1], int(match[2])


def sse_retry(milliseconds: int) -> bytes:
    """A `retry:` field: how long an `EventSource` waits before reconnecting.

    Written as the first line of the first event's block (a block holding only `retry`
    dispatches nothing by the spec, but some client libraries report it as an event).
    """
    return f"retry: {milliseconds}\n".encode()


SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""The headers of every SSE response (no proxy may buffer or cache a stream)."""


class SseEncoder(Protocol):
    """How one SSE response writes the events of the turn it follows (ours: `NativeSse`; others: `protocols`)."""

    @property
    def headers(self) -> Mapping[str, str]:
        """The response's headers."""
        ...

    def encode(self, events: Sequence[Event]) -> bytes:
        """The bytes that send `events`, the turn's next events in order."""
        ...


class NativeSse:
    """Our own SSE encoding of a followed turn (`sse_event`), the first write led by `sse_retry`.

    Args:
        retry_ms: the `retry:` of the stream.
        frame: the frame of an event (the followed turn's, encoded once for all its followers).
    """

    headers = SSE_HEADERS

    def __init__(self, retry_ms: int, frame: Callable[[Event], bytes] = sse_event) -> None:
        self._retry = sse_retry(retry_ms)
        self.frame = frame

    def encode(self, events: Sequence[Event]) -> bytes:
        """The frames of `events`."""
        frame = self.frame
        data = self._retry + b"".join([frame(event) for event in events])
        self._retry = b""
        return data


def sse_comment(text: str = "ping") -> bytes:
    """An SSE comment line (the heartbeat); clients ignore it."""
    return f": {text}\n\n".encode()


def ws_event(event: Event) -> str:
    """The WebSocket message for `event`: its JSON (`event_json`) under the WebSocket protocol's type.

    The same text as ``json.dumps`` of its dump with ``type`` replaced. The first ``"type":"…"`` of
    the JSON is the event's own: every event's fields start with its ids and seq, then its type.
    """
    data = event_json(event).decode("ascii")
    key = f'"type":"{event.type}"'
    at = data.index(key)
    return f'{data[:at]}"type":"{WS_TYPES[event.type]}"{data[at + len(key) :]}'


def event_from_ws(message: str | bytes | dict[str, Any]) -> Event:
    """The event a WebSocket event message carries (raises `ValueError` for other messages)."""
    body = dict(json.loads(message) if isinstance(message, (str, bytes)) else message)
    event_type = _EVENT_TYPES.get(body.get("type", ""))
    if event_type is None:
        raise ValueError(f"not an event message: type {body.get('type')!r}")
    body["type"] = event_type
    return parse_event(body)


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of an HTTP error: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}


def ws_error(code: str, message: str) -> str:
    """The WebSocket `error` message answering a bad client message."""
    return json.dumps({"type": "error", "code": code, "message": message})


# -- client → server ------------------------------------------------------------------------


class _ClientBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ChatRequest(_ClientBase):
    """The JSON body of ``POST chat`` and ``POST chat/stream``."""

    message: str
    """The user's message."""
    session_id: SessionId | None = None
    """The session to continue; None starts a new one."""


class ChatMessage(_ClientBase):
    """``chat.message``: send a message; without `session_id` a new session is created."""

    type: Literal["chat.message"]
    message: str
    """The user's message."""
    session_id: SessionId | None = None
    """The session to continue; None starts a new one."""


class ChatCancel(_ClientBase):
    """``chat.cancel``: stop the running turn of a session (the socket's latest by default)."""

    type: Literal["chat.cancel"]
    session_id: SessionId | None = None
    """The session; None means the session this socket used last."""


class ChatClear(_ClientBase):
    """``chat.clear``: forget a session's history (the socket's latest by default)."""

    type: Literal["chat.clear"]
    session_id: SessionId | None = None
    """The session; None means the session this socket used last."""


class ToolsList(_ClientBase):
    """``tools.list``: ask for the tool definitions."""

    type: Literal["tools.list"]


class ToolControl(_ClientBase):
    """``tool.cancel`` / ``tool.pause`` / ``tool.resume`` of one running tool call."""

    type: Literal["tool.cancel", "tool.pause", "tool.resume"]
    call_id: str = Field(min_length=1)
    """The call, as in its `tool.call` message."""
    session_id: SessionId | None = None
    """The session running the call; None searches this socket's running turns."""


ClientMessage: TypeAlias = Annotated[
    ChatMessage | ChatCancel | ChatClear | ToolsList | ToolControl, Field(discriminator="type")
]
"""Any message a WebSocket client may send."""
_CLIENT_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def problems(exc: ValidationError) -> str:
    """What is wrong with a client's JSON, one ``location: message`` per problem."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors(include_url=False)
    )


_CHAT_BODY = '{"message": "...", "session_id": "..."}'


def _load_json(raw: str | bytes, what: str, shape: str) -> Any:
    """`json.loads`, its failures (deep nesting included: RecursionError) as `ClientMessageError`."""
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ClientMessageError(f"{what} nests too deeply: send {shape}", code="invalid_json") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClientMessageError(f"{what} is not valid JSON ({exc}): send {shape}", code="invalid_json") from exc


def load_json_body(raw: bytes) -> Any:
    """A request body's JSON; raises `ClientMessageError` saying what is wrong."""
    return _load_json(raw, "the body", _CHAT_BODY)


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse a chat request body; raises `ClientMessageError` saying what is wrong."""
    return parse_chat_body(load_json_body(raw))


def parse_chat_body(body: Any) -> ChatRequest:
    """A chat request body's JSON as a `ChatRequest`; raises `ClientMessageError` saying what is wrong."""
    if not isinstance(body, dict):
        raise ClientMessageError(f"the body must be a JSON object: send {_CHAT_BODY}")
    if "message" not in body:
        raise ClientMessageError(f'the body needs a "message": send {_CHAT_BODY}')
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise ClientMessageError(f"invalid request: {problems(exc)}") from exc


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """Parse one client message; raises `ClientMessageError` saying what is wrong."""
    body = _load_json(raw, "the message", 'a JSON object such as {"type": "chat.message", "message": "..."}')
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise ClientMessageError('a message is a JSON object with a string "type"', code="bad_message")
    try:
        return _CLIENT_ADAPTER.validate_python(body)
    except ValidationError as exc:
        known = ("chat.message", "chat.cancel", "chat.clear", "tools.list", "tool.cancel", "tool.pause", "tool.resume")
        if body["type"] not in known:
            raise ClientMessageError(
                f"unknown message type {body['type']!r}; known: {', '.join(known)}", code="unknown_message"
            ) from exc
        raise ClientMessageError(f"invalid {body['type']} message: {problems(exc)}", code="bad_message") from exc
