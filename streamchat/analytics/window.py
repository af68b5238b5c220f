"""Rolling windows of turn and tool statistics, in bounded memory, mergeable by addition.

`Stats` adds up what happened in one time slot: turns by reason, error events by code,
histograms of TTFT, duration and tokens/s, token counts, and per tool its calls by
status, a duration histogram, the time it spent paused and its last error. Every field
merges by addition (the last error by its time), so the slots of a window, and later the
same slots from several server processes, combine into one `Stats`.

A `RollingWindow` keeps one `Stats` per slot of `slot_s` seconds over `span_s` seconds
(5 min in 10 s slots, 1 h in 1 min slots): memory is bounded by the slot count, the
histograms' bucket count and the caps on distinct tool names and error codes
(`MAX_LABELS`; more fold into ``_OTHER``, OpenTelemetry's name for such a bucket).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .histogram import LogHistogram

__all__ = ["MAX_LABELS", "OTHER", "RollingWindow", "Stats", "ToolStats", "capped"]

MAX_LABELS = 64
"""Most distinct tool names (and error codes) one `Stats` keeps apart."""
OTHER = "_OTHER"
"""The name everything past `MAX_LABELS` is counted under."""
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def capped(name: str, known: dict[str, Any] | Counter[str]) -> str:
    """`name`, or `OTHER` when `known` already holds `MAX_LABELS` other names."""
    return name if name in known or len(known) < MAX_LABELS else OTHER


def describe(histogram: LogHistogram) -> dict[str, float | None]:
    """Mean, p50, p95, p99 and max of a histogram, for JSON (None when empty)."""
    summary: dict[str, float | None] = {"avg": histogram.mean}
    for name, q in QUANTILES:
        summary[name] = histogram.quantile(q)
    summary["max"] = histogram.max if histogram.count else None
    return summary


@dataclass(slots=True)
class ToolStats:
    """One tool's calls in a slot or window."""

    calls: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    duration_ms: LogHistogram = field(default_factory=LogHistogram)
    paused_ms: float = 0.0
    last_error: str | None = None
    last_error_at: float = 0.0

    def merge(self, other: ToolStats) -> None:
        """Add `other`'s calls; the later of the two last errors wins."""
        self.calls += other.calls
        self.statuses.update(other.statuses)
        self.duration_ms.merge(other.duration_ms)
        self.paused_ms += other.paused_ms
        if other.last_error is not None and other.last_error_at >= self.last_error_at:
            self.last_error, self.last_error_at = other.last_error, other.last_error_at

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able state that `from_dict` reads back."""
        return {
            "calls": self.calls,
            "statuses": dict(self.statuses),
            "duration_ms": self.duration_ms.to_dict(),
            "paused_ms": self.paused_ms,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ToolStats:
        """The stats `to_dict` described."""
        return cls(
            calls=state["calls"],
            statuses=Counter(state["statuses"]),
            duration_ms=LogHistogram.from_dict(state["duration_ms"]),
            paused_ms=state["paused_ms"],
            last_error=state["last_error"],
            last_error_at=state["last_error_at"],
        )

    def summary(self, tool: str) -> dict[str, Any]:
        """This tool's row of the per-tool table."""
        ok = self.statuses.get("ok", 0)
        return {
            "tool": tool,
            "calls": self.calls,
            "ok": ok,
            "statuses": dict(self.statuses),
            "success_rate": ok / self.calls if self.calls else None,
            "duration_ms": describe(self.duration_ms),
            "paused_ms": self.paused_ms,
            "last_error": self.last_error,
        }


