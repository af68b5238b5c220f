"""`Recorder`: the one place turn and tool metrics are recorded, fed by the event stream.

`ChatSession.stream` asks the process's recorder (`recorder()`) for a `TurnObserver` when
a turn starts and hands it every event it yields, so every surface (notebook, widget,
CLI, server) is measured the same way and none computes its own figures. From the events
the observer takes, per turn: provider, model, reason, TTFT, duration, tokens in and out,
tokens/s and error codes (all from `done` and `error` events); per tool call: tool,
status, duration (from `tool_result`) and the time it spent paused (between its
``paused`` and ``resumed`` progress events, on the recorder's clock).

The recorder adds them to rolling windows (`streamchat.analytics.window`): one pair
(5 min, 1 h) for the process and one per *scope* (the server's scope is the owner of the
session, so each user sees their own figures), at most `max_scopes` scopes, the least
recently active dropped first. It forwards them to the exporters: Prometheus metrics
(`streamchat.analytics.prometheus`) and, when OpenTelemetry is configured, spans
(`streamchat.analytics.tracing`). `summary()` gives the JSON the dashboards show;
`subscribe()` calls back after each change, so a live view redraws without polling.

Everything kept is a sum of counts (`Stats.merge`), so the state of several processes
is combined by adding it up: once `share()` is called the recorder notes which slots
changed, and `take_changes()` hands them (and the live counts) to
`streamchat.analytics.shared`, which keeps them in Redis; `summarize()` draws the JSON from
any windows, this process's or the combined ones.

Thread safety: turns of a notebook run on a private loop thread while the kernel's
thread reads summaries, so changes and reads take one lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Protocol, TypeAlias, assert_never

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
from .histogram import RELATIVE_ERROR
from .window import MAX_LABELS, OTHER, RollingWindow, Stats

__all__ = [
    "Changes",
    "Exporter",
    "Recorder",
    "Transport",
    "TurnInfo",
    "TurnObserver",
    "Windows",
    "recorder",
    "summarize",
]

Transport: TypeAlias = Literal["sse", "websocket"]
"""The kinds of open streams the server counts."""

TOOL_HISTOGRAM_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000)
"""Upper edges of the tool-duration histogram's bars (the last bar is everything above 60 s)."""


class TurnInfo:
    """What the recorder knows of a turn besides its events: where it runs, with what."""

    __slots__ = ("known_tools", "model", "provider", "scope")

    def __init__(self, provider: str, model: str, scope: str | None, known_tools: Collection[str]) -> None:
        self.provider = provider
        """The provider's short name (`ollama`, `openai`, `scripted` …)."""
        self.model = model
        """The model's name ('' when the provider has none)."""
        self.scope = scope
        """Whose figures these are (the server's session owner); None counts for the process only."""
        self.known_tools = known_tools
        """The session's tool names; a call to another name (a model's invention) is counted as `_OTHER`."""

    def tool_label(self, name: str) -> str:
        """`name`, or `OTHER` when the session has no such tool (bounded label values)."""
        return name if not self.known_tools or name in self.known_tools else OTHER


class Exporter(Protocol):
    """Where the recorder forwards what it records, besides its windows (Prometheus, …)."""

    def turn_started(self, info: TurnInfo) -> None:
        """A turn started."""

    def turn_done(self, info: TurnInfo, event: DoneEvent) -> None:
        """A turn ended with `event`."""

    def turn_abandoned(self, info: TurnInfo) -> None:
        """A turn's stream ended without `done`."""

    def tool_done(self, info: TurnInfo, tool: str, status: str, duration_ms: float) -> None:
        """A tool call ended."""

    def error(self, info: TurnInfo, code: str) -> None:
        """An error event."""


