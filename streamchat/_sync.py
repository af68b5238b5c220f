"""Running the async core from sync code, without `nest_asyncio`.

Every sync call runs its coroutine on one long-lived private event loop in a daemon
worker thread, whether or not the calling thread has a running loop (in a Jupyter
kernel it always has one, and it is blocked while the cell runs). One loop for all sync
calls keeps a session's provider connections on the loop that opened them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_running", "private_loop", "run_sync", "submit"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def loop_running() -> bool:
    """Whether an event loop runs in this thread (then sync code must not wait for anything slow)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def private_loop() -> asyncio.AbstractEventLoop:
    """The private loop, started in its worker thread on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="streamchat-loop", daemon=True).start()
            _loop = loop
        return _loop


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start `coro` on the private loop; the returned future is thread-safe."""
    return asyncio.run_coroutine_threadsafe(coro, private_loop())


def wait(future: concurrent.futures.Future[T], *, on_interrupt: Callable[[], object] | None = None) -> T:
    """Wait for `future`; on Ctrl-C call `on_interrupt`, wait for the end, then re-raise.

    Waiting uses short timeouts because a lock wait is where `KeyboardInterrupt` (the
    kernel's interrupt button) is delivered. A second Ctrl-C cancels the future itself.
    """
    interrupted = False
    while not future.done():
        try:
            concurrent.futures.wait([future], timeout=0.2)
        except KeyboardInterrupt:
            if interrupted:
                future.cancel()
                raise
            interrupted = True
            (on_interrupt or future.cancel)()
    if interrupted:
        raise KeyboardInterrupt
    return future.result()


def run_sync(coro: Coroutine[Any, Any, T], *, on_interrupt: Callable[[], object] | None = None) -> T:
    """Run `coro` to completion from sync code and return its result.

    Ctrl-C while waiting calls `on_interrupt` (e.g. `session.cancel`) so the coroutine can
    end cleanly, waits for it, then raises `KeyboardInterrupt` as `asyncio.run` does.
    """
    return wait(submit(coro), on_interrupt=on_interrupt)
