"""`dashboard()`: the kernel's own turn and tool metrics in a notebook output, updated in place.

The output is a plain display bundle (HTML with inline SVG charts, Markdown, plain text)
shown with a `display_id`; each change the process's recorder reports redraws it through
that id. No widget is involved, so what a saved notebook, nbconvert or a Git forge shows
is the last rendering, with no kernel (the idea of `streamchat.notebook.document`).

Redraws are throttled to one per `MIN_INTERVAL` seconds; a change that counts a finished
turn redraws at once, on the thread that recorded it: that is the thread running the
cell's `chat()` turn, so the update belongs to that cell's request (the kernel and
nbclient route it there, and nbclient applies it to the dashboard's output wherever it
is). The figures are `Recorder.summary()` of the whole process (this kernel's sessions).
"""

from __future__ import annotations

import contextvars
import html
import threading
import time
from typing import Any, Literal

from IPython.display import DisplayHandle, display

from ..analytics import Recorder, recorder

__all__ = ["Dashboard", "dashboard", "render_dashboard"]

MIN_INTERVAL = 0.5
"""Shortest time between two redraws, in seconds, unless a turn finished."""

_FG = "var(--jp-ui-font-color1, #1f2328)"
_MUTED = "var(--jp-ui-font-color2, #59636e)"
_LINE = "var(--jp-border-color2, #d1d9e0)"
_ACCENT = "var(--jp-brand-color1, #0969da)"
_ACCENT2 = "var(--jp-warn-color1, #bf8700)"
_BAD = "var(--jp-error-color1, #cf222e)"
_PANEL = "border:1px solid " + _LINE + ";border-radius:6px;padding:6px 10px"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1000:
        return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def _axis(top: float) -> str:
    """The label of a chart's largest value: 84,438 rather than 8.444e+04."""
    return f"{top:,.0f}" if top >= 100 else f"{top:.3g}"


def _line_chart(columns: list[list[float | None]], colors: list[str], *, width: int = 340, height: int = 110) -> str:
    """An SVG line chart of equally spaced points (None: a gap), y from 0 to the largest value."""
    top = max((v for column in columns for v in column if v is not None), default=0.0) or 1.0
    count = max(len(column) for column in columns)
    step = (width - 8) / max(count - 1, 1)  # room for the newest point's dot
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 14}" role="img">',
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="{_LINE}"/>',
        f'<text x="2" y="10" font-size="10" fill="{_MUTED}">{_axis(top)}</text>',
        f'<text x="2" y="{height + 12}" font-size="10" fill="{_MUTED}">−60 min</text>',
        f'<text x="{width - 24}" y="{height + 12}" font-size="10" fill="{_MUTED}">now</text>',
    ]
    for column, color in zip(columns, colors, strict=True):
        points = [(i * step, height - (v / top) * (height - 14)) for i, v in enumerate(column) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in points)
    parts.append("</svg>")
    return "".join(parts)


