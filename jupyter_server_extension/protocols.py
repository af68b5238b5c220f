"""Which protocol a streaming chat request speaks: ours, the Vercel AI SDK's, or AG-UI.

``POST api/streamchat/chat/stream`` answers in the protocol the request asks for:
``?protocol=streamchat|ai-sdk|ag-ui``, or, without it, the one its body's shape belongs to
(`choose_protocol`): AG-UI's `RunAgentInput` has ``threadId`` and ``runId``; the AI SDK's
`useChat` sends ``id`` and ``messages`` (or one ``message`` object); anything else,
a ``message`` string above all, is ours, ``{"message": "...", "session_id": "..."}``. `parse_stream_request` reads the body
into a `StreamRequest`: the session, the user's message and the `wire.SseEncoder` of the
answer (`wire.NativeSse`, `ui_message_stream.UiMessageStream` or `agui.AgUiStream`).

The adapters are output adapters at the SSE edge: the turn, its events and everything the
server does with them (sessions, limits, cancel on disconnect) stay ours; an adapter only
re-encodes the events of the turn a response follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from streamchat.errors import BadRequestError

from . import agui, ui_message_stream, wire

__all__ = ["PROTOCOLS", "ProtocolName", "StreamRequest", "choose_protocol", "parse_stream_request"]

ProtocolName: TypeAlias = Literal["streamchat", "ai-sdk", "ag-ui"]
"""A protocol ``POST chat/stream`` answers in."""
PROTOCOLS: tuple[ProtocolName, ...] = ("streamchat", "ai-sdk", "ag-ui")
"""Every value ``?protocol=`` takes."""


@dataclass(frozen=True)
class StreamRequest:
    """A parsed streaming chat request: what to run, and how to answer."""

    session_id: str | None
    """The session; None starts a new one."""
    message: str
    """The user's message."""
    create_missing: bool
    """Whether a session the client names is created when it does not exist (the other protocols name theirs)."""
    encoder: wire.SseEncoder
    """Writes the turn's events in the request's protocol."""


def choose_protocol(query: str | None, body: Any) -> ProtocolName:
    """The protocol named by ``?protocol=``, else the one `body`'s shape belongs to."""
    if query is not None:
        for name in PROTOCOLS:
            if query == name:
                return name
        raise BadRequestError(
            f"unknown protocol {query!r}: use ?protocol= with one of {', '.join(PROTOCOLS)}", code="bad_protocol"
        )
    if isinstance(body, dict):
        if "threadId" in body and "runId" in body:
            return "ag-ui"
        if isinstance(body.get("message"), dict) or ("messages" in body and "message" not in body):
            return "ai-sdk"
    return "streamchat"


def parse_stream_request(raw: bytes, query: str | None, *, retry_ms: int) -> StreamRequest:
    """Parse a ``POST chat/stream`` body in its protocol; `ClientMessageError` (400) says what is wrong.

    `retry_ms` is the `retry:` field of our own protocol, for clients that reconnect.
    """
    body = wire.load_json_body(raw)
    match choose_protocol(query, body):
        case "streamchat":
            request = wire.parse_chat_body(body)
            return StreamRequest(request.session_id, request.message, False, wire.NativeSse(retry_ms))
        case "ai-sdk":
            chat = ui_message_stream.parse_request(body)
            return StreamRequest(chat.id, chat.user_text(), True, ui_message_stream.UiMessageStream())
        case "ag-ui":
            run = agui.parse_request(body)
            return StreamRequest(run.threadId, run.user_text(), True, agui.AgUiStream(run.threadId, run.runId))
