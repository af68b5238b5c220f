"""Prometheus metrics of the recorder, in `prometheus_client`'s default registry.

jupyter_server serves that registry at its own ``/metrics`` (authenticated unless its
``authenticate_prometheus`` is turned off), so a server with the extension shows these
next to its own. Names follow the OpenTelemetry GenAI semantic conventions, translated
to Prometheus (dots to underscores, the unit as a suffix):

- ``gen_ai_client_operation_duration_seconds`` (histogram): a turn's duration; the
  operation is ``invoke_agent`` (one turn, with its model calls and tools);
- ``gen_ai_client_operation_time_to_first_chunk_seconds`` (histogram): time to the first token;
- ``gen_ai_client_token_usage`` (histogram, label ``gen_ai_token_type`` = input/output);
- ``gen_ai_execute_tool_duration_seconds`` (histogram, labels ``gen_ai_tool_name``, ``error_type``);

with the labels ``gen_ai_operation_name``, ``gen_ai_provider_name``, ``gen_ai_request_model``
and ``error_type`` (empty on success), and streamchat's own:

- ``streamchat_active_turns``, ``streamchat_open_streams`` (label ``transport``),
  ``streamchat_sessions`` (gauges);
- ``streamchat_turns_total`` (label ``reason``), ``streamchat_errors_total`` (label
  ``error_type``), ``streamchat_retries_total`` (label ``gen_ai_provider_name``) (counters).

Label values are bounded: provider and model names come from the configuration, tool
names from the session's tools (others are ``_OTHER``), error types from streamchat's
error codes; never a session id or user text. Without `prometheus_client` installed
(it comes with jupyter_server) nothing is exported.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from ..events import DoneEvent

if TYPE_CHECKING:
    from .recorder import TurnInfo

__all__ = ["PrometheusExporter", "exporter"]

OPERATION = "invoke_agent"
# The bucket boundaries the GenAI conventions advise for each histogram.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
MODEL_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")


class PrometheusExporter:
    """Forwards what the recorder records to Prometheus metrics (made once per process)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        registry = REGISTRY if registry is None else registry
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration: one streamchat turn (invoke_agent), its model calls and tools.",
            [*MODEL_LABELS, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time from the start of a turn to its first streamed token.",
            MODEL_LABELS,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used by one turn, by type (input, output), as the backend reported them.",
            [*MODEL_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.tool = Histogram(
            "gen_ai_execute_tool_duration_seconds",
            "Duration of one tool call.",
            ["gen_ai_tool_name", "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.active = Gauge("streamchat_active_turns", "Turns running now.", registry=registry)
        self.streams = Gauge(
            "streamchat_open_streams", "Open SSE responses and WebSockets.", ["transport"], registry=registry
        )
        self.sessions = Gauge(
            "streamchat_sessions", "Sessions this server process created and has not deleted.", registry=registry
        )
        self.turns = Counter("streamchat_turns", "Turns ended, by reason.", ["reason"], registry=registry)
        self.errors = Counter("streamchat_errors", "Error events, by code.", ["error_type"], registry=registry)
        self.retries = Counter(
            "streamchat_retries", "Requests a provider retried.", ["gen_ai_provider_name"], registry=registry
        )
        self._error_types: set[str] = set()
        self._by_model: dict[tuple[str, str, bool], tuple[Any, Any, Any, Any]] = {}
        self._by_reason: dict[str, Any] = {}  # the labelled series of `turns` and `streams`, looked up once each
        self._by_transport: dict[str, Any] = {}

    def _error_type(self, code: str) -> str:
        if code in self._error_types:
            return code
        if len(self._error_types) < 64:
            self._error_types.add(code)
            return code
        return "_OTHER"

    def turn_started(self, info: TurnInfo) -> None:
        """One more active turn."""
        self.active.inc()

    def _children(self, provider: str, model: str, failed: bool) -> tuple[Any, Any, Any, Any]:
        """The labelled series of one provider and model (looked up once: `labels()` costs microseconds)."""
        key = (provider, model, failed)
        children = self._by_model.get(key)
        if children is None:
            labels = (OPERATION, provider, model)
            children = self._by_model[key] = (
                self.duration.labels(*labels, "error" if failed else ""),
                self.ttft.labels(*labels),
                self.tokens.labels(*labels, "input"),
                self.tokens.labels(*labels, "output"),
            )
        return children

    def turn_done(self, info: TurnInfo, event: DoneEvent) -> None:
        """Observe the turn's duration, TTFT and tokens; count it by reason."""
        self.active.dec()
        duration, ttft, tokens_in, tokens_out = self._children(info.provider, info.model, event.reason == "error")
        duration.observe(event.metrics.duration_ms / 1000)
        if event.metrics.ttft_ms is not None:
            ttft.observe(event.metrics.ttft_ms / 1000)
        if event.usage.prompt_tokens is not None:
            tokens_in.observe(event.usage.prompt_tokens)
        if event.usage.completion_tokens is not None:
            tokens_out.observe(event.usage.completion_tokens)
        counter = self._by_reason.get(event.reason)
        if counter is None:
            counter = self._by_reason[event.reason] = self.turns.labels(event.reason)
        counter.inc()

    def turn_abandoned(self, info: TurnInfo) -> None:
        """A turn's stream ended without `done`."""
        self.active.dec()

    def tool_done(self, info: TurnInfo, tool: str, status: str, duration_ms: float) -> None:
        """Observe one tool call's duration, its status as the error type."""
        self.tool.labels(tool, "" if status == "ok" else status).observe(duration_ms / 1000)

    def error(self, info: TurnInfo, code: str) -> None:
        """Count an error event by code."""
        self.errors.labels(self._error_type(code)).inc()

    def retry(self, provider: str) -> None:
        """Count a provider's retry."""
        self.retries.labels(provider).inc()

    def stream(self, transport: str, step: int) -> None:
        """An SSE response or WebSocket opened (+1) or closed (-1)."""
        gauge = self._by_transport.get(transport)
        if gauge is None:
            gauge = self._by_transport[transport] = self.streams.labels(transport)
        gauge.inc(step)

    def session(self, step: int) -> None:
        """A session was created (+1) or deleted (-1)."""
        self.sessions.inc(step)


_EXPORTER: PrometheusExporter | None = None
_LOCK = threading.Lock()


def exporter() -> PrometheusExporter | None:
    """The process's exporter to the default registry; None without `prometheus_client` (or if its names are taken)."""
    global _EXPORTER
    with _LOCK:
        if _EXPORTER is None:
            try:
                _EXPORTER = PrometheusExporter()
            except ImportError:
                return None
            except ValueError as exc:  # the names are taken in the default registry: chat on, without metrics
                logging.getLogger("streamchat").warning("streamchat: no Prometheus metrics: %s", exc)
                return None
        return _EXPORTER
