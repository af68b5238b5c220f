"""AG-UI: the `RunAgentInput` its clients post, and our events as AG-UI events.

Request: `RunAgentInput`, ``{"threadId", "runId", "messages": [{"id", "role", "content"}],
"state", "tools", "context", "forwardedProps"}``. ``threadId`` is the session (created on
first use); the last message, the user's, is the message (its ``content`` a string or text
parts). The server keeps the conversation and runs its own tools, so the earlier
messages, ``tools`` (a frontend's tools), ``state`` and ``context`` are not read.

Response: one ``data: <JSON event>`` per event:

==========================  ================================================================
our event                   AG-UI events
==========================  ================================================================
first event                 ``RUN_STARTED`` (``threadId``, ``runId`` of the request)
thinking (status)           ``CUSTOM`` ``streamchat.status`` (``{"text"}``)
thinking (reasoning)        ``REASONING_START``, ``REASONING_MESSAGE_START`` / ``_CONTENT`` /
                            ``_END``, ``REASONING_END``
token                       ``TEXT_MESSAGE_START`` / ``_CONTENT`` / ``_END`` (role assistant)
tool_call                   ``TOOL_CALL_START``, ``TOOL_CALL_ARGS`` (the JSON arguments),
                            ``TOOL_CALL_END``
tool_progress               ``ACTIVITY_SNAPSHOT`` (activity ``TOOL_PROGRESS``: ``toolCallId``,
                            ``toolName``, ``message``, ``stage``, ``percent``) for the call's
                            first report, then ``ACTIVITY_DELTA`` (JSON Patch ``replace``)
tool_result                 ``TOOL_CALL_RESULT`` (``content``: the result, JSON unless a
                            string; "Error: …", "Cancelled: …" or "Timeout: …" otherwise)
error, the turn goes on     ``CUSTOM`` ``streamchat.notice`` (``code``, ``message``, ``retryable``)
error, then done(error)     ``RUN_ERROR`` (``message``, ``code``), the last event
done                        ``RUN_FINISHED`` with outcome ``success``, or ``cancelled`` when stopped
==========================  ================================================================

Ids: each step's assistant message is ``<turn>-<step>`` (its text, and the parent of its
tool calls), its reasoning ``<turn>-<step>-reasoning``; a call's result message is
``<turn>-<call>-result`` and its progress activity ``<turn>-<call>-progress``. Tool call ids
are the model's.
"""

from __future__ import annotations

import json
from typing import Any, assert_never

from streamchat.events import DoneEvent, ErrorEvent, ThinkingEvent, ToolCallEvent, ToolProgressEvent, ToolResultEvent

from .adapter import Block, ClientModel, Part, TurnEncoder, last_user_text, validate_body

__all__ = ["PROGRESS_ACTIVITY", "AgUiMessage", "AgUiStream", "RunAgentInput", "parse_request"]

PROGRESS_ACTIVITY = "TOOL_PROGRESS"
"""The ``activityType`` of a tool call's progress."""
_SHAPE = '{"threadId": "<session id>", "runId": "...", "messages": [{"id": "...", "role": "user", "content": "..."}]}'


class AgUiMessage(ClientModel):
    """A message of the conversation (only the user's last one is read)."""

    role: str
    content: str | list[dict[str, Any]] | None = None


class RunAgentInput(ClientModel):
    """The body an AG-UI client posts to run the agent."""

    threadId: str
    """The thread: the session."""
    runId: str
    """The run, echoed in ``RUN_STARTED`` and ``RUN_FINISHED``."""
    messages: list[AgUiMessage]
    """The conversation, as the client has it."""

    def user_text(self) -> str:
        """The user's message: the text of the last message."""
        newest = self.messages[-1] if self.messages else None
        content = newest.content if newest is not None else None
        if isinstance(content, str):
            texts, others = [content], []
        else:
            parts = content or []
            texts = [str(part.get("text", "")) for part in parts if part.get("type") == "text"]
            others = [str(part.get("type")) for part in parts if part.get("type") != "text"]
        return last_user_text(newest.role if newest else None, texts, others=others, what="AG-UI run input")


def parse_request(body: Any) -> RunAgentInput:
    """An AG-UI client's `RunAgentInput`; `ClientMessageError` saying what is wrong."""
    return validate_body(RunAgentInput, body, "AG-UI run input", _SHAPE)


def _progress(event: ToolProgressEvent) -> dict[str, Any]:
    return {
        "toolCallId": event.call_id,
        "toolName": event.tool,
        "message": event.message,
        "stage": event.stage,
        "percent": event.percent,
    }


