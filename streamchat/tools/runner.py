"""Running one tool call: argument validation, the four tool shapes, progress, pause,
resume, cancel and timeout. The agent loop starts one `ToolCallRun` per call and runs
them concurrently.

Sync tools (plain functions and sync generators) run in `ToolThreads`, a bounded pool of
their own, never in the event loop's default executor: asyncio resolves host names
(`getaddrinfo`) in that executor, so sync tools stuck there would stall every HTTP
request of the process. A thread cannot be stopped, so a call that timed out keeps its
thread until its function returns; the bound keeps such threads from piling up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from .._text import EncodableText, EncodableValue
from ..errors import ToolError
from ..events import ToolStatus
from ..settings import Settings
from .definition import Progress, ProgressReporter, Tool, format_validation_error

__all__ = ["ToolCallRun", "ToolOutcome", "ToolThreads"]

_EXHAUSTED = object()


class ToolThreads:
    """A bounded pool of worker threads for sync tools (see the module docs).

    A call that finds every thread busy waits for one; the wait counts towards the call's
    timeout, and a call that times out while waiting never starts. `shared(size)` gives
    the process's pool of that size, so every session configured alike shares one bound.
    """

    _shared: ClassVar[dict[int, ToolThreads]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a tool thread pool needs at least one thread")
        self.size = size
        """How many sync tool calls run at once; later ones wait."""
        self._executor = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix="streamchat-tool")

    @classmethod
    def shared(cls, size: int) -> ToolThreads:
        """The process-wide pool of `size` threads, made on first use."""
        with cls._shared_lock:
            pool = cls._shared.get(size)
            if pool is None:
                pool = cls._shared[size] = cls(size)
            return pool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run `fn(*args, **kwargs)` in a pool thread once one is free.

        It runs in a copy of the caller's context variables, as with `asyncio.to_thread`.
        """
        context = contextvars.copy_context()
        return self._executor.submit(context.run, fn, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<ToolThreads size={self.size}>"


class ToolOutcome(BaseModel):
    """How a call ended. Lone surrogates in a tool's result or error become U+FFFD."""

    status: ToolStatus
    result: EncodableValue = None
    error: EncodableText | None = None
    duration_ms: float


def _next_or_exhausted(gen: Iterator[Any]) -> Any:
    return next(gen, _EXHAUSTED)


class ToolCallRun:
    """One call of one tool, controllable while it runs; a tool that asks for `Settings` gets `settings`.

    `pause()` holds the call at its next progress report, `resume()` releases it,
    `cancel()` raises `asyncio.CancelledError` inside it. A timeout (seconds of
    unpaused running time) ends it with status `timeout`.
    """

    def __init__(
        self,
        call_id: str,
        tool: Tool | None,
        tool_name: str,
        args: dict[str, Any],
        *,
        emit: Callable[[Progress], None],
        timeout: float | None,
        settings: Settings,
        invalid_args: str | None = None,
        threads: ToolThreads | None = None,
    ) -> None:
        self.call_id = call_id
        self.tool = tool
        self.tool_name = tool_name
        self.args = args
        self.invalid_args = invalid_args
        self.settings = settings
        self.timeout = tool.timeout if tool is not None and tool.timeout is not None else timeout
        self.threads = threads or ToolThreads.shared(Settings.model_fields["tool_threads"].default)
        self._emit = emit
        self._thread_started = False  # set by the pool thread once the function (or a generator step) runs
        self._reporter: ProgressReporter | None = None
        self._inner: asyncio.Task[Any] | None = None
        self._state_changed = asyncio.Event()
        self.paused = False
        self.cancel_requested = False

    # -- control, from any task on the loop ---------------------------------------------

    def pause(self) -> bool:
        """Hold the call at its next progress report. False if it is not running."""
        if self._inner is None or self._inner.done():
            return False
        return self._set_paused(True)

    def resume(self) -> bool:
        """Release a paused call. False if it was not paused."""
        return self._set_paused(False)

    def _set_paused(self, paused: bool) -> bool:
        if self.paused == paused:
            return False
        self.paused = paused
        assert self._reporter is not None
        self._reporter._set_paused(paused)
        assert self.tool is not None
        self._emit(
            Progress(self.tool.pause_message, stage="paused") if paused else Progress("Resumed", stage="resumed")
        )
        self._state_changed.set()
        return True

    def cancel(self) -> bool:
        """Cancel the call; it ends with status `cancelled`. False if it already ended."""
        if self._inner is not None and self._inner.done():
            return False
        self.cancel_requested = True
        if self._reporter is not None:
            self._reporter._cancel()
        if self._inner is not None:
            self._inner.cancel()
        self._state_changed.set()
        return True

    # -- running --------------------------------------------------------------------------

    async def run(self) -> ToolOutcome:
        """Run the call to its end and describe the outcome; never raises for tool failures."""
        start = time.perf_counter()

        def outcome(status: ToolStatus, result: Any = None, error: str | None = None) -> ToolOutcome:
            return ToolOutcome(
                status=status, result=result, error=error, duration_ms=(time.perf_counter() - start) * 1000
            )

        if self.tool is None:
            return outcome("error", error=f"unknown tool {self.tool_name!r}")
        if self.invalid_args is not None:
            return outcome("error", error=f"invalid arguments: {self.invalid_args}")
        try:
            args = self.tool.validate_args(self.args)
        except ValidationError as exc:
            return outcome("error", error=format_validation_error(exc))
        except ToolError as exc:  # a tool that checks its arguments itself (an MCP server's schema)
            return outcome("error", error=exc.message)
        if self.cancel_requested:
            return outcome("cancelled", error="cancelled before it started")

        loop = asyncio.get_running_loop()
        self._reporter = ProgressReporter(self._emit, loop)
        if self.tool.reporter_param is not None:
            args[self.tool.reporter_param] = self._reporter
        if self.tool.settings_param is not None:
            args[self.tool.settings_param] = self.settings
        self._inner = loop.create_task(self._invoke(self.tool, args), name=f"tool {self.tool_name} {self.call_id}")
        try:
            timed_out = await self._supervise()
        except asyncio.CancelledError:
            # The whole turn is being cancelled: let the tool see CancelledError too.
            self.cancel()
            await asyncio.gather(self._inner, return_exceptions=True)
            raise
        inner = self._inner
        if timed_out:
            if self.tool.kind in ("sync", "generator") and not self._thread_started:
                return outcome(
                    "timeout",
                    error=f"timed out after {self.timeout:g} s waiting for a free tool thread "
                    f"(all {self.threads.size} were busy)",
                )
            return outcome("timeout", error=f"timed out after {self.timeout:g} s")
        if inner.cancelled():
            return outcome("cancelled", error="cancelled")
        failure = inner.exception()
        if failure is None:
            return outcome("ok", result=inner.result())
        if isinstance(failure, ToolError):
            return outcome("error", error=failure.message)
        return outcome("error", error=f"{type(failure).__name__}: {failure}")

    async def _supervise(self) -> bool:
        """Wait for the inner task, counting only unpaused time against the timeout."""
        assert self._inner is not None
        clock = asyncio.get_running_loop().time  # the clock `asyncio.wait`'s timeout runs on
        remaining = self.timeout
        while not self._inner.done():
            self._state_changed.clear()
            changed = asyncio.ensure_future(self._state_changed.wait())
            was_paused = self.paused
            began = clock()
            try:
                await asyncio.wait(
                    {self._inner, changed},
                    timeout=None if was_paused or remaining is None else remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                changed.cancel()
            if remaining is not None and not was_paused:
                remaining -= clock() - began
                if remaining <= 0 and not self._inner.done():
                    self._inner.cancel()
                    await asyncio.gather(self._inner, return_exceptions=True)
                    return not self.cancel_requested
        return False

    async def _invoke(self, tool: Tool, args: dict[str, Any]) -> Any:
        assert self._reporter is not None
        fn = tool.function
        if tool.kind == "async":
            return await fn(**args)
        if tool.kind == "sync":
            # Cancelling the wrapper cancels a call still waiting for a thread; a running one goes on.
            return await asyncio.wrap_future(self.threads.submit(self._in_thread, fn, **args))
        if tool.kind == "async_generator":
            return await self._drain_async(fn(**args))
        return await self._drain_sync(fn(**args))

    async def _drain_async(self, gen: AsyncIterator[Any]) -> Any:
        assert self._reporter is not None
        result: Any = None
        try:
            async for item in gen:
                if isinstance(item, Progress):
                    self._emit(item)
                    await self._reporter.hold()
                else:
                    result = item
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
        return result

    def _in_thread(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self._thread_started = True
        return fn(*args, **kwargs)

    async def _drain_sync(self, gen: Any) -> Any:
        assert self._reporter is not None
        result: Any = None
        while True:
            step = self.threads.submit(self._in_thread, _next_or_exhausted, gen)
            try:
                item = await asyncio.wrap_future(step)
            except asyncio.CancelledError:
                # A step still waiting for a thread never runs; one running in its thread
                # goes on, and the generator is closed once it yields (closing it earlier
                # would raise "generator already executing"); what it raised meanwhile is
                # dropped, so no error is left unretrieved: the call was cancelled.
                if step.cancel():
                    gen.close()
                else:
                    step.add_done_callback(lambda done: (done.cancelled() or done.exception(), gen.close()))
                raise
            if item is _EXHAUSTED:
                return result
            if isinstance(item, Progress):
                self._emit(item)
                try:
                    await self._reporter.hold()
                except asyncio.CancelledError:
                    gen.close()
                    raise
            else:
                result = item
