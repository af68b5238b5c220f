"""The server side of chat sessions: ownership, limits, turns that outlive connections.

Each turn runs as a server-side task that records its events in the session's replay
buffer (in the store) and hands them to every connection watching it (an SSE response,
a WebSocket, a REST call), each a `Follower`. A client that lost its SSE connection comes
back with `Last-Event-ID`: its new follower reads the missed events from the buffer, then
the live ones, each exactly once.

Disconnect cancels: when the last follower of a running turn goes away, the turn is
cancelled after `disconnect_grace` seconds (0.5 s by default) unless a client resumes it
within that window. The tool calls get `CancelledError`, the backend request is closed,
and the turn still ends with `done(reason="cancelled")` in the buffer and history.

Several processes: with a shared store (`streamchat.redis_store.RedisStore`) the process
that starts a turn runs it, holds its lease in the store and renews it (one task renews every running turn's);
a follower on another process is a `RemoteFollower`, reading the turn's events from the
store. Stop, tool control and delete reach the running process over the store's control
channel; the disconnect grace counts the followers of every process. A process that dies
mid-turn stops renewing its lease: the first follower (or new message) to see the lease
gone claims the orphan, writes its partial answer to history marked interrupted and ends
its stream with an ``error`` (code ``server_stopped``) and ``done(reason="error")``.

Publishing an event puts it in each follower's inbox and wakes the follower if it waits
(`Follower.next_events`: one future per wait, and one heartbeat timer per follower that
is moved on lazily rather than a timer per event). The turn encodes each event's SSE
frame once for all its followers (`TurnRun.frame`).

Slow clients: each streaming connection has a `ClientBuffer` counting what waits for it
(events in its followers' inboxes, as the length of their SSE frames, and bytes its socket has not taken). Past
`Limits.max_buffered_bytes` the connection is dropped, and its turns go on for the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import math
import re
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never, cast

from streamchat._version import __version__
from streamchat.analytics import recorder
from streamchat.analytics.shared import SharedMetrics
from streamchat.errors import (
    BadRequestError,
    MessageTooLargeError,
    ReplayGapError,
    SessionBusyError,
    SessionNotFoundError,
    StoreUnavailableError,
    TooManySessionsError,
    TooManyTurnsError,
)
from streamchat.events import DoneEvent, ErrorEvent, Event, TokenEvent
from streamchat.messages import Message
from streamchat.providers import Provider, ProviderChoice
from streamchat.result import ChatResult, ResultCollector
from streamchat.session import ChatSession
from streamchat.settings import Settings
from streamchat.stores import ControlMessage, SessionRecord, SessionStore
from streamchat.tools.definition import Tool, toolset
from streamchat.tools.toolsets import Toolset, gather_tools
from streamchat.turn import ToolAction

from .frames import sse_event

__all__ = [
    "SERVICE_SETTING",
    "SESSION_ID_PATTERN",
    "ChatService",
    "ClientBuffer",
    "Follower",
    "Limits",
    "RemoteFollower",
    "trim_history",
]

SERVICE_SETTING = "streamchat_service"
"""The Tornado settings key under which the extension puts its `ChatService` for the handlers."""

HEALTH_PROBE_TIMEOUT = 2.0
"""Seconds the health route waits for the backend to answer."""

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""What a session id may be: 1–64 letters, digits, `-` or `_`."""
SESSION_ID = re.compile(SESSION_ID_PATTERN)

FRAMES_KEPT = 64
"""How many of a running turn's latest SSE frames it keeps for its followers (older ones are encoded again)."""

_PRIVATE_ERRORS = {
    "backend_unreachable": "the model's backend cannot be reached",
    "backend_timeout": "the model's backend did not answer in time",
    "backend_stream_error": "the connection to the model's backend broke",
    "internal_error": "the server failed while answering",
    "toolset_unavailable": "a tool server (MCP) could not be started or reached",
}
"""Error events whose message names server internals (a backend's URL, a file path, an exception's
text), with what clients are told instead; other ``backend_*`` and ``http_*`` codes too."""


def new_error_id() -> str:
    """A short id tying what a client is told to the server log line holding the details."""
    return uuid.uuid4().hex[:12]


def public_provider(provider: Provider) -> dict[str, Any]:
    """Name, model and description of `provider`, without its address or the path of its model file."""
    model = Path(provider.model).name if provider.name == "local" else provider.model
    endpoint = getattr(provider, "base_url", None)
    description = f"{provider.name} {model}" if isinstance(endpoint, str) and endpoint else provider.describe()
    return {"name": provider.name, "model": model, "description": description}


logger = logging.getLogger("streamchat.server")


def _log_failure(task: asyncio.Task[None]) -> None:
    """Log how a turn's task failed, if it did (its followers only see the turn end)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("streamchat: the turn task %s failed", task.get_name(), exc_info=exc)


@dataclass(frozen=True)
class Limits:
    """The server's limits and timings.

    A request over a session, turn or in-flight limit is refused with 429, one over the
    message size with 413; the history and byte limits refuse nothing (the oldest messages
    go; a client that does not read is dropped). The turn and in-flight limits count what
    runs in this server process.
    """

    max_message_size: int = 64 * 1024
    """Largest message, in UTF-8 bytes."""
    max_sessions: int = 1000
    """Most sessions the server keeps, every user's together."""
    max_sessions_per_user: int = 100
    """Most sessions one user may have at a time."""
    max_running_turns: int = 32
    """Most turns running at once, every user's together."""
    max_running_turns_per_user: int = 8
    """Most turns one user may have running at once (in different sessions)."""
    max_history_messages: int = 200
    """Most messages a session keeps: past it the oldest go, so that the kept history starts with a user message."""
    max_messages_in_flight: int = 16
    """Most messages of one WebSocket handled at once (a reply not yet sent counts); more get an error."""
    max_buffered_bytes: int = 1024 * 1024
    """Most bytes waiting for one client (events not yet sent, plus its connection's unsent bytes):
    past it, the next event or reply drops the client, and its turns go on for the others."""
    idle_timeout: float = 3600.0
    """Seconds of inactivity after which a session is deleted."""
    disconnect_grace: float = 0.5
    """Seconds a running turn survives without any follower before it is cancelled."""
    heartbeat_interval: float = 15.0
    """Seconds between SSE ``: ping`` comments while a turn is quiet (0 disables them)."""

    @property
    def max_body_size(self) -> int:
        """Largest request body or WebSocket frame: a maximal message, JSON-escaped, plus the envelope."""
        return 6 * self.max_message_size + 4096  # "\\u001f" is the worst case: 6 bytes per byte


