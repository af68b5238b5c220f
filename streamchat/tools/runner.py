"""Running one tool call: argument validation, the four tool shapes, progress, pause,
resume, cancel and timeout. The agent loop starts one `ToolCallRun` per call and runs
them concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ToolError
from ..events import ToolStatus
from .definition import Progress, ProgressReporter, Tool, format_validation_error

__all__ = ["ToolCallRun", "ToolOutcome"]

_EXHAUSTED = object()


class ToolOutcome(BaseModel):
    """How a call ended."""

    status: ToolStatus
    result: Any = None
    error: str | None = None
    duration_ms: float


def _next_or_exhausted(gen: Iterator[Any]) -> Any:
    return next(gen, _EXHAUSTED)


class ToolCallRun:
    """One call of one tool, controllable while it runs.

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
        invalid_args: str | None = None,
    ) -> None:
        self.call_id = call_id
        self.tool = tool
        self.tool_name = tool_name
        self.args = args
        self.invalid_args = invalid_args
        self.timeout = tool.timeout if tool is not None and tool.timeout is not None else timeout
        self._emit = emit
        self._reporter: ProgressReporter | None = None
        self._inner: asyncio.Task[Any] | None = None
        self._state_changed = asyncio.Event()
        self.paused = False
        self.cancel_requested = False

    # -- control, from any task on the loop ---------------------------------------------

    def pause(self) -> bool:
        """Hold the call at its next progress report. False if it is not running."""
        if self._inner is None or self._inner.done() or self.paused:
            return False
        self.paused = True
        assert self._reporter is not None
        self._reporter._set_paused(True)
        self._emit(Progress("Paused", stage="paused"))
        self._state_changed.set()
        return True

    def resume(self) -> bool:
        """Release a paused call. False if it was not paused."""
        if not self.paused:
            return False
        self.paused = False
        assert self._reporter is not None
        self._reporter._set_paused(False)
        self._emit(Progress("Resumed", stage="resumed"))
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
        if self.cancel_requested:
            return outcome("cancelled", error="cancelled before it started")

        loop = asyncio.get_running_loop()
        self._reporter = ProgressReporter(self._emit, loop)
        if self.tool.reporter_param is not None:
            args[self.tool.reporter_param] = self._reporter
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
        remaining = self.timeout
        while not self._inner.done():
            self._state_changed.clear()
            changed = asyncio.ensure_future(self._state_changed.wait())
            was_paused = self.paused
            began = time.perf_counter()
            try:
                await asyncio.wait(
                    {self._inner, changed},
                    timeout=None if was_paused or remaining is None else remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                changed.cancel()
            if remaining is not None and not was_paused:
                remaining -= time.perf_counter() - began
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
            return await asyncio.to_thread(fn, **args)
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

    async def _drain_sync(self, gen: Any) -> Any:
        assert self._reporter is not None
        loop = asyncio.get_running_loop()
        result: Any = None
        while True:
            step = loop.run_in_executor(None, _next_or_exhausted, gen)
            try:
                item = await asyncio.shield(step)
            except asyncio.CancelledError:
                # The generator may still be running in its thread: close it once it yields
                # (what it raised meanwhile is dropped: the call was cancelled).
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
