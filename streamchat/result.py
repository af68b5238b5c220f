"""`ChatResult`: what a whole turn produced, collected from its events."""

from __future__ import annotations

from typing import Any, assert_never

from pydantic import BaseModel, ConfigDict

from . import events
from .events import DoneReason, Metrics, ToolStatus, Usage

__all__ = ["ChatResult", "ResultCollector", "ToolCallSummary"]


class ToolCallSummary(BaseModel):
    """One tool call of a turn, with its outcome."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    """The call's id."""
    tool: str
    """The tool's name."""
    args: dict[str, Any]
    """The arguments the model sent."""
    status: ToolStatus
    """How the call ended."""
    result: Any = None
    """The value returned, when `status` is `ok`."""
    error: str | None = None
    """What went wrong otherwise."""
    duration_ms: float
    """Wall time of the call in ms."""


class ChatResult(BaseModel):
    """The outcome of one turn: the answer, the tool calls, token usage and timings."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    """The session that answered."""
    turn_id: str
    """The turn's id."""
    text: str
    """The whole answer."""
    reason: DoneReason
    """Why the turn ended (`stop`, `cancelled`, `error`, `max_turns`, `length`)."""
    tool_calls: tuple[ToolCallSummary, ...] = ()
    """Every tool call of the turn, in the order they were made."""
    errors: tuple[str, ...] = ()
    """Messages of the turn's `error` events."""
    usage: Usage = Usage()
    """Token counts."""
    metrics: Metrics = Metrics()
    """Timings."""

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        tools = ", ".join(f"{c.tool}:{c.status}" for c in self.tool_calls)
        parts = [f"text={text!r}", f"reason={self.reason!r}"]
        if tools:
            parts.append(f"tools=[{tools}]")
        if self.metrics.ttft_ms is not None:
            parts.append(f"ttft={self.metrics.ttft_ms:.0f}ms")
        parts.append(f"duration={self.metrics.duration_ms:.0f}ms")
        return f"ChatResult({', '.join(parts)})"

    __str__ = __repr__


class ResultCollector:
    """Accumulates a turn's events; `build()` once `done` has been added."""

    def __init__(self) -> None:
        self._calls: dict[str, events.ToolCallEvent] = {}
        self._results: dict[str, events.ToolResultEvent] = {}
        self._errors: list[str] = []
        self._done: events.DoneEvent | None = None

    def add(self, event: events.Event) -> None:
        """Take one event into account."""
        match event:
            case events.ToolCallEvent():
                self._calls[event.call_id] = event
            case events.ToolResultEvent():
                self._results[event.call_id] = event
            case events.ErrorEvent():
                self._errors.append(event.message)
            case events.DoneEvent():
                self._done = event
            case events.ThinkingEvent() | events.TokenEvent() | events.ToolProgressEvent():
                pass  # the answer text comes whole with `done`; progress is not part of the result
            case _:
                assert_never(event)

    def build(self) -> ChatResult:
        """The `ChatResult`; raises `RuntimeError` if no `done` was added or a call has no result.

        A turn's stream always answers every `tool_call` with a `tool_result` before its
        `done`, so a call without one means the events were not a whole turn's stream.
        """
        done = self._done
        if done is None:
            raise RuntimeError("the turn has not ended: no done event was collected")
        calls = []
        for call_id, call in self._calls.items():
            res = self._results.get(call_id)
            if res is None:
                raise RuntimeError(
                    f"broken event stream: tool call {call_id!r} ({call.tool}) has no tool_result before done"
                )
            calls.append(
                ToolCallSummary(
                    call_id=call_id,
                    tool=call.tool,
                    args=call.args,
                    status=res.status,
                    result=res.result,
                    error=res.error,
                    duration_ms=res.duration_ms,
                )
            )
        return ChatResult(
            session_id=done.session_id,
            turn_id=done.turn_id,
            text=done.text,
            reason=done.reason,
            tool_calls=tuple(calls),
            errors=tuple(self._errors),
            usage=done.usage,
            metrics=done.metrics,
        )