def _same_record(a: SessionRecord, b: SessionRecord) -> bool:
    """Whether two records are one session's (a session deleted and re-created under its id is another)."""
    return a.session_id == b.session_id and a.owner == b.owner and a.created_at == b.created_at


def trim_history(history: Sequence[Message], limit: int) -> list[Message]:
    """The latest `limit` messages of `history`, from the first user message among them on.

    Starting at a user message keeps every kept tool result after the assistant message that
    asked for it, which backends require.
    """
    if len(history) <= limit:
        return list(history)
    kept = history[len(history) - limit :]
    for index, message in enumerate(kept):
        if message.role == "user":
            return list(kept[index:])
    return []


class ClientBuffer:
    """What waits for one client connection: events in its followers' inboxes, plus its unsent bytes.

    Once more than `limit` bytes wait, the next event or reply for the client drops it
    (`drop` is called once): a client that does not read cannot grow the server's memory
    past the limit plus one message. Its turns go on for their other followers (and are
    cancelled after the grace window if it was the last).

    Args:
        limit: the most bytes that may wait.
        unsent: the connection's bytes written but not yet taken by the client.
        drop: closes the connection.
    """

    def __init__(self, limit: int, *, unsent: Callable[[], int], drop: Callable[[], None]) -> None:
        self.limit = limit
        self.queued = 0
        """Bytes of the events waiting in this client's inboxes."""
        self.dropped = False
        self.peak = 0
        """The most bytes seen waiting (measured whenever a message comes for the client)."""
        self._unsent = unsent
        self._drop = drop

    def pending(self) -> int:
        """Bytes waiting for this client."""
        return self.queued + self._unsent()

    def admit(self) -> bool:
        """Whether one more message may be queued or written; over the limit, drop the client (False)."""
        if self.dropped:
            return False
        pending = self.pending()
        self.peak = max(self.peak, pending)
        if pending > self.limit:
            self.dropped = True
            self._drop()
        return not self.dropped


class TurnRun:
    """One turn running on the server; it lives until `done`, not as long as a connection."""

    def __init__(self, record: SessionRecord, chat: ChatSession, *, keep: int) -> None:
        self.session_id = record.session_id
        self.record = record
        """The session the turn runs in: its history goes back there and nowhere else."""
        self.chat = chat
        self.task: asyncio.Task[None] | None = None
        self.recent: collections.deque[Event] = collections.deque(maxlen=keep)
        """The turn's latest events (as many as the store's replay buffer): this process's followers read them here,
        so they lose nothing while the store is unreachable."""
        self.store_failed = False
        """Whether writing to the store failed during this turn (logged once)."""
        self.lease = asyncio.Lock()
        """Held while the lease is renewed or released, so a renewal cannot take it again after the turn ended."""
        self.saved = False
        """Whether the turn's history was written to the store."""
        self.unwritten: list[Event] = []
        """Events not yet handed to the store's writer (`ChatService._write_events`)."""
        self.writer: asyncio.Task[None] | None = None
        self.write_failure: BaseException | None = None
        """What the writer failed with, other than the store being unreachable: the turn fails with it."""
        self.released = False
        """Whether the turn's lease was released (the turn is over in the store)."""
        self.finished = False
        self.followers: set[Follower] = set()
        self.cancel_timer: asyncio.TimerHandle | None = None
        self._frames: dict[int, tuple[Event, bytes]] = {}  # seq -> the event and its SSE frame, the latest few

    def publish(self, event: Event) -> None:
        """Hand an event to every attached follower (a client over its limit is dropped instead) and wake them.

        The event weighs its SSE frame's length in the byte budgets; the frame is kept for the followers' writes.
        """
        self.recent.append(event)
        size = 0
        for follower in list(self.followers):
            if follower.push is not None and follower.pushed(event):
                continue
            client = follower.client
            if client is not None and client.admit():
                size = size or len(self.frame(event))
                client.queued += size
                follower.queued += size
                follower.inbox.append(event)
            elif client is None:
                follower.inbox.append(event)
            follower.wake()

    def notify(self) -> None:
        """Wake every follower waiting for a new event (or for the turn's end)."""
        for follower in list(self.followers):
            follower.wake()

    def frame(self, event: Event) -> bytes:
        """The SSE frame of one of the turn's events, encoded once for all its followers (the latest few are kept)."""
        kept = self._frames.get(event.seq)
        if kept is not None and kept[0] is event:
            return kept[1]
        data = sse_event(event)
        frames = self._frames
        frames[event.seq] = (event, data)
        if len(frames) > FRAMES_KEPT:
            del frames[next(iter(frames))]  # the oldest kept
        return data

    def events_after(self, seq: int) -> list[Event]:
        """The kept events after `seq`; `ReplayGapError` when some of them are no longer kept."""
        if self.recent and self.recent[0].seq > seq + 1:
            raise ReplayGapError(
                f"the events after {seq} are no longer buffered (the buffer keeps {self.recent.maxlen} events)"
            )
        return [event for event in self.recent if event.seq > seq]