class Windows:
    """The windows of one scope (or of the process), and its live counts."""

    __slots__ = ("active_turns", "hour", "recent", "sessions", "streams", "touched")

    def __init__(self, *, track: bool = False) -> None:
        self.recent = RollingWindow(span_s=300, slot_s=10)
        self.hour = RollingWindow(span_s=3600, slot_s=60)
        self.active_turns = 0
        self.sessions = 0
        self.streams: Counter[str] = Counter()
        self.touched: set[tuple[str, int]] | None = set() if track else None
        """The (window, slot number) pairs changed since `Recorder.take_changes`; None unless shared."""

    def slots(self, now: float) -> tuple[Stats, Stats]:
        if self.touched is not None:
            self.touched.add(("5m", math.floor(now / self.recent.slot_s)))
            self.touched.add(("1h", math.floor(now / self.hour.slot_s)))
        return self.recent.at(now), self.hour.at(now)

    def window(self, name: str) -> RollingWindow:
        """The window named `name` ("5m" or "1h")."""
        return self.recent if name == "5m" else self.hour

    def live(self) -> dict[str, Any]:
        """The live counts, as JSON."""
        return {"active_turns": self.active_turns, "sessions": self.sessions, "streams": dict(self.streams)}

    def copy(self) -> Windows:
        """A deep copy (the slots' stats merged into new ones), to read without the lock."""
        copy = Windows()
        for mine, theirs in ((copy.recent, self.recent), (copy.hour, self.hour)):
            for number, stats in theirs.slots.items():
                mine.slots[number] = Stats()
                mine.slots[number].merge(stats)
        copy.active_turns, copy.sessions, copy.streams = self.active_turns, self.sessions, Counter(self.streams)
        return copy


Changes: TypeAlias = tuple[list[tuple[str | None, str, int, dict[str, Any]]], dict[str, Any]]
"""What `Recorder.take_changes` returns: (scope, window, slot number, `Stats.to_dict()`) per changed slot, and the live counts."""


class TurnObserver:
    """Watches one turn's events; `ChatSession.stream` hands it each one (`observe`)."""

    __slots__ = ("_done", "_paused", "_paused_since", "_recorder", "_spans", "info")

    def __init__(self, recorder: Recorder, info: TurnInfo, spans: Any = None) -> None:
        self._recorder = recorder
        self.info = info
        """The turn's provider, model, scope and tools."""
        self._spans = spans  # OpenTelemetry spans of the turn, when tracing is on
        self._paused_since: dict[str, float] = {}
        self._paused: dict[str, float] = {}
        self._done = False

    def observe(self, event: Event) -> None:
        """Take one event of the turn (in stream order)."""
        if self._spans is not None:
            self._spans.observe(event)
        if type(event) is TokenEvent:  # the hot path, before `match` (its class patterns cost more than this)
            return  # timings of tokens arrive summed up in `done`
        match event:
            case TokenEvent() | ThinkingEvent() | ToolCallEvent():
                return
            case ToolProgressEvent(stage="paused", call_id=call_id):
                self._paused_since.setdefault(call_id, self._recorder.clock())
            case ToolProgressEvent(stage="resumed", call_id=call_id):
                if (since := self._paused_since.pop(call_id, None)) is not None:
                    self._paused[call_id] = self._paused.get(call_id, 0.0) + self._recorder.clock() - since
            case ToolProgressEvent():
                return
            case ToolResultEvent(call_id=call_id):
                paused = self._paused.pop(call_id, 0.0)
                if (since := self._paused_since.pop(call_id, None)) is not None:
                    paused += self._recorder.clock() - since
                self._recorder._tool(self.info, event, paused * 1000)
            case ErrorEvent(code=code):
                self._recorder._error(self.info, code)
            case DoneEvent():
                self._done = True
                self._recorder._turn_done(self.info, event)
            case _:
                assert_never(event)

    def close(self) -> None:
        """The turn's stream ended; a turn that never reached `done` stops counting as active."""
        if not self._done:
            self._done = True
            self._recorder._turn_abandoned(self.info)
        if self._spans is not None:
            self._spans.close()


