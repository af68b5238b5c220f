"""The stream events every surface renders or encodes (their guarantees: docs/architecture.md).

One immutable pydantic model per event type, each with a literal `type` tag, joined in
the discriminated union `Event`. Every event carries the `session_id`, the `turn_id`
and `seq` (1, 2, 3 … within a turn). `parse_event` turns JSON back into the same event.

`trusted_token` and `trusted_thinking` make the events of the turn's hot path (one per
delta) from fields the turn vouches for, without validating them again: the same event,
equal to the validated one and as immutable, in about half the time.

Example:
    >>> ev = TokenEvent(session_id="s", turn_id="t", seq=1, content="Hi")
    >>> parse_event(ev.model_dump_json()) == ev
    True
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "DoneEvent",
    "DoneReason",
    "ErrorEvent",
    "Event",
    "EventBase",
    "Metrics",
    "ThinkingEvent",
    "TokenEvent",
    "ToolCallEvent",
    "ToolProgressEvent",
    "ToolResultEvent",
    "ToolStatus",
    "ToolTiming",
    "Usage",
    "parse_event",
    "trusted_thinking",
    "trusted_token",
]

ToolStatus: TypeAlias = Literal["ok", "error", "cancelled", "timeout"]
DoneReason: TypeAlias = Literal["stop", "cancelled", "error", "max_turns", "length"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Usage(_Frozen):
    """Token counts reported by the backend (None when it reports none)."""

    prompt_tokens: int | None = None
    """Tokens in the prompt, summed over the model calls of the turn."""
    completion_tokens: int | None = None
    """Tokens generated, summed over the model calls of the turn."""

    def __add__(self, other: Usage) -> Usage:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Usage(
            prompt_tokens=add(self.prompt_tokens, other.prompt_tokens),
            completion_tokens=add(self.completion_tokens, other.completion_tokens),
        )


class ToolTiming(_Frozen):
    """How long one tool call took."""

    call_id: str
    """The call's id, as in its `tool_call` event."""
    tool: str
    """The tool's name."""
    status: ToolStatus
    """How the call ended."""
    duration_ms: float
    """Wall time from start to result, in milliseconds."""


class Metrics(_Frozen):
    """Timings of one turn."""

    ttft_ms: float | None = None
    """Time from the start of the turn to the first token, in ms (None if no token)."""
    tokens_per_s: float | None = None
    """Generated tokens per second, from the first token to the last of each model call (tool time left out).

    None without tokens, or when they all arrived within 50 ms (a scripted or buffered answer):
    over so short an interval a rate means nothing."""
    duration_ms: float = 0.0
    """Wall time of the whole turn, in ms."""
    model_calls: int = 0
    """How many requests were made to the model in this turn."""
    backend_duration_ms: float | None = None
    """Time the backend reported spending on the turn's model calls, in ms (None if it reports none)."""
    backend_tokens_per_s: float | None = None
    """Generation speed the backend reported (tokens / its generation time), when it reports one."""
    tools: tuple[ToolTiming, ...] = ()
    """One timing per tool call, in the order the calls finished."""


class EventBase(_Frozen):
    """Fields common to every event."""

    session_id: str
    """The session the turn belongs to."""
    turn_id: str
    """The turn (one user message and everything it caused)."""
    seq: int = Field(ge=1)
    """1, 2, 3 … within a turn; used as the SSE `id`."""


class ThinkingEvent(EventBase):
    """Status before the first token ("Thinking…") or streamed reasoning text."""

    type: Literal["thinking"] = "thinking"
    text: str
    """The status line or the reasoning delta."""
    kind: Literal["status", "reasoning"] = "reasoning"
    """`status` for a progress line from streamchat, `reasoning` for the model's own text."""


class TokenEvent(EventBase):
    """One delta of answer text, in order."""

    type: Literal["token"] = "token"
    content: str
    """The text delta."""


class ToolCallEvent(EventBase):
    """The model asked for a tool; the arguments are complete."""

    type: Literal["tool_call"] = "tool_call"
    call_id: str
    """Identifies this call in later `tool_progress` and `tool_result` events."""
    tool: str
    """The tool's name."""
    args: dict[str, Any]
    """The arguments as the model sent them."""


