"""One turn of a session: from the user's message to `done`, in small parts with one job each.

`ChatSession.stream` starts a `Turn` and reads the events it puts in its `EventSink`:

- `EventSink` numbers the turn's events and queues them for the consumer, with backpressure.
- `Response` is the model's answer being built during one model call: its text, its tool
  calls, and the history message they become.
- `ToolBatch` runs one response's tool calls in parallel and answers each exactly once
  (a `tool_result` event, a timing, a history message in the order the model asked).
- `MetricsBuilder` gathers the turn's timings and token counts into its `Metrics`.
- `Turn` is the model-call loop that ties them together, and writes history at the end.

The event guarantees these parts keep are listed in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, TypeAlias, TypedDict, assert_never

from . import events
from .errors import StreamChatError
from .events import DoneReason, Metrics, ToolStatus, ToolTiming, Usage
from .messages import Message, ToolCallRecord
from .providers.base import (
    FinishDelta,
    ModelRequest,
    NoticeDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallPart,
    ToolDefinition,
    UsageDelta,
)
from .tools.definition import Progress
from .tools.runner import ToolCallRun, ToolOutcome

if TYPE_CHECKING:
    from .session import ChatSession

__all__ = ["EventSink", "MetricsBuilder", "Response", "ToolAction", "ToolBatch", "Turn", "new_id"]

ToolAction: TypeAlias = Literal["cancel", "pause", "resume"]
"""What `ChatSession.control_tool` can do to one running tool call."""

THINKING_STATUS = "Thinking…"
# Backpressure: the producer waits once this many events are queued for a slow consumer,
# so a fast model does not pile a whole answer's events up in memory.
QUEUE_HIGH_WATER = 256
# How long a control request from another thread waits for the turn's loop to answer.
CONTROL_TIMEOUT = 5.0


def new_id() -> str:
    """A fresh random id (sessions, turns)."""
    return uuid.uuid4().hex


class EventStamp(TypedDict):
    """The fields every event of a turn carries; unpacked into the event's constructor."""

    session_id: str
    turn_id: str
    seq: int


class CallStamp(EventStamp):
    """The fields every event about one tool call carries: the stamp, the call's id and its tool."""

    call_id: str
    tool: str


