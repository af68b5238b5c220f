"""Helpers shared by the core tests: collecting streams and checking the event guarantees (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import AsyncIterator
from typing import Any

from streamchat import ChatSession, DoneEvent, Event, TokenEvent, ToolCallEvent, ToolResultEvent


async def collect(session: ChatSession, message: str) -> list[Event]:
    """All events of one turn."""
    return [event async for event in session.stream(message)]


def brief(events: list[Event]) -> list[tuple[Any, ...]]:
    """Events reduced to their deterministic fields, for exact sequence assertions."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        if e.type == "thinking":
            out.append(("thinking", e.kind, e.text))
        elif e.type == "token":
            out.append(("token", e.content))
        elif e.type == "tool_call":
            out.append(("tool_call", e.call_id, e.tool, e.args))
        elif e.type == "tool_progress":
            out.append(("tool_progress", e.call_id, e.message, e.stage, e.percent))
        elif e.type == "tool_result":
            out.append(("tool_result", e.call_id, e.status, e.result if e.status == "ok" else e.error))
        elif e.type == "error":
            out.append(("error", e.code, e.message))
        elif e.type == "done":
            out.append(("done", e.reason, e.text))
    return out


def check_invariants(events: list[Event]) -> None:
    """Assert the guarantees every turn gives."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({(e.session_id, e.turn_id) for e in events}) == 1
    dones = [e for e in events if isinstance(e, DoneEvent)]
    assert len(dones) == 1 and events[-1] is dones[0]
    calls = [e.call_id for e in events if isinstance(e, ToolCallEvent)]
    results = [e.call_id for e in events if isinstance(e, ToolResultEvent)]
    assert sorted(calls) == sorted(results) and len(set(calls)) == len(calls)
    for call_id in calls:
        call_at = next(i for i, e in enumerate(events) if isinstance(e, ToolCallEvent) and e.call_id == call_id)
        result_at = next(i for i, e in enumerate(events) if isinstance(e, ToolResultEvent) and e.call_id == call_id)
        assert call_at < result_at
        progress_at = [
            i
            for i, e in enumerate(events)
            if e.type == "tool_progress" and e.call_id == call_id  # type: ignore[union-attr]
        ]
        assert all(call_at < i < result_at for i in progress_at)
    assert "".join(e.content for e in events if isinstance(e, TokenEvent)) == dones[0].text


async def agen(items: list[Any]) -> AsyncIterator[Any]:
    """An async iterator over `items` (for scripted callables)."""
    for item in items:
        yield item


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: when nothing is ready to run, time jumps to the next timer.

    Timeouts and sleeps then take no real time and never race the machine's load: a test
    can pause a tool for longer than its timeout with `await asyncio.sleep(…)`. Only for
    code that waits on nothing but the loop (no threads, no sockets): the clock would jump
    past a timer while a thread or a peer is still working.
    """

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        """The virtual time, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass."""
        self._now += seconds


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; when nothing is ready before the next timer, moves the clock to it."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # no timer pending: wait for real (the loop's own wake-up pipe)
            return super().select(None)
        ready = super().select(0)
        if not ready and timeout > 0:
            self._loop.advance(timeout)
        return ready