class Follower:
    """A connection's view of a turn: its events after a given `seq`, then new ones as they come.

    Live events reach a follower through its own inbox, so a slow reader never loses any
    (until its `client` is over its byte limit and dropped); the store's bounded replay buffer
    only serves what was sent before it attached.
    """

    def __init__(
        self,
        service: ChatService,
        session_id: str,
        run: TurnRun | None,
        after: int,
        turn_id: str | None = None,
        client: ClientBuffer | None = None,
    ) -> None:
        self.service = service
        self.session_id = session_id
        self.run = run
        self.after = after
        self.turn_id = turn_id
        """The turn followed; None until its first event when the follower did not name one."""
        self.client = client
        self.ended = False
        self._backlog_read = False
        self.inbox: collections.deque[Event] = collections.deque()
        """Events published since the last `next_events`."""
        self.queued = 0
        """Bytes of the events in the inbox, counted in the client's buffer."""
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        self._waiter: asyncio.Future[bool] | None = None
        """What `next_events` waits on: set to True when its timeout passed, False on news (`wake`)."""
        self._deadline = math.inf
        """When the wait under way times out (the heartbeat's timer is re-armed lazily: `_on_timer`)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._timeout: float | None = None
        self.push: Callable[[Event], bool] | None = None
        """Writes a live event straight to the follower's connection, if it can at once (`pushed`)."""
        if run is not None:
            run.followers.add(self)
            if run.cancel_timer is not None:
                run.cancel_timer.cancel()
                run.cancel_timer = None

    async def next_events(self, timeout: float | None = None) -> list[Event]:
        """The next events, waiting up to `timeout` seconds for some ([] on timeout or at the end).

        Raises `ReplayGapError` (before returning anything) when resuming from an event that
        the replay buffer no longer holds.
        """
        while not self.ended:
            run = self.run
            if not self._backlog_read:
                self._backlog_read = True
                if run is not None:
                    events = run.events_after(self.after)
                else:
                    events = await self.service.store.events_after(self.session_id, self.after)
            else:
                events = list(self.inbox)
            self.inbox.clear()
            if self.client is not None:
                self.client.queued -= self.queued
            self.queued = 0
            events = [event for event in events if event.seq > self.after]  # backlog and inbox may overlap
            if events:
                if self.turn_id is None:
                    self.turn_id = events[0].turn_id
                if events[0].turn_id != self.turn_id:  # another turn began before this follower attached
                    raise ReplayGapError(f"turn {self.turn_id!r} is over", code="turn_replaced")
                self.after = events[-1].seq
                self.ended = events[-1].type == "done"
                return events
            if run is None or run.finished:
                self.ended = True  # the turn ended without a (further) done, e.g. the server is stopping
                return []
            if self.inbox:
                continue  # published while the backlog was read
            timed_out = await self._wait(timeout)
            if self._closed.done():
                self.ended = True
            elif timed_out and not self.inbox:
                return []  # timed out: the caller may send a heartbeat
        return []

    def frame(self, event: Event) -> bytes:
        """The SSE frame of one of the followed turn's events (while the turn runs here, encoded once for all)."""
        run = self.run
        return run.frame(event) if run is not None else sse_event(event)

    def pushed(self, event: Event) -> bool:
        """Hand a live event to `push` instead of waking `next_events`; True when it was written.

        Only while `next_events` waits with nothing before the event (the backlog read, the inbox empty,
        the event the next of the followed turn), and not `done` (which wakes it to end). The heartbeat's
        deadline moves on as when an event is returned. False: the event goes through the inbox.
        """
        push = self.push
        if (
            push is None
            or self._waiter is None
            or self.inbox
            or event.seq != self.after + 1
            or event.turn_id != self.turn_id
            or event.type == "done"
        ):
            return False
        try:
            if not push(event):
                return False
        except Exception:  # the connection's own task meets it through the inbox path
            return False
        self.after = event.seq
        if self._timeout is not None:
            self._deadline = self._loop.time() + self._timeout
        return True

    def wake(self) -> None:
        """Wake `next_events` if it waits: an event came, the turn ended, or the follower closed."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(False)

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for `wake`; True when `timeout` seconds passed first.

        No timer per wait: one per follower, moved on lazily. Each wait only sets the
        deadline; when the timer fires before it, it re-arms itself for the deadline.
        """
        loop = self._loop
        self._timeout = timeout
        self._deadline = math.inf if timeout is None else loop.time() + timeout
        if self._deadline < self._timer_at:  # no timer, or one too late for this wait
            if self._timer is not None:
                self._timer.cancel()
            self._arm()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        try:
            return await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def _arm(self) -> None:
        self._timer_at = self._deadline
        self._timer = None if self._deadline == math.inf else self._loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if self._deadline <= self._timer_at:  # the wait under way (if any) has timed out
            self._timer_at = math.inf
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(True)
        else:
            self._arm()  # an event came meanwhile: the deadline moved on

    def close(self) -> None:
        """Stop following; the last follower to leave a running turn starts its cancel countdown."""
        if self._closed.done():
            return
        self._closed.set_result(None)
        self.push = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        self.wake()
        self.inbox.clear()
        if self.client is not None:
            self.client.queued -= self.queued
        self.queued = 0
        run = self.run
        if run is None:
            return
        run.followers.discard(self)
        self.run = None  # a closed follower keeps nothing of the turn alive
        if not run.followers and not run.finished and not self.ended:  # one that read `done` leaves a turn over
            self.service.start_grace(run)