class AgUiStream(TurnEncoder):
    """Encodes one turn as AG-UI events (the table in this module's docstring)."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        super().__init__()
        self.thread_id = thread_id
        self.run_id = run_id
        self._progress: dict[str, dict[str, Any]] = {}
        """The activity content last sent for each call that reported progress."""

    def frame(self, parts: list[Part]) -> bytes:
        """One ``data:`` line per event."""
        return b"".join(b"data: " + json.dumps(part, separators=(",", ":")).encode() + b"\n\n" for part in parts)

    @property
    def message_id(self) -> str:
        """The open step's assistant message."""
        return f"{self.turn_id}-{self.step}"

    def new_block_id(self, block: Block, number: int) -> str:
        """The step's assistant message for text, its reasoning message for reasoning."""
        return self.message_id if block == "text" else f"{self.message_id}-reasoning"

    def on_start(self) -> list[Part]:
        """``RUN_STARTED``."""
        return [{"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id}]

    def on_block_start(self) -> list[Part]:
        """``TEXT_MESSAGE_START``, or ``REASONING_START`` + ``REASONING_MESSAGE_START``."""
        if self.block == "text":
            return [{"type": "TEXT_MESSAGE_START", "messageId": self.block_id, "role": "assistant"}]
        return [
            {"type": "REASONING_START", "messageId": self.block_id},
            {"type": "REASONING_MESSAGE_START", "messageId": self.block_id, "role": "reasoning"},
        ]

    def on_delta(self, text: str) -> list[Part]:
        """``TEXT_MESSAGE_CONTENT`` or ``REASONING_MESSAGE_CONTENT``."""
        kind = "TEXT_MESSAGE" if self.block == "text" else "REASONING_MESSAGE"
        return [{"type": f"{kind}_CONTENT", "messageId": self.block_id, "delta": text}]

    def on_block_end(self) -> list[Part]:
        """``TEXT_MESSAGE_END``, or ``REASONING_MESSAGE_END`` + ``REASONING_END``."""
        if self.block == "text":
            return [{"type": "TEXT_MESSAGE_END", "messageId": self.block_id}]
        return [
            {"type": "REASONING_MESSAGE_END", "messageId": self.block_id},
            {"type": "REASONING_END", "messageId": self.block_id},
        ]

    def on_status(self, event: ThinkingEvent) -> list[Part]:
        """``CUSTOM`` ``streamchat.status``."""
        return [{"type": "CUSTOM", "name": "streamchat.status", "value": {"text": event.text}}]

    def on_tool_call(self, event: ToolCallEvent) -> list[Part]:
        """``TOOL_CALL_START`` (in the step's assistant message), ``TOOL_CALL_ARGS``, ``TOOL_CALL_END``."""
        call = event.call_id
        return [
            {
                "type": "TOOL_CALL_START",
                "toolCallId": call,
                "toolCallName": event.tool,
                "parentMessageId": self.message_id,
            },
            {"type": "TOOL_CALL_ARGS", "toolCallId": call, "delta": json.dumps(event.args)},
            {"type": "TOOL_CALL_END", "toolCallId": call},
        ]

    def on_tool_progress(self, event: ToolProgressEvent) -> list[Part]:
        """``ACTIVITY_SNAPSHOT`` for the call's first report, then ``ACTIVITY_DELTA`` of the fields that changed."""
        content = _progress(event)
        message_id = f"{self.turn_id}-{event.call_id}-progress"
        previous = self._progress.get(event.call_id)
        self._progress[event.call_id] = content
        if previous is None:
            return [
                {
                    "type": "ACTIVITY_SNAPSHOT",
                    "messageId": message_id,
                    "activityType": PROGRESS_ACTIVITY,
                    "content": content,
                }
            ]
        patch = [
            {"op": "replace", "path": f"/{key}", "value": value}
            for key, value in content.items()
            if previous[key] != value
        ]
        return [{"type": "ACTIVITY_DELTA", "messageId": message_id, "activityType": PROGRESS_ACTIVITY, "patch": patch}]

    def on_tool_result(self, event: ToolResultEvent) -> list[Part]:
        """``TOOL_CALL_RESULT``."""
        if event.status != "ok":
            content = event.summary
        elif isinstance(event.result, str):
            content = event.result
        else:
            content = json.dumps(event.result)
        message_id = f"{self.turn_id}-{event.call_id}-result"
        return [
            {
                "type": "TOOL_CALL_RESULT",
                "messageId": message_id,
                "toolCallId": event.call_id,
                "role": "tool",
                "content": content,
            }
        ]

    def on_notice(self, event: ErrorEvent) -> list[Part]:
        """``CUSTOM`` ``streamchat.notice`` (``RUN_ERROR`` would end the run)."""
        value = {"code": event.code, "message": event.message, "retryable": event.retryable}
        return [{"type": "CUSTOM", "name": "streamchat.notice", "value": value}]

    def on_done(self, event: DoneEvent, failure: ErrorEvent | None) -> list[Part]:
        """``RUN_FINISHED`` (outcome ``success`` or ``cancelled``), or ``RUN_ERROR``."""
        finished = {"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id}
        match event.reason:
            case "cancelled":
                return [{**finished, "outcome": {"type": "cancelled"}}]
            case "error":
                if failure is None:
                    return [{"type": "RUN_ERROR", "message": "the turn failed", "code": "turn_failed"}]
                return [{"type": "RUN_ERROR", "message": failure.message, "code": failure.code}]
            case "stop" | "length" | "max_turns":
                return [{**finished, "outcome": {"type": "success"}}]
            case unknown:
                assert_never(unknown)
