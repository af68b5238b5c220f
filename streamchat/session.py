"""The agent loop: `ChatSession.stream(message)` → model → tools (in parallel) → model …

This is the only place that dispatches tools, keeps history and numbers events. Every
surface (notebook, widget, CLI, server) consumes `stream()` and only renders events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from .errors import SessionBusyError, StreamChatError, UsageError
from .events import (
    DoneEvent,
    DoneReason,
    ErrorEvent,
    Event,
    Metrics,
    ThinkingEvent,
    TokenEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
    ToolStatus,
    ToolTiming,
    Usage,
)
from .messages import Message, ToolCallRecord
from .providers import get_provider
from .providers.base import (
    FinishDelta,
    ModelRequest,
    NoticeDelta,
    Provider,
    TextDelta,
    ThinkingDelta,
    ToolCallPart,
    UsageDelta,
)
from .result import ChatResult, ResultCollector
from .settings import Settings
from .tools.builtin import BUILTIN_TOOLS
from .tools.definition import Progress, Tool, toolset
from .tools.runner import ToolCallRun, ToolOutcome

__all__ = ["ChatSession"]

THINKING_STATUS = "Thinking…"
# Backpressure: the producer waits once this many events are queued for a slow consumer,
# so a fast model does not pile a whole answer's events up in memory.
_QUEUE_HIGH_WATER = 256


def _new_id() -> str:
    return uuid.uuid4().hex


class ChatSession:
    """One conversation: its history, its tools, its provider, one turn at a time.

    Example:
        >>> import asyncio
        >>> from streamchat import ChatSession, ScriptedProvider
        >>> session = ChatSession(ScriptedProvider([["Hello", " there"]]), tools=[])
        >>> asyncio.run(session.send("hi")).text
        'Hello there'
    """

    def __init__(
        self,
        provider: Provider | str | None = None,
        *,
        model: str | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
        system: str | None = None,
        max_turns: int | None = None,
        tool_timeout: float | None = None,
        session_id: str | None = None,
        settings: Settings | None = None,
        history: Sequence[Message] = (),
    ) -> None:
        settings = settings or Settings()
        if isinstance(provider, Provider):
            if model is not None:
                raise UsageError("pass `model=` to the provider's constructor, not with a provider instance")
            self.provider = provider
        else:
            self.provider = get_provider(provider, model=model, settings=settings)
        self.tools: dict[str, Tool] = toolset(BUILTIN_TOOLS if tools is None else tools)
        self.system = system if system is not None else settings.system
        self.max_turns = max_turns if max_turns is not None else settings.max_turns
        if self.max_turns < 1:
            raise UsageError("max_turns must be at least 1")
        self.tool_timeout = tool_timeout if tool_timeout is not None else settings.tool_timeout
        self.session_id = session_id or _new_id()
        self._history: list[Message] = list(history)
        self._turn: _Turn | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def history(self) -> list[Message]:
        """A copy of the conversation so far (without the system prompt)."""
        return list(self._history)

    @property
    def busy(self) -> bool:
        """True while a turn is running."""
        return self._turn is not None

    def clear(self) -> None:
        """Forget the conversation. Refused while a turn runs: `cancel()` it first."""
        if self._turn is not None:
            raise SessionBusyError("a turn is running in this session: cancel it before clearing")
        self._history.clear()

    # -- control of the running turn (thread-safe) ------------------------------------------

    def cancel(self) -> bool:
        """Stop the running turn; it ends with `done(reason="cancelled")`. False if idle."""
        turn = self._turn
        return turn is not None and turn.call_on_loop(turn.cancel)

    def cancel_tool(self, call_id: str) -> bool:
        """Cancel one running tool call; its siblings go on. False if there is no such call."""
        turn = self._turn
        return turn is not None and turn.call_on_loop(lambda: turn.control(call_id, ToolCallRun.cancel))

    def pause_tool(self, call_id: str) -> bool:
        """Hold one tool call at its next progress report."""
        turn = self._turn
        return turn is not None and turn.call_on_loop(lambda: turn.control(call_id, ToolCallRun.pause))

    def resume_tool(self, call_id: str) -> bool:
        """Release a paused tool call."""
        turn = self._turn
        return turn is not None and turn.call_on_loop(lambda: turn.control(call_id, ToolCallRun.resume))

    # -- turns ---------------------------------------------------------------------------

    async def stream(self, message: str) -> AsyncIterator[Event]:
        """Send `message` and yield the turn's events as they happen; `done` comes last.

        Closing the stream early cancels the turn: wrap it in `contextlib.aclosing` and
        ``break``, or cancel the consuming task (a bare ``break`` leaves the closing to the
        event loop's async-generator finalizer, a moment later). The cancelled turn's
        partial answer is kept in history, marked as interrupted.

        Example:
            >>> async def show(session):
            ...     async for event in session.stream("What is 2 + 2?"):
            ...         print(event.type)
        """
        if not isinstance(message, str) or not message.strip():
            raise UsageError("the message must be a non-empty string")
        if self._turn is not None:
            raise SessionBusyError("this session is already answering a message: wait for it or cancel it")
        turn = _Turn(self, message)
        self._turn = turn
        task = asyncio.get_running_loop().create_task(turn.run(), name=f"streamchat turn {turn.turn_id}")
        turn.task = task
        try:
            while True:
                event = await turn.queue.get()
                if turn.queue.qsize() <= _QUEUE_HIGH_WATER // 2:
                    turn.space.set()
                yield event
                if event.type == "done":
                    break
        finally:
            turn.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._turn = None

    async def send(self, message: str) -> ChatResult:
        """Send `message`, wait for the whole turn and return its `ChatResult`."""
        result = ResultCollector()
        async for event in self.stream(message):
            result.add(event)
        return result.build()

    async def aclose(self) -> None:
        """Cancel any running turn and close the provider's connections."""
        self.cancel()
        await self.provider.aclose()


class _Turn:
    """The state of one running turn; lives only while `ChatSession.stream` runs."""

    def __init__(self, session: ChatSession, message: str) -> None:
        self.session = session
        self.turn_id = _new_id()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.space = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = False
        self.seq = 0
        self.messages: list[Message] = [Message(role="user", content=message)]
        self.runs: dict[str, ToolCallRun] = {}
        self.run_tasks: dict[str, asyncio.Task[ToolOutcome]] = {}
        self.unanswered: dict[str, ToolCallPart] = {}  # tool_call emitted, tool_result not yet
        self.answer: list[str] = []
        self.response_text: list[str] = []
        self.response_calls: list[ToolCallPart] = []
        self.response_open = False
        self.usage = Usage()
        self.timings: list[ToolTiming] = []
        self.model_calls = 0
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.token_count = 0
        self.backend_ms: float | None = None  # backend-reported timings (Ollama's durations)
        self.generation_ms = 0.0
        self.generated_tokens = 0

    # -- helpers -------------------------------------------------------------------------

    def emit(self, cls: type[Any], **fields: Any) -> None:
        self.seq += 1
        self.queue.put_nowait(cls(session_id=self.session.session_id, turn_id=self.turn_id, seq=self.seq, **fields))

    def call_on_loop(self, fn: Callable[[], bool]) -> bool:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            return fn()
        self.loop.call_soon_threadsafe(fn)
        return True

    def cancel(self) -> bool:
        # Once only: a second cancel would interrupt the clean-up (tool cancellation) of the first.
        if self.task is None or self.task.done() or self.cancel_requested:
            return False
        self.cancel_requested = True
        return self.task.cancel()

    def control(self, call_id: str, action: Callable[[ToolCallRun], bool]) -> bool:
        run = self.runs.get(call_id)
        return run is not None and action(run)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        reason: DoneReason = "error"
        try:
            reason = await self.converse()
        except asyncio.CancelledError:
            reason = "cancelled"
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            await self.stop_tools()
        except StreamChatError as exc:
            self.emit(ErrorEvent, message=exc.message, code=exc.code, retryable=exc.retryable)
        except Exception as exc:  # a bug or an unexpected library error: report it, keep the session usable
            self.emit(ErrorEvent, message=f"internal error: {type(exc).__name__}: {exc}", code="internal_error")
        finally:
            self.finish(reason)

    async def converse(self) -> DoneReason:
        session = self.session
        tools = tuple(t.definition for t in session.tools.values())
        for _ in range(session.max_turns):
            self.emit(ThinkingEvent, text=THINKING_STATUS, kind="status")
            system = [Message(role="system", content=session.system)] if session.system else []
            request = ModelRequest(
                messages=(*system, *session._history, *self.messages), tools=tools, session_id=session.session_id
            )
            self.model_calls += 1
            self.response_text, self.response_calls, self.response_open = [], [], True
            finish = "stop"
            async with contextlib.aclosing(session.provider.stream(request)) as deltas:
                async for delta in deltas:
                    if isinstance(delta, TextDelta):
                        if delta.text:
                            self.on_token(delta.text)
                    elif isinstance(delta, ToolCallPart):
                        self.response_calls.append(delta)
                        self.unanswered[delta.call_id] = delta
                        self.emit(ToolCallEvent, call_id=delta.call_id, tool=delta.name, args=delta.args)
                    elif isinstance(delta, ThinkingDelta):
                        self.emit(ThinkingEvent, text=delta.text, kind=delta.kind)
                    elif isinstance(delta, UsageDelta):
                        self.usage += Usage(
                            prompt_tokens=delta.prompt_tokens, completion_tokens=delta.completion_tokens
                        )
                        self.on_backend_timings(delta)
                    elif isinstance(delta, NoticeDelta):
                        self.emit(ErrorEvent, message=delta.message, code=delta.code, retryable=False)
                    elif isinstance(delta, FinishDelta):
                        finish = delta.reason
                    if self.queue.qsize() >= _QUEUE_HIGH_WATER:
                        self.space.clear()
                        await self.space.wait()
            calls = self.close_response(interrupted=False)
            if not calls:
                return "length" if finish == "length" else "stop"
            await self.run_tools(calls)
        return "max_turns"

    def on_backend_timings(self, usage: UsageDelta) -> None:
        if usage.backend_duration_ms is not None:
            self.backend_ms = (self.backend_ms or 0.0) + usage.backend_duration_ms
        if usage.generation_ms and usage.completion_tokens is not None:
            self.generation_ms += usage.generation_ms
            self.generated_tokens += usage.completion_tokens

    def on_token(self, text: str) -> None:
        now = time.perf_counter()
        if self.first_token is None:
            self.first_token = now
        self.last_token = now
        self.token_count += 1
        self.answer.append(text)
        self.response_text.append(text)
        self.emit(TokenEvent, content=text)

    def close_response(self, *, interrupted: bool) -> list[ToolCallPart]:
        """Record the model's (possibly partial) response in the turn's messages."""
        if not self.response_open:
            return []
        self.response_open = False
        calls = self.response_calls
        text = "".join(self.response_text)
        if text or calls or interrupted:
            records = tuple(ToolCallRecord(call_id=c.call_id, tool=c.name, args=c.args) for c in calls)
            self.messages.append(Message(role="assistant", content=text, tool_calls=records, interrupted=interrupted))
        return calls

    async def run_tools(self, calls: list[ToolCallPart]) -> None:
        session = self.session
        order = {}
        for index, call in enumerate(calls):
            run = ToolCallRun(
                call.call_id,
                session.tools.get(call.name),
                call.name,
                call.args,
                emit=self.progress_emitter(call),
                timeout=session.tool_timeout,
                invalid_args=call.invalid_args,
            )
            self.runs[call.call_id] = run
            self.run_tasks[call.call_id] = self.loop.create_task(run.run(), name=f"tool call {call.call_id}")
            order[call.call_id] = index
        pending = {self.run_tasks[call.call_id] for call in calls}
        call_of = {task: call_id for call_id, task in self.run_tasks.items()}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: order[call_of[t]]):
                self.answer_call(call_of[task], task.result())
        # Results are recorded as calls finish; the model reads them in the order it asked.
        answered = self.messages[-len(calls) :]
        self.messages[-len(calls) :] = sorted(answered, key=lambda m: order[m.tool_call_id or ""])

    def progress_emitter(self, call: ToolCallPart) -> Callable[[Progress], None]:
        def emit(progress: Progress) -> None:
            if call.call_id in self.unanswered:  # a thread may report after the call ended
                self.emit(
                    ToolProgressEvent,
                    call_id=call.call_id,
                    tool=call.name,
                    message=progress.message,
                    stage=progress.stage,
                    percent=None if progress.percent is None else min(100.0, max(0.0, progress.percent)),
                )

        return emit

    def answer_call(self, call_id: str, outcome: ToolOutcome) -> None:
        call = self.unanswered.pop(call_id, None)
        if call is None:
            return
        self.emit(
            ToolResultEvent,
            call_id=call_id,
            tool=call.name,
            status=outcome.status,
            result=outcome.result,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
        self.timings.append(
            ToolTiming(call_id=call_id, tool=call.name, status=outcome.status, duration_ms=outcome.duration_ms)
        )
        content = Message.tool_content(outcome.status, outcome.result, outcome.error)
        self.messages.append(Message(role="tool", content=content, tool_call_id=call_id, tool=call.name))

    async def stop_tools(self) -> None:
        """Cancel every running call and wait for each to report its outcome."""
        running = [(call_id, task) for call_id, task in self.run_tasks.items() if call_id in self.unanswered]
        for call_id, _ in running:
            self.runs[call_id].cancel()
        for call_id, task in running:
            self.answer_call(call_id, await task)

    def mark_interrupted(self) -> None:
        """Keep the partial answer in history, marked as interrupted."""
        if self.response_open:
            self.close_response(interrupted=True)
            return
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index].role == "assistant":
                self.messages[index] = self.messages[index].model_copy(update={"interrupted": True})
                return
        self.messages.append(Message(role="assistant", content="", interrupted=True))

    def finish(self, reason: DoneReason) -> None:
        if reason in ("cancelled", "error"):
            self.mark_interrupted()
        for call_id in list(self.unanswered):
            status: ToolStatus = "cancelled" if reason == "cancelled" else "error"
            why = "the turn was stopped" if reason == "cancelled" else "the turn failed before the tool ran"
            self.answer_call(call_id, ToolOutcome(status=status, error=why, duration_ms=0.0))
        self.session._history.extend(self.messages)
        now = time.perf_counter()
        tokens = self.usage.completion_tokens or self.token_count
        rate = None
        if self.first_token is not None and self.last_token is not None and self.last_token > self.first_token:
            rate = tokens / (self.last_token - self.first_token)
        metrics = Metrics(
            ttft_ms=None if self.first_token is None else (self.first_token - self.started) * 1000,
            tokens_per_s=rate,
            duration_ms=(now - self.started) * 1000,
            model_calls=self.model_calls,
            backend_duration_ms=self.backend_ms,
            backend_tokens_per_s=self.generated_tokens * 1000 / self.generation_ms if self.generation_ms else None,
            tools=tuple(self.timings),
        )
        self.emit(DoneEvent, reason=reason, text="".join(self.answer), usage=self.usage, metrics=metrics)