class EventSink:
    """Numbers a turn's events and queues them for its consumer, with backpressure.

    Build each event with its own constructor and the next stamp, so that mypy checks its
    fields: ``sink.put(events.ToolCallEvent(**sink.stamp(), …))``; the hot path's
    `put_token` and `put_thinking` build theirs without validation (`events.trusted_token`).

    The consumer (`ChatSession.stream`) takes events with `take()` and, when there is none,
    awaits `arrival()`: a plain future, not a coroutine per event (the queue is a deque
    and one waiter each way, which `asyncio.Queue` would do with more calls per event).

    A consumer may also take events at once, on the producer's task, while it waits with
    nothing queued: `direct` (``ChatSession.stream(consume=…)``). An event it takes is not
    queued and does not wake the consumer's task (a server's tokens, one wake-up less each);
    the events it declines are queued as usual, so the order stays the order of `put`. If it
    raises, it is not called again and `take()` raises its error in the consumer's task.
    """

    def __init__(self, session_id: str, turn_id: str) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self._seq = 0
        self._events: deque[events.Event] = deque()
        self._loop = asyncio.get_running_loop()
        self._reader: asyncio.Future[None] | None = None  # the consumer, waiting for an event
        self._writer: asyncio.Future[None] | None = None  # the producer, waiting for room
        self.direct: Callable[[events.Event], bool] | None = None
        """Takes an event at once while the consumer waits with nothing queued; True when it took it."""
        self._failure: Exception | None = None  # what `direct` raised, for `take()` to raise

    def stamp(self) -> EventStamp:
        """The common fields of the next event (its `seq` is taken: `put` the event at once)."""
        self._seq += 1
        return {"session_id": self.session_id, "turn_id": self.turn_id, "seq": self._seq}

    def call_stamp(self, call: ToolCallPart) -> CallStamp:
        """The common fields of the next event about `call` (its `seq` is taken: `put` the event at once)."""
        return {**self.stamp(), "call_id": call.call_id, "tool": call.name}

    def put(self, event: events.Event) -> None:
        """Queue an event for the consumer (or hand it to `direct`); never blocks (tools report progress through it)."""
        reader = self._reader
        if reader is not None:  # the consumer waits: nothing is queued
            if self.direct is not None and not reader.done() and self._handed(event):
                return
            self._reader = None
            if not reader.done():  # cancelled with the consumer's task
                reader.set_result(None)
        self._events.append(event)

    def put_token(self, content: str) -> bool:
        """Queue the next `token` event; True once the queue is full (then `wait_for_room`)."""
        self._seq += 1
        self.put(events.trusted_token(self.session_id, self.turn_id, self._seq, content))
        return len(self._events) >= QUEUE_HIGH_WATER

    def put_thinking(self, text: str, kind: Literal["status", "reasoning"]) -> None:
        """Queue the next `thinking` event."""
        self._seq += 1
        self.put(events.trusted_thinking(self.session_id, self.turn_id, self._seq, text, kind))

    @property
    def full(self) -> bool:
        """True once the consumer has fallen `QUEUE_HIGH_WATER` events behind."""
        return len(self._events) >= QUEUE_HIGH_WATER

    async def wait_for_room(self) -> None:
        """Wait until the consumer has drained the queue to half its high-water mark."""
        self._writer = self._loop.create_future()
        try:
            await self._writer
        finally:
            self._writer = None

    def take(self) -> events.Event | None:
        """The next event, for the consumer; None when none is queued (then await `arrival()`)."""
        queue = self._events
        if not queue:
            return None
        if self._failure is not None:
            raise self._failure
        event = queue.popleft()
        if (writer := self._writer) is not None and len(queue) <= QUEUE_HIGH_WATER // 2:
            self._writer = None
            if not writer.done():
                writer.set_result(None)
        return event

    def _handed(self, event: events.Event) -> bool:
        """Whether `direct` took `event`; when it raises, it is dropped and the consumer is told."""
        assert self.direct is not None
        try:
            return self.direct(event)
        except Exception as exc:  # the consumer's task raises it (`take`), as if its own handling had failed
            self.direct = None
            self._failure = exc
            return False

    def arrival(self) -> asyncio.Future[None]:
        """A future that is done once an event is queued (one consumer: a later call replaces it)."""
        self._reader = reader = self._loop.create_future()
        return reader


class MetricsBuilder:
    """Gathers a turn's timings and token counts; `build()` makes its `Metrics`.

    Tokens per second are measured over the time the model was streaming text: from the
    first to the last token of each model call, summed, so tool calls between model calls
    do not count. Under `MIN_RATE_SPAN_S` of streaming (a scripted or buffered answer that
    arrives at once) no rate is given: dividing by a near-zero interval gives nonsense.
    """

    MIN_RATE_SPAN_S = 0.05
    """The shortest streaming time, in seconds, over which tokens per second are reported."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.usage = Usage()
        """Token counts summed over the turn's model calls."""
        self._clock = clock
        self._started = clock()
        self._model_calls = 0
        self._first_token: float | None = None
        self._call_first: float | None = None  # first and last token of the current model call
        self._call_last: float | None = None
        self._streaming_s = 0.0  # first-to-last-token spans of the earlier model calls
        self._tokens = 0
        self._backend_ms: float | None = None  # backend-reported timings (Ollama's durations)
        self._generation_ms = 0.0
        self._generated_tokens = 0
        self._tools: list[ToolTiming] = []

    def model_call(self) -> None:
        """A request to the model starts."""
        self._model_calls += 1
        self._end_call()

    def token(self) -> None:
        """A token arrived now."""
        now = self._clock()
        if self._call_first is None:  # the first token of this model call, perhaps of the turn
            self._call_first = now
            if self._first_token is None:
                self._first_token = now
        self._call_last = now
        self._tokens += 1

    def backend(self, delta: UsageDelta) -> None:
        """Token counts and timings the backend reported for one model call."""
        self.usage += Usage(prompt_tokens=delta.prompt_tokens, completion_tokens=delta.completion_tokens)
        if delta.backend_duration_ms is not None:
            self._backend_ms = (self._backend_ms or 0.0) + delta.backend_duration_ms
        if delta.generation_ms and delta.completion_tokens is not None:
            self._generation_ms += delta.generation_ms
            self._generated_tokens += delta.completion_tokens

    def tool(self, timing: ToolTiming) -> None:
        """A tool call finished (timings are kept in the order calls finish)."""
        self._tools.append(timing)

    def build(self) -> Metrics:
        """The turn's `Metrics`, its duration measured until now."""
        self._end_call()
        first = self._first_token
        tokens = self.usage.completion_tokens or self._tokens
        span = self._streaming_s
        return Metrics(
            ttft_ms=None if first is None else (first - self._started) * 1000,
            tokens_per_s=tokens / span if span >= self.MIN_RATE_SPAN_S else None,
            duration_ms=(self._clock() - self._started) * 1000,
            model_calls=self._model_calls,
            backend_duration_ms=self._backend_ms,
            backend_tokens_per_s=self._generated_tokens * 1000 / self._generation_ms if self._generation_ms else None,
            tools=tuple(self._tools),
        )

    def _end_call(self) -> None:
        """Add the current model call's first-to-last-token span to the streaming time."""
        if self._call_first is not None and self._call_last is not None:
            self._streaming_s += self._call_last - self._call_first
        self._call_first = self._call_last = None


