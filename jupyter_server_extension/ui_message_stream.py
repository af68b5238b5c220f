"""The Vercel AI SDK's UI message stream: what `useChat` sends, and our events as its parts.

Request: `useChat`'s body, ``{"id", "messages": [{"id", "role", "parts": [{"type": "text",
"text"}]}], "trigger"}`` (or one ``"message"`` in place of ``"messages"``, as a client
sending only the newest message does). ``id`` is the session (created on first use);
the last message, the user's, is the message. The server keeps the conversation, so
the earlier messages are not read.

Response (header ``x-vercel-ai-ui-message-stream: v1``): one ``data: <JSON part>`` per
part, ending with ``data: [DONE]``:

==========================  ================================================================
our event                   parts
==========================  ================================================================
first event                 ``start`` (``messageId``: the turn id), ``start-step``
thinking (status)           ``data-status`` (transient: `useChat`'s ``onData`` only)
thinking (reasoning)        ``reasoning-start`` / ``reasoning-delta`` / ``reasoning-end``
token                       ``text-start`` / ``text-delta`` / ``text-end``
tool_call                   ``tool-input-available`` (``toolCallId``, ``toolName``, ``input``)
tool_progress               ``data-tool-progress`` whose ``id`` is the call id: each
                            update replaces the call's previous one
tool_result ok / not ok     ``tool-output-available`` (``output``) / ``tool-output-error``
                            (``errorText``: "Error: …", "Cancelled: …", "Timeout: …")
model speaks after tools    ``finish-step``, ``start-step``
error, the turn goes on     ``data-notice`` (``code``, ``message``, ``retryable``)
error, then done(error)     ``error`` (``errorText``), ``finish`` (``finishReason: error``)
done                        ``finish-step``, ``finish`` (``stop``, ``length``, or ``other``
                            for max_turns) or, when stopped, ``abort``; then ``[DONE]``
==========================  ================================================================
"""

from __future__ import annotations

import json
from typing import Any, Literal, assert_never

from pydantic import Field

from streamchat.errors import ClientMessageError
from streamchat.events import DoneEvent, ErrorEvent, ThinkingEvent, ToolCallEvent, ToolProgressEvent, ToolResultEvent

from . import wire
from .adapter import ClientModel, Part, TurnEncoder, last_user_text, validate_body

__all__ = ["HEADERS", "UiChatRequest", "UiMessage", "UiMessageStream", "parse_request"]