def _bar_chart(values: list[float], labels: list[str], color: str, *, width: int = 340, height: int = 110) -> str:
    """An SVG bar chart, with a label under every other bar when given."""
    top = max(values, default=0.0) or 1.0
    slot = width / max(len(values), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 14}" role="img">',
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="{_LINE}"/>',
        f'<text x="2" y="10" font-size="10" fill="{_MUTED}">{_axis(top)}</text>',
    ]
    for i, value in enumerate(values):
        bar = (value / top) * (height - 14)
        if bar:
            parts.append(
                f'<rect x="{i * slot + 1:.1f}" y="{height - bar:.1f}" width="{max(slot - 2, 1):.1f}" '
                f'height="{bar:.1f}" fill="{color}"/>'
            )
    for i, label in enumerate(labels):
        if label and i % 2 == 0:
            parts.append(
                f'<text x="{i * slot:.1f}" y="{height + 12}" font-size="9" fill="{_MUTED}">{html.escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def render_dashboard(summary: dict[str, Any], *, window: Literal["5m", "1h"] = "1h") -> dict[str, str]:
    """A summary (`Recorder.summary()`) as a display bundle: ``text/html`` with SVG charts, Markdown, plain text."""
    w = summary["windows"][window]
    errors = sum(w["errors"].values())
    streams = summary["open_streams"]["sse"] + summary["open_streams"]["websocket"]
    tiles = [
        ("Turns", str(w["turns"]), f"{w['turns_per_min']:.2f} per minute"),
        ("TTFT p50", _ms(w["ttft_ms"]["p50"]), "time to first token"),
        ("TTFT p95", _ms(w["ttft_ms"]["p95"]), f"p99 {_ms(w['ttft_ms']['p99'])}"),
        ("Tokens/s", _rate(w["tokens_per_s"]["p50"]), "median of turns"),
        ("Error rate", _pct(w["error_rate"]), f"{w['reasons'].get('error', 0)} failed turns, {errors} errors"),
        ("Active", str(summary["active_turns"]), f"turns running, {streams} streams"),
    ]
    span = "last 5 minutes" if window == "5m" else "last hour"
    tile_html = "".join(
        f'<div style="{_PANEL};min-width:110px"><div style="color:{_MUTED};font-size:11px">{label}</div>'
        f'<div class="streamchat-kpi" data-kpi="{label}" style="font-size:20px;font-weight:600">{value}</div>'
        f'<div style="color:{_MUTED};font-size:11px">{sub}</div></div>'
        for label, value, sub in tiles
    )
    series, histogram = summary["series"], summary["tool_histogram"]
    edges = histogram["edges_ms"]
    bar_labels = [f"≤{_ms(edge)}" for edge in edges] + [f">{_ms(edges[-1])}"]
    charts = [
        (
            "Time to first token (p50, p95), last hour",
            _line_chart([series["ttft_p50_ms"], series["ttft_p95_ms"]], [_ACCENT, _ACCENT2]),
        ),
        ("Tokens per second (p50), last hour", _line_chart([series["tokens_per_s_p50"]], [_ACCENT])),
        ("Turns per minute, last hour", _bar_chart(series["turns_per_min"], [], _ACCENT)),
        ("Tool call durations, last hour", _bar_chart(histogram["total"], bar_labels, _ACCENT)),
    ]
    chart_html = "".join(
        f'<figure style="{_PANEL};margin:0"><figcaption style="color:{_MUTED};font-size:11px">{title}</figcaption>'
        f"{svg}</figure>"
        for title, svg in charts
    )
    head = ("Tool", "Calls", "Success", "Avg", "p95", "Paused", "Last error")
    rows = [
        (
            row["tool"],
            str(row["calls"]),
            _pct(row["success_rate"]),
            _ms(row["duration_ms"]["avg"]),
            _ms(row["duration_ms"]["p95"]),
            _ms(row["paused_ms"]) if row["paused_ms"] else "–",
            row["last_error"] or "",
        )
        for row in w["tools"]
    ]
    cell = f"padding:2px 8px;border-bottom:1px solid {_LINE};text-align:left"
    table_html = (
        '<table class="streamchat-tools" style="border-collapse:collapse">'
        + "<tr>"
        + "".join(f'<th style="{cell};color:{_MUTED}">{h}</th>' for h in head)
        + "</tr>"
        + "".join(
            f'<tr data-tool="{html.escape(r[0])}">'
            + "".join(f'<td style="{cell}">{html.escape(v)}</td>' for v in r)
            + "</tr>"
            for r in rows
        )
        + "</table>"
        if rows
        else f'<p style="color:{_MUTED}">No tool calls in the {span}.</p>'
    )
    note = f"This kernel's sessions, {span}; percentiles within {summary['relative_error']:.0%}."
    page = (
        f'<div class="streamchat-dashboard" style="color:{_FG};font-size:13px">'
        f'<div style="display:flex;gap:8px;flex-wrap:wrap">{tile_html}</div>'
        f'<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:8px;margin:8px 0">'
        f"{chart_html}</div>{table_html}"
        f'<p style="color:{_MUTED};font-size:11px">{html.escape(note)}</p></div>'
    )
    text_lines = [f"streamchat dashboard: {note}"]
    text_lines += [f"  {label}: {value} ({sub})" for label, value, sub in tiles]
    markdown = [f"**streamchat dashboard** — {note}", "", "| " + " | ".join(t[0] for t in tiles) + " |"]
    markdown += ["|" + "---|" * len(tiles), "| " + " | ".join(t[1] for t in tiles) + " |"]
    if rows:
        text_lines.append("  " + " | ".join(head))
        text_lines += ["  " + " | ".join(r) for r in rows]
        markdown += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        markdown += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
    return {"text/html": page, "text/markdown": "\n".join(markdown), "text/plain": "\n".join(text_lines)}


class Dashboard:
    """A dashboard output: redraws in place (through its display id) as the recorder reports changes."""

    def __init__(self, source: Recorder, *, window: Literal["5m", "1h"] = "1h") -> None:
        if window not in ("5m", "1h"):
            raise ValueError(f"window is '5m' or '1h', not {window!r}")
        self.window: Literal["5m", "1h"] = window
        self._recorder = source
        self._lock = threading.Lock()
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self._turns = source.turns_ended
        summary = source.summary()
        handle = display(render_dashboard(summary, window=window), raw=True, display_id=True)  # type: ignore[no-untyped-call]
        assert isinstance(handle, DisplayHandle)
        self.handle = handle
        """The output's display handle (its `display_id` names the output)."""
        self._last = time.monotonic()
        self._unsubscribe = source.subscribe(self._changed)

    def _changed(self) -> None:
        context = contextvars.copy_context()  # the kernel's request this change belongs to
        with self._lock:
            wait = self._last + MIN_INTERVAL - time.monotonic()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if wait > 0 and self._recorder.turns_ended == self._turns:
                self._timer = threading.Timer(wait, context.run, (self.refresh,))
                self._timer.daemon = True
                self._timer.start()
                return
        self.refresh()

    def refresh(self) -> None:
        """Redraw now."""
        with self._lock:
            self._turns = self._recorder.turns_ended
            summary = self._recorder.summary()
            self._last = time.monotonic()
            self.handle.update(render_dashboard(summary, window=self.window), raw=True)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop redrawing; the output keeps its last rendering."""
        self._unsubscribe()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def dashboard(*, window: Literal["5m", "1h"] = "1h") -> Dashboard:
    """Show this kernel's turn and tool metrics (tiles, charts, per-tool table), updated live as turns end.

    Example:
        >>> board = dashboard()  # doctest: +SKIP
        >>> chat("What is 6 * 7?")  # doctest: +SKIP
        >>> board.close()  # doctest: +SKIP
    """
    return Dashboard(recorder(), window=window)