class Response:
    """The model's answer being built during one model call."""

    def __init__(self) -> None:
        self.text: list[str] = []
        """The text deltas so far."""
        self.calls: list[ToolCallPart] = []
        """The tool calls so far, in the order the model made them."""
        self.finish: Literal["stop", "length", "tool_calls"] = "stop"
        """Why the model stopped, as it said."""

    def message(self, *, interrupted: bool) -> Message | None:
        """The history message for this response; None for an empty one that ended normally."""
        text = "".join(self.text)
        if not (text or self.calls or interrupted):
            return None
        records = tuple(ToolCallRecord(call_id=c.call_id, tool=c.name, args=c.args) for c in self.calls)
        return Message(role="assistant", content=text, tool_calls=records, interrupted=interrupted)


class ToolBatch:
    """The tool calls of one response: run in parallel, each answered exactly once.

    Answering a call emits its `tool_result`, records its timing and makes the `tool`
    message the model reads; `messages()` gives those in the order the model asked,
    whatever order the calls finished in.
    """

    def __init__(
        self, calls: Sequence[ToolCallPart], session: ChatSession, sink: EventSink, metrics: MetricsBuilder
    ) -> None:
        self.calls = calls
        self._session = session  # its tools, their timeout, the settings they get, the thread pool
        self._sink = sink
        self._metrics = metrics
        self._runs: dict[str, ToolCallRun] = {}
        self._tasks: dict[str, asyncio.Task[ToolOutcome]] = {}
        self._answers: dict[str, Message] = {}

    async def run(self) -> None:
        """Run every call concurrently and answer each as it finishes."""
        loop, session = asyncio.get_running_loop(), self._session
        for call in self.calls:
            run = ToolCallRun(
                call.call_id,
                session.tools.get(call.name),
                call.name,
                call.args,
                emit=self._progress_emitter(call),
                timeout=session.tool_timeout,
                settings=session.settings,
                invalid_args=call.invalid_args,
                threads=session.tool_threads,
            )
            self._runs[call.call_id] = run
            self._tasks[call.call_id] = loop.create_task(run.run(), name=f"tool call {call.call_id}")
        pending = set(self._tasks.values())
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for call in self.calls:  # calls that finished together are answered in the order asked
                if (task := self._tasks[call.call_id]) in done:
                    self._answer(call, task.result())

    def control(self, call_id: str, action: ToolAction) -> bool:
        """Cancel, pause or resume one running call; False if it is not running or nothing changed."""
        run = self._runs.get(call_id)
        if run is None or self._tasks[call_id].done():
            return False
        match action:
            case "cancel":
                return run.cancel()
            case "pause":
                return run.pause()
            case "resume":
                return run.resume()
            case _:
                assert_never(action)

    async def stop(self) -> None:
        """Cancel the calls still running and answer each with its outcome once it ends."""
        running = [call for call in self.calls if call.call_id in self._tasks and call.call_id not in self._answers]
        for call in running:
            self._runs[call.call_id].cancel()
        for call in running:
            self._answer(call, await self._tasks[call.call_id])

    def abandon(self, status: ToolStatus, why: str) -> None:
        """Answer every call not answered yet with `status`: the turn ended before it could."""
        for call in self.calls:
            if call.call_id not in self._answers:
                self._answer(call, ToolOutcome(status=status, error=why, duration_ms=0.0))

    def messages(self) -> list[Message]:
        """The `tool` messages of the answered calls, in the order the model asked for them."""
        return [self._answers[call.call_id] for call in self.calls if call.call_id in self._answers]

    def _progress_emitter(self, call: ToolCallPart) -> Callable[[Progress], None]:
        sink = self._sink

        def emit(progress: Progress) -> None:
            if call.call_id in self._answers:  # a thread may report after the call ended
                return
            percent = None if progress.percent is None else min(100.0, max(0.0, progress.percent))
            sink.put(
                events.ToolProgressEvent(
                    **sink.call_stamp(call), message=progress.message, stage=progress.stage, percent=percent
                )
            )

        return emit

    def _answer(self, call: ToolCallPart, outcome: ToolOutcome) -> None:
        sink = self._sink
        sink.put(
            events.ToolResultEvent(
                **sink.call_stamp(call),
                status=outcome.status,
                result=outcome.result,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
            )
        )
        self._metrics.tool(
            ToolTiming(call_id=call.call_id, tool=call.name, status=outcome.status, duration_ms=outcome.duration_ms)
        )
        content = Message.tool_content(outcome.status, outcome.result, outcome.error)
        self._answers[call.call_id] = Message(role="tool", content=content, tool_call_id=call.call_id, tool=call.name)