class Recorder:
    """Turn and tool metrics of this process, in rolling windows, per scope and in all.

    Args:
        clock: seconds since the epoch (tests pass a fake one).
        max_scopes: most scopes kept apart; the least recently active is dropped past it.
        exporters: where each recorded figure is forwarded as well (Prometheus metrics …).
        tracer: makes the OpenTelemetry spans of a turn, or None when tracing is off.

    Example:
        >>> from streamchat import ChatSession, ScriptedProvider
        >>> rec = Recorder()
        >>> observer = rec.turn(ChatSession(ScriptedProvider([["Hi"]]), tools=[]))
        >>> rec.summary()["active_turns"]
        1
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_scopes: int = 256,
        exporters: Collection[Exporter] = (),
        tracer: Callable[[TurnInfo], Any] | None = None,
    ) -> None:
        self.clock = clock
        """Seconds since the epoch; slots are chosen and paused time is measured with it."""
        self.max_scopes = max_scopes
        self.exporters = list(exporters)
        self.tracer = tracer
        self.version = 0
        """Counts the changes; a reader compares it to know whether anything changed."""
        self.turns_ended = 0
        """Counts the turns that reached `done`, in every scope (a cheap "did a turn finish?" for readers)."""
        self._lock = threading.Lock()
        self.sharing = False
        """Whether changed slots are noted for `take_changes` (`share()`)."""
        self._process = Windows()
        self._scopes: OrderedDict[str, Windows] = OrderedDict()
        self._listeners: list[Callable[[], None]] = []
        self._retries: Counter[str] = Counter()

    # -- what the core reports -------------------------------------------------------------------

    def turn(self, session: Any, *, scope: str | None = None) -> TurnObserver:
        """Start watching a turn of `session` (a `ChatSession`); hand its events to the observer."""
        provider = session.provider
        info = TurnInfo(
            provider.name, provider.model, scope or getattr(session, "analytics_scope", None), frozenset(session.tools)
        )
        with self._lock:
            for windows in self._windows(info.scope):
                windows.active_turns += 1
            self.version += 1
        for exporter in self.exporters:
            exporter.turn_started(info)
        spans = self.tracer(info) if self.tracer is not None else None
        self._changed()
        return TurnObserver(self, info, spans)

    def retry(self, provider: str) -> None:
        """A provider retried a request (counted per provider, for the process)."""
        with self._lock:
            self._retries[provider if len(self._retries) < MAX_LABELS or provider in self._retries else OTHER] += 1
        for exporter in self.exporters:
            if (count_retry := getattr(exporter, "retry", None)) is not None:
                count_retry(provider)

    @contextmanager
    def open_stream(self, transport: Transport, scope: str | None = None) -> Iterator[None]:
        """Count an open SSE response or WebSocket while the block runs."""
        self.stream_opened(transport, scope)
        try:
            yield
        finally:
            self.stream_closed(transport, scope)

    def stream_opened(self, transport: Transport, scope: str | None = None) -> None:
        """An SSE response or a WebSocket opened (pair with `stream_closed`)."""
        self._count_stream(transport, scope, 1)

    def stream_closed(self, transport: Transport, scope: str | None = None) -> None:
        """An SSE response or WebSocket counted by `stream_opened` closed."""
        self._count_stream(transport, scope, -1)

    def session_created(self, scope: str | None = None) -> None:
        """The server created a session (for `scope`)."""
        self._count_session(scope, 1)

    def session_deleted(self, scope: str | None = None) -> None:
        """The server deleted a session `session_created` counted."""
        self._count_session(scope, -1)

    def _count_session(self, scope: str | None, step: int) -> None:
        with self._lock:
            for windows in self._windows(scope):
                windows.sessions += step
            self.version += 1
        for exporter in self.exporters:
            if (count := getattr(exporter, "session", None)) is not None:
                count(step)
        self._changed()

    def _count_stream(self, transport: Transport, scope: str | None, step: int) -> None:
        with self._lock:
            for windows in self._windows(scope):
                windows.streams[transport] += step
            self.version += 1
        for exporter in self.exporters:
            if (count := getattr(exporter, "stream", None)) is not None:
                count(transport, step)
        self._changed()

    # -- from the observers ----------------------------------------------------------------------

    def _windows(self, scope: str | None) -> list[Windows]:
        """The process's windows and the scope's (made, or marked most recently active); under the lock."""
        if scope is None:
            return [self._process]
        windows = self._scopes.get(scope)
        if windows is None:
            windows = self._scopes[scope] = Windows(track=self.sharing)
            while len(self._scopes) > self.max_scopes:
                self._scopes.popitem(last=False)
        else:
            self._scopes.move_to_end(scope)
        return [self._process, windows]

    def _turn_done(self, info: TurnInfo, event: DoneEvent) -> None:
        metrics, usage = event.metrics, event.usage
        now = self.clock()
        with self._lock:
            for windows in self._windows(info.scope):
                windows.active_turns -= 1
                for stats in windows.slots(now):
                    stats.turns += 1
                    stats.reasons[event.reason] += 1
                    stats.duration_ms.add(metrics.duration_ms)
                    if metrics.ttft_ms is not None:
                        stats.ttft_ms.add(metrics.ttft_ms)
                    if metrics.tokens_per_s is not None:
                        stats.tokens_per_s.add(metrics.tokens_per_s)
                    stats.tokens_in += usage.prompt_tokens or 0
                    stats.tokens_out += usage.completion_tokens or 0
            self.version += 1
            self.turns_ended += 1
        for exporter in self.exporters:
            exporter.turn_done(info, event)
        self._changed()

    def _turn_abandoned(self, info: TurnInfo) -> None:
        with self._lock:
            for windows in self._windows(info.scope):
                windows.active_turns -= 1
            self.version += 1
        for exporter in self.exporters:
            exporter.turn_abandoned(info)
        self._changed()

    def _tool(self, info: TurnInfo, event: ToolResultEvent, paused_ms: float) -> None:
        now = self.clock()
        name = info.tool_label(event.tool)
        with self._lock:
            for windows in self._windows(info.scope):
                for stats in windows.slots(now):
                    tool = stats.tool(name)
                    tool.calls += 1
                    tool.statuses[event.status] += 1
                    tool.duration_ms.add(event.duration_ms)
                    tool.paused_ms += paused_ms
                    if event.status != "ok":
                        tool.last_error, tool.last_error_at = f"{event.status}: {event.error}", now
            self.version += 1
        for exporter in self.exporters:
            exporter.tool_done(info, name, event.status, event.duration_ms)
        self._changed()

    def _error(self, info: TurnInfo, code: str) -> None:
        now = self.clock()
        with self._lock:
            for windows in self._windows(info.scope):
                for stats in windows.slots(now):
                    stats.errors[code if code in stats.errors or len(stats.errors) < MAX_LABELS else OTHER] += 1
            self.version += 1
        for exporter in self.exporters:
            exporter.error(info, code)
        self._changed()

    # -- readers ----------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (on the recording thread) after each change; returns the unsubscriber."""
        with self._lock:
            self._listeners = [*self._listeners, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [c for c in self._listeners if c is not callback]

        return unsubscribe

    def _changed(self) -> None:
        for callback in self._listeners:  # a copy-on-write list: safe to iterate unlocked
            callback()

    def summary(self, scope: str | None = None) -> dict[str, Any]:
        """The figures of one scope (None: the whole process) as JSON: windows, series, tools, live counts."""
        now = self.clock()
        with self._lock:
            windows = self._process if scope is None else self._scopes.get(scope, Windows())
            retries = sum(self._retries.values()) if scope is None else None
            return summarize(windows, now=now, version=self.version, retries=retries)

    # -- sharing with other processes (`streamchat.analytics.shared`) -----------------------------

    def share(self) -> None:
        """Note from now on which slots change, for `take_changes`."""
        with self._lock:
            self.sharing = True
            for windows in (self._process, *self._scopes.values()):
                if windows.touched is None:
                    windows.touched = set()

    def take_changes(self, *, everything: bool = False) -> Changes:
        """The slots changed since the last call (`everything`: every slot kept) and the live counts, as JSON."""
        slots: list[tuple[str | None, str, int, dict[str, Any]]] = []
        with self._lock:
            scopes: list[tuple[str | None, Windows]] = [(None, self._process), *self._scopes.items()]
            for scope, windows in scopes:
                for name in ("5m", "1h"):
                    window = windows.window(name)
                    for number, stats in window.slots.items():
                        if everything or (windows.touched is not None and (name, number) in windows.touched):
                            slots.append((scope, name, number, stats.to_dict()))
                if windows.touched is not None:
                    windows.touched.clear()
            live = {
                "process": self._process.live(),
                "scopes": {scope: windows.live() for scope, windows in self._scopes.items()},
                "retries": sum(self._retries.values()),
            }
        return slots, live

    def local(self, scope: str | None) -> tuple[Windows, int, int]:
        """A copy of one scope's windows (None: the process's), the retries and the version, to combine with others'."""
        with self._lock:
            windows = self._process if scope is None else self._scopes.get(scope, Windows())
            return windows.copy(), sum(self._retries.values()), self.version


def summarize(windows: Windows, *, now: float, version: int, retries: int | None) -> dict[str, Any]:
    """The summary JSON the dashboards draw, of `windows` at time `now`."""
    recent = windows.recent.merged(now)
    hour = windows.hour.merged(now)
    streams = windows.streams
    return {
        "version": version,
        "now": now,
        "relative_error": RELATIVE_ERROR,
        "active_turns": windows.active_turns,
        "open_streams": {"sse": streams.get("sse", 0), "websocket": streams.get("websocket", 0)},
        "sessions": windows.sessions,
        "retries": retries,
        "windows": {"5m": recent.summary(300), "1h": hour.summary(3600)},
        "series": _series(windows.hour.series(now), slot_s=windows.hour.slot_s),
        "tool_histogram": _tool_histogram(hour),
    }


def _series(slots: list[tuple[float, Stats | None]], *, slot_s: float) -> dict[str, Any]:
    """Per-slot columns for the charts: turns per minute, errors, TTFT p50/p95, tokens/s p50 (None: no data)."""
    columns: dict[str, list[Any]] = {
        "t": [],
        "turns_per_min": [],
        "failed": [],
        "ttft_p50_ms": [],
        "ttft_p95_ms": [],
        "tokens_per_s_p50": [],
    }
    for start, stats in slots:
        columns["t"].append(start)
        columns["turns_per_min"].append(0 if stats is None else stats.turns * 60 / slot_s)
        columns["failed"].append(0 if stats is None else stats.reasons.get("error", 0))
        columns["ttft_p50_ms"].append(None if stats is None else stats.ttft_ms.quantile(0.5))
        columns["ttft_p95_ms"].append(None if stats is None else stats.ttft_ms.quantile(0.95))
        columns["tokens_per_s_p50"].append(None if stats is None else stats.tokens_per_s.quantile(0.5))
    return {"slot_s": slot_s, **columns}


def _tool_histogram(stats: Stats) -> dict[str, Any]:
    """Tool calls per duration bar (`TOOL_HISTOGRAM_EDGES_MS`), in all and per tool."""
    bars = len(TOOL_HISTOGRAM_EDGES_MS) + 1

    def counts(histogram_items: Iterator[tuple[float, int]]) -> list[int]:
        row = [0] * bars
        for value, count in histogram_items:
            bar = next((i for i, edge in enumerate(TOOL_HISTOGRAM_EDGES_MS) if value <= edge), bars - 1)
            row[bar] += count
        return row

    per_tool = {name: counts(iter(tool.duration_ms)) for name, tool in stats.tools.items()}
    total = [sum(column) for column in zip(*per_tool.values(), strict=True)] if per_tool else [0] * bars
    return {"edges_ms": list(TOOL_HISTOGRAM_EDGES_MS), "total": total, "tools": per_tool}


_RECORDER: Recorder | None = None
_RECORDER_LOCK = threading.Lock()


def recorder() -> Recorder:
    """The process's recorder, with the Prometheus exporter (and OpenTelemetry spans when configured)."""
    global _RECORDER
    if _RECORDER is None:
        with _RECORDER_LOCK:
            if _RECORDER is None:
                from . import prometheus, tracing

                exporters = [exporter] if (exporter := prometheus.exporter()) is not None else []
                _RECORDER = Recorder(exporters=exporters, tracer=tracing.tracer())
    return _RECORDER