class ToolProgressEvent(EventBase):
    """A running tool reported progress."""

    type: Literal["tool_progress"] = "tool_progress"
    call_id: str
    """The call that reported."""
    tool: str
    """The tool's name."""
    message: str
    """What the tool is doing now, e.g. "Fetching weather data…"."""
    stage: str | None = None
    """An optional short machine-readable stage name."""
    percent: float | None = Field(default=None, ge=0, le=100)
    """Completion from 0 to 100, when the tool knows it."""


class ToolResultEvent(EventBase):
    """A tool call finished; exactly one per `tool_call`."""

    type: Literal["tool_result"] = "tool_result"
    call_id: str
    """The call that finished."""
    tool: str
    """The tool's name."""
    status: ToolStatus
    """`ok`, `error`, `cancelled` or `timeout`."""
    result: Any = None
    """The tool's return value when `status` is `ok` (JSON-serialisable)."""
    error: str | None = None
    """What went wrong, when `status` is not `ok`."""
    duration_ms: float
    """Wall time of the call, in milliseconds."""

    @property
    def summary(self) -> str:
        """A one-line description of the outcome, e.g. ``Done: 21°C, Clear``."""
        if self.status != "ok":
            return f"{self.status.capitalize()}: {self.error}"
        result = self.result
        if isinstance(result, dict) and isinstance(result.get("summary"), str):
            return f"Done: {result['summary']}"
        text = result if isinstance(result, str) else repr(result)
        return f"Done: {text if len(text) <= 120 else text[:117] + '...'}"


class ErrorEvent(EventBase):
    """Something failed; the turn may still go on, and always ends with `done`."""

    type: Literal["error"] = "error"
    message: str
    """A message meant for the user: what failed and what to do."""
    code: str
    """A stable machine-readable code, e.g. `backend_unreachable`."""
    retryable: bool = False
    """Whether sending the message again may succeed."""


class DoneEvent(EventBase):
    """The last event of every turn, exactly once."""

    type: Literal["done"] = "done"
    reason: DoneReason
    """Why the turn ended."""
    text: str
    """The whole answer: the concatenation of the turn's `token` contents."""
    usage: Usage = Usage()
    """Token counts summed over the turn's model calls."""
    metrics: Metrics = Metrics()
    """Timings of the turn."""


Event: TypeAlias = Annotated[
    ThinkingEvent | TokenEvent | ToolCallEvent | ToolProgressEvent | ToolResultEvent | ErrorEvent | DoneEvent,
    Field(discriminator="type"),
]
"""Any stream event, discriminated by its `type`."""

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Parse an event from its JSON text or from a dict, checking every field."""
    if isinstance(data, dict):
        return _EVENT_ADAPTER.validate_python(data)
    return _EVENT_ADAPTER.validate_json(data)


# The fast constructors below set what pydantic's validation sets on these models: the
# field values in field order, the fields passed (`model_fields_set`), and no extra or
# private values. tests/test_core_events.py checks they make events equal to validated ones.
_new = object.__new__
_set = object.__setattr__  # a frozen model's own __setattr__ refuses


def trusted_token(session_id: str, turn_id: str, seq: int, content: str) -> TokenEvent:
    """``TokenEvent(session_id=…, turn_id=…, seq=…, content=…)`` without validation: the caller vouches for the fields."""
    event = _new(TokenEvent)
    _set(
        event,
        "__dict__",
        {"session_id": session_id, "turn_id": turn_id, "seq": seq, "type": "token", "content": content},
    )
    _set(event, "__pydantic_fields_set__", {"session_id", "turn_id", "seq", "content"})
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def trusted_thinking(
    session_id: str, turn_id: str, seq: int, text: str, kind: Literal["status", "reasoning"]
) -> ThinkingEvent:
    """``ThinkingEvent(session_id=…, turn_id=…, seq=…, text=…, kind=…)`` without validation: the caller vouches for the fields."""
    event = _new(ThinkingEvent)
    _set(
        event,
        "__dict__",
        {"session_id": session_id, "turn_id": turn_id, "seq": seq, "type": "thinking", "text": text, "kind": kind},
    )
    _set(event, "__pydantic_fields_set__", {"session_id", "turn_id", "seq", "text", "kind"})
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event