class RemoteFollower(Follower):
    """A follower of a turn that another process runs: it reads the turn's events from the store.

    While it follows it is counted in the store (so the running process's disconnect grace
    sees it), and when no event comes it checks the turn's lease: a turn whose process
    stopped is ended by the first follower that sees it (`ChatService.end_orphan`).
    A store that cannot be reached is waited for (the caller gets [] on its timeout, as when
    the turn is quiet).
    """

    def __init__(
        self,
        service: ChatService,
        session_id: str,
        after: int,
        turn_id: str | None = None,
        client: ClientBuffer | None = None,
    ) -> None:
        super().__init__(service, session_id, None, after, turn_id=turn_id, client=client)
        self.follower_id = uuid.uuid4().hex
        self._counted_at = -1.0
        self._waiting_for_store = False

    async def register(self) -> None:
        """Count this follower in the store (again before its registration expires)."""
        self._counted_at = asyncio.get_running_loop().time()
        await self.service.store.add_follower(self.session_id, self.follower_id)

    async def next_events(self, timeout: float | None = None) -> list[Event]:
        """The next events of the turn, from the store, waiting up to `timeout` seconds ([] on timeout or at the end)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        store = self.service.store
        step = min(1.0, store.turn_lease / 3)
        while not self.ended:
            if self._closed.done():
                self.ended = True
                break
            wait = step if deadline is None else max(0.0, min(step, deadline - loop.time()))
            try:
                if not self._backlog_read:
                    events = await store.events_after(self.session_id, self.after)
                    self._backlog_read = True
                else:
                    events = await store.wait_events(self.session_id, self.after, wait)
                self._waiting_for_store = False
                events = [event for event in events if event.seq > self.after]
                # renewed whether or not events came: a follower of a busy turn is counted as long as it reads
                if loop.time() - self._counted_at >= step:
                    await self.register()
                if events:
                    if self.turn_id is None:
                        self.turn_id = events[0].turn_id
                    if events[0].turn_id != self.turn_id:
                        raise ReplayGapError(f"turn {self.turn_id!r} is over", code="turn_replaced")
                    self.after = events[-1].seq
                    self.ended = events[-1].type == "done"
                    return events
                if await store.turn_holder(self.session_id) is None:
                    if await store.running_turn(self.session_id) is None:
                        if not await store.events_after(self.session_id, self.after):
                            self.ended = True  # the turn is over and this follower has all of it
                        continue
                    await self.service.end_orphan(self.session_id)
                    continue
            except StoreUnavailableError as exc:
                if not self._waiting_for_store:  # logged once per outage
                    self.service.log.warning(
                        "streamchat: a follower of session %s waits for the store: %s",
                        self.session_id,
                        exc.__cause__ or exc,
                    )
                self._waiting_for_store = True
                await asyncio.wait({self._closed}, timeout=wait or step)
            if deadline is not None and loop.time() >= deadline:
                return []
        return []

    def close(self) -> None:
        """Stop following, and stop being counted (the running process hears of it)."""
        if self._closed.done():
            return
        super().close()
        self.service.spawn(self.service.follower_left(self.session_id, self.follower_id))


class ChatService:
    """Sessions of the Jupyter Server extension: who owns them, their turns, their limits.

    The extension builds one (its class is ``StreamChat.service_class``) and puts it in the
    Tornado settings under `SERVICE_SETTING`; the handlers use nothing else.

    Args:
        store: where sessions, turn flags and replay buffers live.
        provider_choice: the backend (named, or chosen by one probe at startup); its provider
            is shared by every session, and ``GET health`` describes and probes it.
        tools: the tools the model may call.
        toolsets: the toolsets (MCP servers) whose tools each turn lists too; the app closes them.
        settings: the settings every session runs with.
        limits: sizes and timings.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        provider_choice: Callable[[], Awaitable[ProviderChoice]],
        tools: Sequence[Tool],
        settings: Settings,
        limits: Limits,
        toolsets: Sequence[Toolset] = (),
    ) -> None:
        self.store = store
        self.provider_choice = provider_choice
        self.tools = list(tools)
        self.toolsets = list(toolsets)
        self.settings = settings
        self.limits = limits
        self.log = logging.getLogger("streamchat.server")
        """Where details kept from clients go, under the error id the client is given."""
        self.clients: weakref.WeakSet[ClientBuffer] = weakref.WeakSet()
        """The buffers of the connected streaming clients (SSE responses, WebSockets)."""
        self.holder = uuid.uuid4().hex
        """This process's id in the store: the holder of the leases of the turns it runs."""
        self.metrics = SharedMetrics.for_store(store, holder=self.holder, recorder=recorder())
        """The deployment's figures, combined in Redis, when the store is a `RedisStore` (None: this process's are all)."""
        self._runs: dict[str, TurnRun] = {}
        self._running = collections.Counter[str]()  # the runs in `_runs` per owner: no scan per turn started
        self._deleting: set[str] = set()  # no turn may start in these sessions
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._leases: asyncio.Task[None] | None = None

    def spawn(self, work: Awaitable[None]) -> None:
        """Run `work` in the background, kept until it ends; a failure is logged."""

        async def run() -> None:
            try:
                await work
            except StoreUnavailableError as exc:
                self.log.warning("streamchat: the session store cannot be reached: %s", exc.__cause__ or exc)

        task = asyncio.get_running_loop().create_task(run(), context=contextvars.Context())  # keeps no request alive
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    def _listen(self) -> None:
        """Start listening to the store's control channel (and sharing metrics), once (it needs the running loop)."""
        if self.metrics is not None:
            self.metrics.start()
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._control_loop(), name="control channel of streamchat", context=contextvars.Context()
            )
            self._listener.add_done_callback(_log_failure)

    async def _control_loop(self) -> None:
        """Act on the control messages for the turns this process runs; resubscribe after a store failure."""
        lost = False
        while True:
            try:
                async for message in self.store.control_messages():
                    if lost:
                        lost = False
                        self.log.info("streamchat: the store's control channel is back")
                    self._on_control(message)
            except StoreUnavailableError as exc:
                if not lost:  # logged once per outage
                    lost = True
                    self.log.warning("streamchat: the store's control channel is lost, retrying: %s", exc.__cause__)
                await asyncio.sleep(0.5)

    def _on_control(self, message: ControlMessage) -> None:
        run = self._runs.get(message.session_id)
        if run is None:
            return
        match message.action:
            case "cancel":
                run.chat.cancel()
            case "tool":
                if message.call_id is not None and message.tool_action is not None:
                    run.chat.control_tool(message.call_id, message.tool_action)
            case "followers":
                if not run.followers and not run.finished and run.cancel_timer is None:
                    self.start_grace(run)
            case unknown:
                assert_never(unknown)

    def start_grace(self, run: TurnRun) -> None:
        """Cancel `run` after the disconnect grace unless it has followers then, on any process."""
        if run.cancel_timer is not None:
            run.cancel_timer.cancel()
        grace = self.limits.disconnect_grace
        run.cancel_timer = asyncio.get_running_loop().call_later(grace, self._check_grace, run)

    def _check_grace(self, run: TurnRun) -> None:
        self.spawn(self._grace_over(run))

    async def _grace_over(self, run: TurnRun) -> None:
        run.cancel_timer = None
        if run.followers or run.finished:
            return
        try:
            remote = await self.store.count_followers(run.session_id)
        except StoreUnavailableError:
            remote = 0  # nobody can follow through a store that is down
        if run.followers or run.finished:
            return
        if remote == 0:
            run.chat.cancel()
            return
        # followers on other processes: look again later (one that stopped stops being counted)
        delay = max(self.limits.disconnect_grace, self.store.turn_lease / 3)
        run.cancel_timer = asyncio.get_running_loop().call_later(delay, self._check_grace, run)

    async def follower_left(self, session_id: str, follower_id: str) -> None:
        """Stop counting a remote follower and tell the process running the turn."""
        await self.store.remove_follower(session_id, follower_id)
        await self.store.publish_control(ControlMessage(session_id=session_id, action="followers"))

    def client_buffer(self, *, unsent: Callable[[], int], drop: Callable[[], None]) -> ClientBuffer:
        """A byte budget of `max_buffered_bytes` for one streaming connection (see `ClientBuffer`)."""
        client = ClientBuffer(self.limits.max_buffered_bytes, unsent=unsent, drop=drop)
        self.clients.add(client)
        return client

    # -- sessions --------------------------------------------------------------------------

    async def open_session(self, owner: str, session_id: str | None, *, create_missing: bool = False) -> SessionRecord:
        """The caller's session `session_id` (a new one when None); 404 for anyone else's."""
        if session_id is None:
            return await self._create(owner, uuid.uuid4().hex)
        if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
            raise BadRequestError("a session id is 1 to 64 letters, digits, '-' or '_'", code="bad_session_id")
        record = await self.store.get(session_id)
        if record is None and create_missing:
            return await self._create(owner, session_id)
        if record is None or record.owner != owner:
            raise SessionNotFoundError(
                f"no session {session_id!r} (it may have expired or been deleted): start a new session"
            )
        return record

    async def _create(self, owner: str, session_id: str) -> SessionRecord:
        limits = self.limits
        if await self.store.count_owned(owner) >= limits.max_sessions_per_user:
            raise TooManySessionsError(f"you already have {limits.max_sessions_per_user} sessions: delete one first")
        if await self.store.count() >= limits.max_sessions:
            raise TooManySessionsError(
                f"the server has the most sessions it keeps ({limits.max_sessions}): try again later, "
                "or delete a session you no longer need"
            )
        record = await self.store.create(session_id, owner=owner)
        recorder().session_created(owner)
        return record

    async def history(self, owner: str, session_id: str) -> list[Message]:
        """The session's history."""
        record = await self.open_session(owner, session_id)
        await self.store.touch(session_id)
        return list(record.history)

    async def delete(self, owner: str, session_id: str) -> None:
        """Stop the session's running turn, if any, and forget the session."""
        await self._drop(await self.open_session(owner, session_id))

    async def clear(self, owner: str, session_id: str) -> None:
        """Forget the session's history; refused while a turn runs."""
        await self.open_session(owner, session_id)
        if session_id in self._runs or await self.store.running_turn(session_id) is not None:
            raise SessionBusyError("a turn is running in this session: cancel it before clearing")
        await self.store.save_history(session_id, ())

    async def _drop(self, record: SessionRecord) -> None:
        """Stop the session's turn and delete the session, unless it is already another one.

        Waiting for the stopped turn and deleting take time (a networked store's round
        trips): meanwhile no turn may start in the session (`start_turn` refuses it), and a
        record deleted and re-created under the same id since, by anyone, is left alone.
        """
        session_id = record.session_id
        if session_id in self._deleting:
            return  # another delete of this session is under way
        self._deleting.add(session_id)
        try:
            run = self._runs.get(session_id)
            if run is not None and run.task is not None:
                run.chat.cancel()
                await asyncio.gather(asyncio.shield(run.task), return_exceptions=True)
            elif await self.store.turn_holder(session_id) is not None:  # running on another process: stop it there
                await self.store.publish_control(ControlMessage(session_id=session_id, action="cancel"))
            current = await self.store.get(session_id)
            if current is None or not _same_record(current, record):
                return
            await self.store.delete(session_id)
            recorder().session_deleted(record.owner)
        finally:
            self._deleting.discard(session_id)

    async def expire_idle(self, now: float | None = None) -> list[str]:
        """Delete the sessions idle for longer than the idle timeout at `now` (default: the time now); returns their ids."""
        now = time.time() if now is None else now
        expired = await self.store.idle_since(now - self.limits.idle_timeout)
        expired = [
            session_id
            for session_id in expired
            if session_id not in self._runs and await self.store.running_turn(session_id) is None
        ]
        for session_id in expired:
            record = await self.store.get(session_id)
            if record is not None:
                await self._drop(record)
        return expired

    # -- turns -----------------------------------------------------------------------------

    def check_message(self, message: Any) -> str:
        """The message, or a 400/413 error saying what is wrong with it."""
        if message is None:
            raise BadRequestError('a "message" is required', code="bad_message")
        if not isinstance(message, str):
            raise BadRequestError('"message" must be a string', code="bad_message")
        if not message.strip():
            raise BadRequestError('"message" must not be empty', code="bad_message")
        if len(message.encode("utf-8", "surrogatepass")) > self.limits.max_message_size:
            raise MessageTooLargeError(
                f"the message is over the limit of {self.limits.max_message_size} bytes: send a shorter one"
            )
        return message

    async def start_turn(
        self,
        owner: str,
        session_id: str | None,
        message: Any,
        *,
        create_missing: bool = False,
        client: ClientBuffer | None = None,
    ) -> Follower:
        """Start a turn in the caller's session and follow it from its first event (for `client`)."""
        message = self.check_message(message)
        self._check_turn_limits(owner)  # before a session is made for a turn that cannot run
        record = await self.open_session(owner, session_id, create_missing=create_missing)
        session_id = record.session_id
        self._check_not_deleting(session_id)
        self._listen()
        if not await self._begin_turn(session_id, message):
            raise SessionBusyError("this session is already answering a message: wait for it or cancel it")
        try:
            # the store may have suspended: the session may be under deletion, or deleted and re-created
            current = await self.store.get(session_id)
            self._check_not_deleting(session_id)
            if current is None or not _same_record(current, record):
                raise SessionNotFoundError(f"session {session_id!r} was deleted: start a new session")
            self._check_turn_limits(owner)  # again: others may have started turns while this one waited
            provider = (await self.provider_choice()).provider  # one provider, shared by every session
            chat = ChatSession(
                provider,
                tools=[*self.tools, *self.toolsets],
                session_id=session_id,
                settings=self.settings,
                history=current.history,
            )
            chat.analytics_scope = owner  # each user's dashboard shows their own turns
            run = TurnRun(current, chat, keep=self.store.replay_size)
            follower = Follower(self, session_id, run, after=0, client=client)
        except BaseException:
            # a turn that never started must not leave the session busy
            await self.store.end_turn(session_id, holder=self.holder)
            raise
        self._add_run(run)
        loop = asyncio.get_running_loop()
        run.task = loop.create_task(self._drive(run, message), name=f"streamchat {session_id}")
        run.task.add_done_callback(_log_failure)  # nobody else may ever look at a turn's outcome
        if self._leases is None:
            self._leases = loop.create_task(
                self._renew_leases(), name="leases of streamchat turns", context=contextvars.Context()
            )
            self._leases.add_done_callback(_log_failure)
        return follower

    async def _begin_turn(self, session_id: str, message: str) -> bool:
        """Take the session's turn lease, after ending the turn of a process that stopped, if any."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.store.turn_lease
        while not await self.store.begin_turn(session_id, holder=self.holder, message=message):
            holder = await self.store.turn_holder(session_id)
            if holder is None:
                await self.end_orphan(session_id)
                continue
            running = await self.store.running_turn(session_id)
            if running is None or running.holder == holder or loop.time() > deadline:
                return False  # a turn runs
            await asyncio.sleep(0.02)  # a process is ending an orphaned turn: it frees the session at once
        return True

    async def _renew_leases(self) -> None:
        """Renew the leases of the turns this process runs; a lease another process took means that turn must stop."""
        while True:
            await asyncio.sleep(self.store.turn_lease / 3)
            for run in list(self._runs.values()):
                async with run.lease:
                    if run.released:
                        continue
                    try:
                        kept = await self.store.renew_turn(run.session_id, holder=self.holder)
                    except StoreUnavailableError as exc:
                        self._store_failed(run, exc)
                        continue
                if not kept:
                    self.log.warning(
                        "streamchat: the lease of the turn in session %s was taken over: stopping the turn",
                        run.session_id,
                    )
                    run.chat.cancel()

    def _store_failed(self, run: TurnRun, exc: StoreUnavailableError) -> None:
        """Log, once per turn, that the store cannot be reached while the turn goes on."""
        if not run.store_failed:
            run.store_failed = True
            self.log.warning(
                "streamchat: the session store cannot be reached during the turn in session %s "
                "(the turn goes on for this process's followers): %s",
                run.session_id,
                exc.__cause__ or exc,
            )

    async def end_orphan(self, session_id: str) -> None:
        """End a turn whose process stopped: its partial answer goes to history, its stream gets error + done.

        In that order, and the lease freed last: a client told `done` finds the history complete
        and the session free.
        """
        orphan = await self.store.claim_orphan(session_id, holder=self.holder)
        if orphan is None:
            return  # none, or another process is ending it
        try:
            try:
                events = await self.store.events_after(session_id, 0)
            except ReplayGapError:
                events = []  # its start is no longer buffered: the followers end without a done
            if events and events[-1].type == "done":
                return  # it ended, and saved its history, just before its process stopped
            text = "".join(event.content for event in events if isinstance(event, TokenEvent))
            record = await self.store.get(session_id)
            if record is not None:
                history = [
                    *record.history,
                    Message(role="user", content=orphan.message),
                    Message(role="assistant", content=text, interrupted=True),
                ]
                await self.store.save_history(session_id, trim_history(history, self.limits.max_history_messages))
            if events:
                last = events[-1]
                error = ErrorEvent(
                    session_id=session_id,
                    turn_id=last.turn_id,
                    seq=last.seq + 1,
                    code="server_stopped",
                    message="the server running this turn stopped before the answer was complete: send the message again",
                    retryable=True,
                )
                done = DoneEvent(
                    session_id=session_id, turn_id=last.turn_id, seq=last.seq + 2, reason="error", text=text
                )
                await self.store.append_event(session_id, error)
                await self.store.append_event(session_id, done)
            self.log.warning("streamchat: ended the turn in session %s: the server running it stopped", session_id)
        finally:
            await self.store.end_turn(session_id, holder=self.holder)

    def _check_not_deleting(self, session_id: str) -> None:
        if session_id in self._deleting:
            raise SessionNotFoundError(f"session {session_id!r} is being deleted: start a new session")

    def _add_run(self, run: TurnRun) -> None:
        """Hold `run` as its session's running turn (in place of an ending one, if any), counted for its owner."""
        ending = self._runs.get(run.session_id)
        if ending is not None:
            self._uncount(ending)
        self._runs[run.session_id] = run
        self._running[run.record.owner] += 1

    def _remove_run(self, run: TurnRun) -> None:
        """Stop holding `run`, its session's running turn."""
        del self._runs[run.session_id]
        self._uncount(run)

    def _uncount(self, run: TurnRun) -> None:
        owner = run.record.owner
        self._running[owner] -= 1
        if not self._running[owner]:
            del self._running[owner]  # one entry per owner with turns running, not per owner ever seen

    def _check_turn_limits(self, owner: str) -> None:
        limits = self.limits
        mine = self._running[owner]
        if mine >= limits.max_running_turns_per_user:
            what = "1 turn running: wait for it" if mine == 1 else f"{mine} turns running: wait for one"
            raise TooManyTurnsError(f"you already have {what} to finish or cancel it")
        if len(self._runs) >= limits.max_running_turns:
            what = "1 message" if len(self._runs) == 1 else f"{len(self._runs)} messages"
            raise TooManyTurnsError(f"the server is already answering {what} (its limit): try again in a moment")

    async def _drive(self, run: TurnRun, message: str) -> None:
        try:
            # the turn's events that need no awaiting are handed on from the turn's own task (`_take_at_once`)
            events_of = run.chat.stream(message, consume=lambda event: self._take_at_once(run, event))
            stream = cast(AsyncGenerator[Event, None], events_of)  # an async generator
            # closed here, not by the loop's finalizer: a failure below stops the turn at once
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, ErrorEvent):
                        event = self._public_error(event)
                    if run.write_failure is not None:
                        raise run.write_failure
                    if event.type == "done":
                        # history first, and the session free: a client told `done` may read it and send the
                        # next message at once, on any process
                        await self._flush(run)
                        await self._save_history(run)
                        run.unwritten.append(event)
                        await self._flush(run)
                        await self._release(run)
                        run.publish(event)
                    else:
                        self._hand_on(run, event)
        finally:
            try:
                with contextlib.suppress(Exception):
                    await self._flush(run)  # a write failure already failed the turn
                await self._save_history(run)
            finally:
                await self._release(run)
                if run.cancel_timer is not None:
                    run.cancel_timer.cancel()
                run.finished = True
                if self._runs.get(run.session_id) is run:
                    self._remove_run(run)
                run.notify()

    def _hand_on(self, run: TurnRun, event: Event) -> None:
        """Write a turn's event (other than `done`) to the store, in batches while the turn goes on, and publish it."""
        run.unwritten.append(event)
        if (run.writer is None or run.writer.done()) and not self._write_now(run):
            run.writer = asyncio.get_running_loop().create_task(self._write_events(run), context=contextvars.Context())
        run.publish(event)

    def _take_at_once(self, run: TurnRun, event: Event) -> bool:
        """`_hand_on` an event at once, on the turn's task (`ChatSession.stream(consume=…)`); True when it did.

        Not `done` (its history is saved first) nor an error (made public first), nor after a write failed:
        those reach `_drive`'s own loop.
        """
        if event.type == "done" or isinstance(event, ErrorEvent) or run.write_failure is not None:
            return False
        self._hand_on(run, event)
        return True

    async def _write_events(self, run: TurnRun) -> None:
        """Write the turn's events to the store, each batch in one call, until none is left."""
        while run.unwritten and run.write_failure is None:
            batch, run.unwritten = run.unwritten, []
            try:
                await self.store.append_events(run.session_id, batch)
            except StoreUnavailableError as exc:
                self._store_failed(run, exc)  # this process's followers still get every event
            except Exception as exc:  # the turn's task raises it: one failure, logged once
                run.write_failure = exc

    def _write_now(self, run: TurnRun) -> bool:
        """Hand the unwritten events to a store that appends them without I/O (`append_events_now`), in order.

        False when it cannot: a writer task writes them. No task per event for the memory store.
        """
        if run.write_failure is not None or not self.store.append_events_now(run.session_id, run.unwritten):
            return False
        run.unwritten = []
        return True

    async def _flush(self, run: TurnRun) -> None:
        """Wait until every event of the turn so far is written; raises what the writing failed with."""
        while run.writer is not None and not run.writer.done():
            await asyncio.wait({run.writer})
        if run.unwritten and run.write_failure is None:
            await self._write_events(run)
        if run.write_failure is not None:
            raise run.write_failure

    async def _release(self, run: TurnRun) -> None:
        """End the turn in the store and free its lease, once."""
        async with run.lease:
            if run.released:
                return
            run.released = True
            try:
                await self.store.end_turn(run.session_id, holder=self.holder)
            except StoreUnavailableError as exc:
                self._store_failed(run, exc)  # its lease expires by itself

    async def _save_history(self, run: TurnRun) -> None:
        """Write the turn's history to its session, once (a store that is down is logged, the turn goes on)."""
        if run.saved:
            return
        run.saved = True
        try:
            current = await self.store.get(run.session_id)
            if current is not None and _same_record(current, run.record):  # never into a re-created session
                history = trim_history(run.chat.history, self.limits.max_history_messages)
                await self.store.save_history(run.session_id, history)
        except StoreUnavailableError as exc:
            self._store_failed(run, exc)

    def _public_error(self, event: ErrorEvent) -> ErrorEvent:
        """The error event as clients see it: internals go to the server log under an error id."""
        code = event.code
        if code not in _PRIVATE_ERRORS and not code.startswith(("backend_", "http_")):
            return event
        error_id = new_error_id()
        self.log.warning(
            "streamchat: error id %s in session %s, turn %s: %s: %r",
            error_id,
            event.session_id,
            event.turn_id,
            code,
            event.message,
        )
        what = _PRIVATE_ERRORS.get(code, "the model's backend failed the request")
        message = f"{what}: try again; if it persists, tell the server's admin (error id {error_id} in the server log)"
        return event.model_copy(update={"message": message})

    async def resume(
        self,
        owner: str,
        session_id: str,
        last_seq: int,
        turn_id: str | None = None,
        *,
        client: ClientBuffer | None = None,
    ) -> Follower | None:
        """Follow turn `turn_id` (None: the session's latest turn) after event `last_seq`.

        Returns None when nothing is left (events go to `client`'s budget); 410 (`ReplayGapError`) when the session has
        moved on to another turn, or the events are no longer buffered.
        """
        await self.open_session(owner, session_id)
        run = self._runs.get(session_id)
        if run is None and await self.store.running_turn(session_id) is not None:
            try:
                await self.store.events_after(session_id, last_seq)  # refused now rather than mid-stream
            except ReplayGapError as exc:
                raise ReplayGapError(
                    f"{exc.message}: read the answer in the session's history "
                    f"(GET api/streamchat/sessions/{session_id})"
                ) from exc
            self._listen()
            remote = RemoteFollower(self, session_id, last_seq, turn_id=turn_id, client=client)
            await remote.register()
            if turn_id is not None and await self.store.latest_turn_id(session_id) not in (turn_id, None):
                remote.close()
                raise ReplayGapError(
                    f"turn {turn_id!r} is over and the session has moved on to another turn: read the answer "
                    f"in the session's history (GET api/streamchat/sessions/{session_id})",
                    code="turn_replaced",
                )
            return remote
        if turn_id is not None and await self.store.latest_turn_id(session_id) != turn_id:
            raise ReplayGapError(
                f"turn {turn_id!r} is over and the session has moved on to another turn: read the answer "
                f"in the session's history (GET api/streamchat/sessions/{session_id})",
                code="turn_replaced",
            )
        try:
            pending = (
                run.events_after(last_seq) if run is not None else await self.store.events_after(session_id, last_seq)
            )
        except ReplayGapError as exc:
            raise ReplayGapError(
                f"{exc.message}: read the answer in the session's history (GET api/streamchat/sessions/{session_id})"
            ) from exc
        if run is None and not pending:
            return None
        return Follower(self, session_id, run, after=last_seq, turn_id=turn_id, client=client)

    async def collect(self, follower: Follower) -> ChatResult:
        """Wait for the followed turn to end and return its result."""
        result = ResultCollector()
        try:
            while not follower.ended:
                for event in await follower.next_events():
                    result.add(event)
        finally:
            follower.close()
        return result.build()

    async def health(self) -> dict[str, Any]:
        """Status, version, the provider and whether its backend answers (its address stays in the log)."""
        provider = (await self.provider_choice()).provider
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "provider": public_provider(provider),
            "reachable": await provider.reachable(HEALTH_PROBE_TIMEOUT),
        }
        if not body["reachable"]:
            error_id = new_error_id()
            endpoint = getattr(provider, "base_url", None)
            self.log.warning(
                "streamchat: health: error id %s: %s at %r does not answer", error_id, provider.name, endpoint
            )
            body["error"] = (
                "the model's backend does not answer: check that it runs "
                f"(error id {error_id} in the server log has its address)"
            )
        return body

    async def tool_definitions(self) -> list[dict[str, Any]]:
        """The tools the model may call, the toolsets' included (listing starts them); one left out is logged."""
        tools, problems = await gather_tools(toolset(self.tools), self.toolsets)
        for problem in problems:
            self.log.warning("streamchat: tools: %s", problem.message)
        return [t.definition.model_dump() for t in tools.values()]

    async def cancel(self, owner: str, session_id: str) -> bool:
        """Stop the session's running turn, on whichever process runs it; False if none runs."""
        await self.open_session(owner, session_id)
        run = self._runs.get(session_id)
        if run is not None:
            return run.chat.cancel()
        if await self.store.turn_holder(session_id) is None:
            return False
        return await self.store.publish_control(ControlMessage(session_id=session_id, action="cancel")) > 0

    async def control_tool(self, session_id: str, call_id: str, action: ToolAction) -> bool:
        """Cancel, pause or resume a tool call of the session's running turn, on whichever process runs it.

        The caller checked the session is theirs. True if it acted (for a turn on another process: if the
        request reached a process, which ignores it when the call is not running).
        """
        run = self._runs.get(session_id)
        if run is not None:
            return run.chat.control_tool(call_id, action)
        if await self.store.turn_holder(session_id) is None:
            return False
        message = ControlMessage(session_id=session_id, action="tool", call_id=call_id, tool_action=action)
        return await self.store.publish_control(message) > 0

    def running(self, session_id: str) -> ChatSession | None:
        """The chat of the session's running turn, if one runs in this process."""
        run = self._runs.get(session_id)
        return None if run is None else run.chat

    async def aclose(self) -> None:
        """Cancel every running turn and close the store (the app closes the shared provider)."""
        for run in list(self._runs.values()):
            run.chat.cancel()
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in (self._listener, self._leases):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.metrics is not None:
            await self.metrics.aclose()
        await self.store.aclose()
