"""OpenTelemetry spans of a turn, from its events, when OpenTelemetry is installed and configured.

Install ``streamchat[otel]`` (`opentelemetry-api`) and configure a tracer provider (the
SDK and an exporter) in the process: each turn is then traced with the GenAI conventions'
spans and ``gen_ai.*`` attributes:

- ``invoke_agent streamchat`` — the whole turn; its usage and finish reason;
- ``chat {model}`` — each model call, under the turn (from its "Thinking…" status event to
  the moment its tools start, or the turn's end);
- ``execute_tool {tool}`` — each tool call, under the turn, placed by its measured duration.

Without `opentelemetry` installed, `tracer()` is None and the recorder never calls into
this module; with it installed but no provider configured, a turn costs one check.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, assert_never

from ..events import (
    DoneEvent,
    ErrorEvent,
    Event,
    ThinkingEvent,
    TokenEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .recorder import TurnInfo

__all__ = ["TurnSpans", "tracer"]

AGENT_NAME = "streamchat"


class TurnSpans:
    """The spans of one turn, opened and closed as its events arrive."""

    def __init__(self, trace: Any, tracer: Any, info: TurnInfo) -> None:
        self._trace = trace  # the `opentelemetry.trace` module
        self._tracer = tracer
        self._info = info
        self._agent: Any = None  # started with the first event: it carries the session id
        self._chat: Any = None
        self._chat_model = info.model or info.provider

    def _common(self) -> dict[str, str]:
        return {"gen_ai.provider.name": self._info.provider, "gen_ai.request.model": self._info.model}

    def observe(self, event: Event) -> None:
        """Open or close spans for one event."""
        if type(event) is TokenEvent and self._agent is not None:  # the hot path, before `match`
            return
        if self._agent is None:
            self._agent = self._tracer.start_span(
                f"invoke_agent {AGENT_NAME}",
                kind=self._trace.SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": AGENT_NAME,
                    "gen_ai.conversation.id": event.session_id,
                    **self._common(),
                },
            )
        match event:
            case ThinkingEvent(kind="status"):
                self._end_chat(time.time_ns())
                self._chat = self._tracer.start_span(
                    f"chat {self._chat_model}",
                    context=self._trace.set_span_in_context(self._agent),
                    kind=self._trace.SpanKind.CLIENT,
                    attributes={"gen_ai.operation.name": "chat", **self._common()},
                )
            case TokenEvent() | ThinkingEvent() | ToolCallEvent() | ToolProgressEvent():
                return
            case ToolResultEvent():
                end = time.time_ns()
                start = end - int(event.duration_ms * 1e6)
                self._end_chat(start)  # the model call was over when its tools started
                span = self._tracer.start_span(
                    f"execute_tool {event.tool}",
                    context=self._trace.set_span_in_context(self._agent),
                    kind=self._trace.SpanKind.INTERNAL,
                    start_time=start,
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": self._info.tool_label(event.tool),
                        "gen_ai.tool.call.id": event.call_id,
                        "gen_ai.tool.type": "function",
                    },
                )
                if event.status != "ok":
                    span.set_attribute("error.type", event.status)
                    span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.error or event.status))
                span.end(end_time=end)
            case ErrorEvent(code=code):
                self._agent.set_attribute("error.type", code)
            case DoneEvent():
                self._end_chat(time.time_ns())
                agent = self._agent
                agent.set_attribute("gen_ai.response.finish_reasons", [event.reason])
                if event.usage.prompt_tokens is not None:
                    agent.set_attribute("gen_ai.usage.input_tokens", event.usage.prompt_tokens)
                if event.usage.completion_tokens is not None:
                    agent.set_attribute("gen_ai.usage.output_tokens", event.usage.completion_tokens)
                if event.reason == "error":
                    agent.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
                agent.end()
                self._agent = None
            case _:
                assert_never(event)

    def _end_chat(self, at: int) -> None:
        if self._chat is not None:
            self._chat.end(end_time=at)
            self._chat = None

    def close(self) -> None:
        """End the spans a turn without `done` left open."""
        self._end_chat(time.time_ns())
        if self._agent is not None:
            self._agent.end()
            self._agent = None


def tracer(provider: Any = None) -> Callable[[TurnInfo], TurnSpans | None] | None:
    """What makes a turn's spans (with `provider`, or the global tracer provider); None without OpenTelemetry."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None

    unconfigured = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)  # a tuple made once, not a union per turn

    def spans(info: TurnInfo) -> TurnSpans | None:
        chosen = trace.get_tracer_provider() if provider is None else provider
        if isinstance(chosen, unconfigured):
            return None  # nothing configured: no spans, no cost beyond this check
        return TurnSpans(trace, chosen.get_tracer("streamchat"), info)

    return spans
