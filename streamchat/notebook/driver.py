"""`TurnDriver`: one turn into one view — pump, coalesce, render — shared by every notebook entry point.

`chat()`, `achat()` / `consume()` and `ChatWidget` all show a turn the same way: a pump
iterates `ChatSession.stream()` and puts each event on a queue; the renderer takes them off,
merges bursts (`Coalescer`, every `UPDATE_INTERVAL`), collects the `ChatResult` and
hands each event to the view. The driver object holds that shared part; two thin loops
wait on it, as httpx pairs `Client` and `AsyncClient`:

- `run()` (`chat()`, a sync call in a cell): the pump runs on streamchat's private loop in
  its worker thread (`streamchat._sync`) and the events cross to the calling thread through
  a thread-safe `queue.Queue`. The calling thread renders, so every widget update and
  display message carries the cell's parent header. Ctrl-C (a kernel interrupt) cancels the
  turn and the view shows "stopped"; a second Ctrl-C stops waiting for a clean end.
- `arun()` (`achat()`, `consume()`, `ChatWidget`'s turns): the pump is a task on the running
  loop and the events go through an `asyncio.Queue`; the same loop renders. Cancelling the
  awaiting task cancels the pump and the view shows "stopped".

In both, the queue wait's timeout is the coalescer's deadline, so merged text goes out on
time even when no new event comes; the end of the pump (also when it failed or was
cancelled before it ran) puts an end marker, after which the pump's failure, if any, is
raised to the caller.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from typing import Protocol

from .. import _sync
from ..events import Event
from ..result import ChatResult, ResultCollector
from ..session import ChatSession
from .render import Coalescer

__all__ = ["Renderer", "TurnDriver"]

_END = object()
_IDLE_WAIT = 0.2  # seconds between checks for Ctrl-C while nothing is pending (sync loop)
UPDATE_INTERVAL = 0.07
"""Seconds between coalesced flushes: about 14 a second, which leaves room under 20 widget updates a second
for a turn's one-off updates (status line, a new answer part or card, the Stop button)."""


class Renderer(Protocol):
    """What a turn is shown with: `ChatView`, the document-leaving `LiveDisplay`, or plain text."""

    merges_progress: bool

    def handle(self, event: Event) -> None: ...
    def stopped(self) -> None: ...


class TurnDriver:
    """One turn of `session` answering `message`, shown in `view`; `run()` or `await arun()` it once.

    Example:
        >>> # result = await TurnDriver(session, "Hi", ChatView("Hi")).arun()
    """

    def __init__(self, session: ChatSession, message: str, view: Renderer) -> None:
        self.session = session
        self.message = message
        self.view = view
        """Where the turn's events are rendered."""
        self.collector = ResultCollector()
        self.coalescer = Coalescer(UPDATE_INTERVAL, merge_progress=view.merges_progress)

    async def _pump(self, put: Callable[[object], None]) -> None:
        async for event in self.session.stream(self.message):
            put(event)

    def _take(self, item: object) -> bool:
        """Show what `item` brings (None: the wait for one timed out); False once the events have ended."""
        ended = item is _END
        events = self.coalescer.flush() if item is None or ended else self.coalescer.push(item)  # type: ignore[arg-type]
        for event in events:
            self.collector.add(event)
            self.view.handle(event)
        return not ended

    def run(self) -> ChatResult:
        """Stream the turn on the private loop and render it on this thread; the turn's `ChatResult`.

        Raises `KeyboardInterrupt` after showing "stopped" when interrupted, and what the
        session raised for a refused turn (busy session, empty message).
        """
        events: queue.Queue[object] = queue.Queue()
        future = _sync.submit(self._pump(events.put))
        future.add_done_callback(lambda _: events.put(_END))  # also when cancelled before it ran
        interrupted = False
        while True:
            try:
                due = self.coalescer.due_in()
                try:
                    item = events.get(timeout=_IDLE_WAIT if due is None else due)
                except queue.Empty:
                    item = None
                if not self._take(item):
                    break
            except KeyboardInterrupt:
                if interrupted:  # a second Ctrl-C: stop waiting for a clean end
                    future.cancel()
                    raise
                interrupted = True
                if not self.session.cancel():  # the turn had not started yet
                    future.cancel()
        if interrupted:
            self.view.stopped()
            raise KeyboardInterrupt
        future.result()
        return self.collector.build()

    async def arun(self) -> ChatResult:
        """Stream and render the turn on the running loop; the turn's `ChatResult`.

        Cancelling the awaiting task stops the turn (the view shows "stopped"); a refused
        turn raises what the session raised.
        """
        events: asyncio.Queue[object] = asyncio.Queue()
        task = asyncio.get_running_loop().create_task(self._pump(events.put_nowait))
        task.add_done_callback(lambda _: events.put_nowait(_END))
        try:
            while True:
                try:
                    item = await asyncio.wait_for(events.get(), timeout=self.coalescer.due_in())
                except TimeoutError:
                    item = None
                if not self._take(item):
                    break
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.view.stopped()
            raise
        await task
        return self.collector.build()