@dataclass(slots=True)
class Stats:
    """Everything recorded in one slot (or a merged window): turns, errors, timings, tools."""

    turns: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    ttft_ms: LogHistogram = field(default_factory=LogHistogram)
    duration_ms: LogHistogram = field(default_factory=LogHistogram)
    tokens_per_s: LogHistogram = field(default_factory=LogHistogram)
    tokens_in: int = 0
    tokens_out: int = 0
    tools: dict[str, ToolStats] = field(default_factory=dict)

    def merge(self, other: Stats) -> None:
        """Add everything `other` counted."""
        self.turns += other.turns
        self.reasons.update(other.reasons)
        self.errors.update(other.errors)
        self.ttft_ms.merge(other.ttft_ms)
        self.duration_ms.merge(other.duration_ms)
        self.tokens_per_s.merge(other.tokens_per_s)
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        for name, tool in other.tools.items():
            mine = self.tools.get(name)
            if mine is None:
                mine = self.tools[name] = ToolStats()
            mine.merge(tool)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able state that `from_dict` reads back: what another process (or a shared store) merges."""
        return {
            "turns": self.turns,
            "reasons": dict(self.reasons),
            "errors": dict(self.errors),
            "ttft_ms": self.ttft_ms.to_dict(),
            "duration_ms": self.duration_ms.to_dict(),
            "tokens_per_s": self.tokens_per_s.to_dict(),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tools": {name: tool.to_dict() for name, tool in self.tools.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Stats:
        """The stats `to_dict` described."""
        return cls(
            turns=state["turns"],
            reasons=Counter(state["reasons"]),
            errors=Counter(state["errors"]),
            ttft_ms=LogHistogram.from_dict(state["ttft_ms"]),
            duration_ms=LogHistogram.from_dict(state["duration_ms"]),
            tokens_per_s=LogHistogram.from_dict(state["tokens_per_s"]),
            tokens_in=state["tokens_in"],
            tokens_out=state["tokens_out"],
            tools={name: ToolStats.from_dict(tool) for name, tool in state["tools"].items()},
        )

    def tool(self, name: str) -> ToolStats:
        """The stats of tool `name` (or of `OTHER` once `MAX_LABELS` tools are kept)."""
        name = capped(name, self.tools)
        stats = self.tools.get(name)
        if stats is None:
            stats = self.tools[name] = ToolStats()
        return stats

    def summary(self, span_s: float) -> dict[str, Any]:
        """The window's figures for JSON: counts, rate per minute, error rate, percentiles, per tool."""
        failed = self.reasons.get("error", 0)
        return {
            "turns": self.turns,
            "turns_per_min": self.turns * 60 / span_s,
            "reasons": dict(self.reasons),
            "errors": dict(self.errors),
            "error_rate": failed / self.turns if self.turns else None,
            "ttft_ms": describe(self.ttft_ms),
            "duration_ms": describe(self.duration_ms),
            "tokens_per_s": describe(self.tokens_per_s),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tool_calls": sum(t.calls for t in self.tools.values()),
            "tools": sorted((t.summary(name) for name, t in self.tools.items()), key=lambda row: -row["calls"]),
        }


class RollingWindow:
    """`Stats` per slot of `slot_s` seconds over the last `span_s` seconds.

    Example:
        >>> window = RollingWindow(span_s=300, slot_s=10)
        >>> window.at(1000.0).turns += 1
        >>> window.merged(now=1290.0).turns, window.merged(now=1300.0).turns
        (1, 0)
    """

    def __init__(self, span_s: float, slot_s: float) -> None:
        if span_s % slot_s:
            raise ValueError("a window's span must be a whole number of slots")
        self.span_s = span_s
        self.slot_s = slot_s
        self.slots_kept = int(span_s // slot_s)
        self.slots: dict[int, Stats] = {}
        """`Stats` by slot number (time // slot_s); at most `slots_kept` of them."""

    def at(self, now: float) -> Stats:
        """The stats of the slot holding time `now` (older slots past the span are dropped)."""
        number = math.floor(now / self.slot_s)
        stats = self.slots.get(number)
        if stats is None:
            stats = self.slots[number] = Stats()
            oldest = number - self.slots_kept + 1
            for old in [n for n in self.slots if n < oldest]:
                del self.slots[old]
        return stats

    def _numbers(self, now: float) -> range:
        newest = math.floor(now / self.slot_s)
        return range(newest - self.slots_kept + 1, newest + 1)

    def merged(self, now: float) -> Stats:
        """Everything recorded in the slots of the last `span_s` seconds before `now`."""
        total = Stats()
        for number in self._numbers(now):
            if (stats := self.slots.get(number)) is not None:
                total.merge(stats)
        return total

    def series(self, now: float) -> list[tuple[float, Stats | None]]:
        """(slot start time, its stats or None when nothing happened) for each slot of the span, oldest first."""
        return [(number * self.slot_s, self.slots.get(number)) for number in self._numbers(now)]