class Turn:
    """One turn: the model-call loop, from the user's message to `done`.

    Lives only while `ChatSession.stream` runs. It reads the session's settings as it goes
    and extends `history` (the session's own list) once, when it ends.
    """

    def __init__(self, session: ChatSession, message: str, history: list[Message]) -> None:
        self.turn_id = new_id()
        self.sink = EventSink(session.session_id, self.turn_id)
        self.loop = asyncio.get_running_loop()
        self._session = session
        self._history = history
        self._metrics = MetricsBuilder()
        self._messages: list[Message] = [Message(role="user", content=message)]
        self._response: Response | None = None  # while the model streams it
        self._batch: ToolBatch | None = None  # until its tool messages are in `_messages`
        self._task: asyncio.Task[None] | None = None
        self._cancel_requested = False

    # -- lifecycle, on the turn's loop --------------------------------------------------------

    def start(self) -> None:
        """Start the turn as a task; its events arrive in `sink`."""
        self._task = self.loop.create_task(self._run(), name=f"streamchat turn {self.turn_id}")

    def cancel(self) -> bool:
        """Stop the turn (it ends with `done(reason="cancelled")`); False if it already ended or is stopping."""
        # Once only: a second cancel would interrupt the clean-up (tool cancellation) of the first.
        if self._task is None or self._task.done() or self._cancel_requested:
            return False
        self._cancel_requested = True
        return self._task.cancel()

    async def close(self) -> None:
        """Cancel the turn if it still runs and wait for its end."""
        self.cancel()
        task = self._task
        if task is None:
            return
        if not task.done():
            await asyncio.gather(task, return_exceptions=True)
        elif not task.cancelled():
            task.exception()  # retrieved, as the gather would (a turn that ended: no wait for another loop turn)

    def control_tool(self, call_id: str, action: ToolAction) -> bool:
        """Cancel, pause or resume a running tool call; True if it acted."""
        return self._batch is not None and self._batch.control(call_id, action)

    def on_loop(self, action: Callable[[], bool]) -> bool:
        """Run `action` on the turn's loop and return its answer, from any thread.

        From another thread this waits up to `CONTROL_TIMEOUT` seconds for the loop to run
        it. If the loop does not (it is blocked or stopped), the request is withdrawn, so
        it never runs later, and the answer is False: nothing was done.
        """
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            return action()
        answer: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def run() -> None:
            if answer.set_running_or_notify_cancel():  # False once the caller withdrew
                try:
                    answer.set_result(action())
                except BaseException as exc:  # handed to the caller, which would otherwise wait forever
                    answer.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed
            return False
        try:
            return answer.result(CONTROL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            if answer.cancel():
                return False
            return answer.result()  # it started just as the wait ended: its answer is due now

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        reason: DoneReason = "error"
        sink = self.sink
        try:
            reason = await self._converse()
        except asyncio.CancelledError:
            reason = "cancelled"
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            if self._batch is not None:
                await self._batch.stop()
        except StreamChatError as exc:
            sink.put(events.ErrorEvent(**sink.stamp(), message=exc.message, code=exc.code, retryable=exc.retryable))
        except Exception as exc:  # a bug or an unexpected library error: report it, keep the session usable
            message = f"internal error: {type(exc).__name__}: {exc}"
            sink.put(events.ErrorEvent(**sink.stamp(), message=message, code="internal_error"))
        finally:
            self._finish(reason)

    async def _converse(self) -> DoneReason:
        session = self._session
        tools: tuple[ToolDefinition, ...] | None = None
        for _ in range(session.max_turns):
            self.sink.put_thinking(THINKING_STATUS, "status")
            if tools is None:  # after the status: listing may start a toolset's server
                tools = await self._list_tools()
            system = [Message(role="system", content=session.system)] if session.system else []
            request = ModelRequest(
                messages=(*system, *self._history, *self._messages), tools=tools, session_id=self._session.session_id
            )
            self._metrics.model_call()
            response = self._response = Response()
            await self._stream_response(request, response)
            batch = self._close_response(interrupted=False)
            if batch is None:
                return "length" if response.finish == "length" else "stop"
            await batch.run()
            self._messages.extend(batch.messages())
            self._batch = None
        return "max_turns"

    async def _list_tools(self) -> tuple[ToolDefinition, ...]:
        """The tools of this turn, toolsets' included; a toolset left out is reported, and the turn goes on."""
        sink = self.sink
        for problem in await self._session.refresh_tools():
            sink.put(
                events.ErrorEvent(
                    **sink.stamp(), message=problem.message, code=problem.code, retryable=problem.retryable
                )
            )
        return tuple(t.definition for t in self._session.tools.values())

    async def _stream_response(self, request: ModelRequest, response: Response) -> None:
        """One model call: turn its deltas into events and into `response`."""
        sink, metrics = self.sink, self._metrics
        put_token, add_text, count_token = sink.put_token, response.text.append, metrics.token  # hot path
        async with contextlib.aclosing(self._session.provider.stream(request)) as deltas:
            async for delta in deltas:
                match delta:
                    case TextDelta():
                        if text := delta.text:
                            count_token()
                            add_text(text)
                            if put_token(text):
                                await sink.wait_for_room()
                        continue  # the queue was checked
                    case ToolCallPart(args=args):
                        response.calls.append(delta)
                        sink.put(events.ToolCallEvent(**sink.call_stamp(delta), args=args))
                    case ThinkingDelta(text=text, kind=kind):
                        sink.put_thinking(text, kind)
                    case UsageDelta():
                        metrics.backend(delta)
                    case NoticeDelta(message=message, code=code):
                        sink.put(events.ErrorEvent(**sink.stamp(), message=message, code=code, retryable=False))
                    case FinishDelta(reason=reason):
                        response.finish = reason
                    case _:
                        assert_never(delta)
                if sink.full:
                    await sink.wait_for_room()

    def _close_response(self, *, interrupted: bool) -> ToolBatch | None:
        """Put the (possibly partial) response in the turn's messages; its calls become the batch."""
        response, self._response = self._response, None
        if response is None:
            return None
        if (message := response.message(interrupted=interrupted)) is not None:
            self._messages.append(message)
        if response.calls:
            self._batch = ToolBatch(response.calls, self._session, self.sink, self._metrics)
            return self._batch
        return None

    def _mark_interrupted(self) -> None:
        """Keep the partial answer in history, marked as interrupted."""
        if self._response is not None:
            self._close_response(interrupted=True)
            return
        for index in range(len(self._messages) - 1, -1, -1):
            if self._messages[index].role == "assistant":
                self._messages[index] = self._messages[index].model_copy(update={"interrupted": True})
                return
        self._messages.append(Message(role="assistant", content="", interrupted=True))

    def _finish(self, reason: DoneReason) -> None:
        if reason in ("cancelled", "error"):
            self._mark_interrupted()
        if self._batch is not None:  # calls the turn ended before answering
            if reason == "cancelled":
                self._batch.abandon("cancelled", "the turn was stopped")
            else:
                self._batch.abandon("error", "the turn failed before the tool ran")
            self._messages.extend(self._batch.messages())
            self._batch = None
        self._history.extend(self._messages)
        # The answer is every response's text, which the assistant messages keep verbatim.
        text = "".join(m.content for m in self._messages if m.role == "assistant")
        metrics = self._metrics
        self.sink.put(
            events.DoneEvent(
                **self.sink.stamp(), reason=reason, text=text, usage=metrics.usage, metrics=metrics.build()
            )
        )