HEADERS = {**wire.SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
"""The response headers: an SSE stream, marked as a UI message stream (version 1)."""

_FINISH_REASONS = {"stop": "stop", "length": "length", "max_turns": "other"}
_SHAPE = '{"id": "<chat id>", "messages": [{"role": "user", "parts": [{"type": "text", "text": "..."}]}]}'


class UiPart(ClientModel):
    """One part of a UI message (only text parts are read)."""

    type: str
    text: str | None = None


class UiMessage(ClientModel):
    """A UI message, as `useChat` keeps it."""

    role: Literal["system", "user", "assistant"]
    parts: list[UiPart]


class UiChatRequest(ClientModel):
    """The body `useChat`'s transport posts."""

    id: str
    """The chat id: the session."""
    messages: list[UiMessage] | None = None
    """The whole conversation, as the client has it."""
    message: UiMessage | None = None
    """Only the newest message (a client configured to send just that)."""
    trigger: str = Field(default="submit-message")
    """Why the client sent the request: ``submit-message``, or ``regenerate-message``."""

    def user_text(self) -> str:
        """The user's message: the text of the last message."""
        newest = self.message or (self.messages[-1] if self.messages else None)
        role = newest.role if newest is not None else None
        parts = newest.parts if newest is not None else []
        texts = [part.text or "" for part in parts if part.type == "text"]
        others = [part.type for part in parts if part.type not in ("text", "step-start")]
        return last_user_text(role, texts, others=others, what="useChat request")


def parse_request(body: Any) -> UiChatRequest:
    """`useChat`'s request; `ClientMessageError` saying what is wrong."""
    request = validate_body(UiChatRequest, body, "useChat request", _SHAPE)
    if request.trigger != "submit-message":
        raise ClientMessageError(
            f"the trigger {request.trigger!r} is not supported: the server keeps the conversation, "
            "so send the message again (trigger 'submit-message') instead",
            code="bad_message",
        )
    if request.messages is None and request.message is None:
        raise ClientMessageError(f'the useChat request needs "messages": send {_SHAPE}', code="bad_message")
    return request


def _json(part: Part) -> bytes:
    return b"data: " + json.dumps(part, separators=(",", ":")).encode() + b"\n\n"


class UiMessageStream(TurnEncoder):
    """Encodes one turn as UI message stream parts (the table in this module's docstring)."""

    headers = HEADERS

    ended = False
    """Whether the turn's ``done`` was encoded: ``data: [DONE]`` follows its parts."""

    def frame(self, parts: list[Part]) -> bytes:
        """One ``data:`` line per part; after the turn's last part, ``data: [DONE]``."""
        return b"".join(_json(part) for part in parts) + (b"data: [DONE]\n\n" if self.ended else b"")

    def on_start(self) -> list[Part]:
        """``start``, with the turn id as the assistant message's id."""
        return [{"type": "start", "messageId": self.turn_id}]

    def on_step_start(self) -> list[Part]:
        """``start-step``."""
        return [{"type": "start-step"}]

    def on_step_end(self) -> list[Part]:
        """``finish-step``."""
        return [{"type": "finish-step"}]

    def on_block_start(self) -> list[Part]:
        """``text-start`` or ``reasoning-start``."""
        return [{"type": f"{self.block}-start", "id": self.block_id}]

    def on_delta(self, text: str) -> list[Part]:
        """``text-delta`` or ``reasoning-delta``."""
        return [{"type": f"{self.block}-delta", "id": self.block_id, "delta": text}]

    def on_block_end(self) -> list[Part]:
        """``text-end`` or ``reasoning-end``."""
        return [{"type": f"{self.block}-end", "id": self.block_id}]

    def on_status(self, event: ThinkingEvent) -> list[Part]:
        """A transient ``data-status`` part (`useChat` hands it to ``onData`` and keeps nothing)."""
        return [{"type": "data-status", "data": {"text": event.text}, "transient": True}]

    def on_tool_call(self, event: ToolCallEvent) -> list[Part]:
        """``tool-input-available``: the arguments are complete."""
        return [
            {"type": "tool-input-available", "toolCallId": event.call_id, "toolName": event.tool, "input": event.args}
        ]

    def on_tool_progress(self, event: ToolProgressEvent) -> list[Part]:
        """``data-tool-progress`` with the call id as its id: the client keeps the latest per call."""
        data = {
            "toolCallId": event.call_id,
            "toolName": event.tool,
            "message": event.message,
            "stage": event.stage,
            "percent": event.percent,
        }
        return [{"type": "data-tool-progress", "id": event.call_id, "data": data}]

    def on_tool_result(self, event: ToolResultEvent) -> list[Part]:
        """``tool-output-available``, or ``tool-output-error`` for a call that failed, was cancelled or timed out."""
        if event.status == "ok":
            return [{"type": "tool-output-available", "toolCallId": event.call_id, "output": event.result}]
        return [{"type": "tool-output-error", "toolCallId": event.call_id, "errorText": event.summary}]

    def on_notice(self, event: ErrorEvent) -> list[Part]:
        """``data-notice``: the turn went on (an ``error`` part would end `useChat`'s stream)."""
        data = {"code": event.code, "message": event.message, "retryable": event.retryable}
        return [{"type": "data-notice", "data": data}]

    def on_done(self, event: DoneEvent, failure: ErrorEvent | None) -> list[Part]:
        """``finish-step``, then ``error`` + ``finish``, ``abort`` or ``finish`` (`frame` adds ``[DONE]``)."""
        self.ended = True
        parts = self.on_step_end() if self.step else []
        match event.reason:
            case "cancelled":
                parts.append({"type": "abort", "reason": "cancelled"})
            case "error":
                message = failure.message if failure is not None else "the turn failed"
                parts += [{"type": "error", "errorText": message}, {"type": "finish", "finishReason": "error"}]
            case "stop" | "length" | "max_turns":
                parts.append({"type": "finish", "finishReason": _FINISH_REASONS[event.reason]})
            case unknown:
                assert_never(unknown)
        return parts
