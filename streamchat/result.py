"""`ChatResult`: what a whole turn produced, collected from its events."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .events import DoneEvent, DoneReason, ErrorEvent, Event, Metrics, ToolCallEvent, ToolResultEvent, ToolStatus, Usage

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
        self._calls: dict[str, ToolCallEvent] = {}
        self._results: dict[str, ToolResultEvent] = {}
        self._errors: list[str] = []
        self._done: DoneEvent | None = None

    def add(self, event: Event) -> None:
        """Take one event into account."""
        if isinstance(event, ToolCallEvent):
            self._calls[event.call_id] = event
        elif isinstance(event, ToolResultEvent):
            self._results[event.call_id] = event
        elif isinstance(event, ErrorEvent):
            self._errors.append(event.message)
        elif isinstance(event, DoneEvent):
            self._done = event

    def build(self) -> ChatResult:
        """The `ChatResult`; raises `RuntimeError` if no `done` event was added."""
        done = self._done
        if done is None:
            raise RuntimeError("the turn has not ended: no done event was collected")
        calls = []
        for call_id, call in self._calls.items():
            res = self._results.get(call_id)
            calls.append(
                ToolCallSummary(
                    call_id=call_id,
                    tool=call.tool,
                    args=call.args,
                    status=res.status if res else "cancelled",
                    result=res.result if res else None,
                    error=res.error if res else "no result",
                    duration_ms=res.duration_ms if res else 0.0,
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
