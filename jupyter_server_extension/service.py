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

Slow clients: each streaming connection has a `ClientBuffer` counting what waits for it
(events in its followers' inboxes, bytes its socket has not taken). Past
`Limits.max_buffered_bytes` the connection is dropped, and its turns go on for the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from streamchat._version import __version__
from streamchat.analytics import recorder
from streamchat.errors import (
    BadRequestError,
    MessageTooLargeError,
    ReplayGapError,
    SessionBusyError,
    SessionNotFoundError,
    TooManySessionsError,
    TooManyTurnsError,
)
from streamchat.events import ErrorEvent, Event
from streamchat.messages import Message
from streamchat.providers import Provider, ProviderChoice
from streamchat.result import ChatResult, ResultCollector
from streamchat.session import ChatSession
from streamchat.settings import Settings
from streamchat.stores import SessionRecord, SessionStore
from streamchat.tools.definition import Tool, toolset
from streamchat.tools.toolsets import Toolset, gather_tools

__all__ = [
    "SERVICE_SETTING",
    "SESSION_ID_PATTERN",
    "ChatService",
    "ClientBuffer",
    "Follower",
    "Limits",
    "trim_history",
]

SERVICE_SETTING = "streamchat_service"
"""The Tornado settings key under which the extension puts its `ChatService` for the handlers."""

HEALTH_PROBE_TIMEOUT = 2.0
"""Seconds the health route waits for the backend to answer."""

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""What a session id may be: 1–64 letters, digits, `-` or `_`."""
SESSION_ID = re.compile(SESSION_ID_PATTERN)

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

    def __init__(self, record: SessionRecord, chat: ChatSession) -> None:
        self.session_id = record.session_id
        self.record = record
        """The session the turn runs in: its history goes back there and nowhere else."""
        self.chat = chat
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        self.followers: set[Follower] = set()
        self.cancel_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.changed: asyncio.Future[None] = self._loop.create_future()

    def publish(self, event: Event) -> None:
        """Hand an event to every attached follower (a client over its limit is dropped instead) and wake them."""
        size = 0
        for follower in list(self.followers):
            client = follower.client
            if client is not None:
                if not client.admit():
                    continue
                size = size or len(event.model_dump_json())
                client.queued += size
                follower.queued += size
            follower.inbox.append(event)
        self.notify()

    def notify(self) -> None:
        """Wake every follower waiting for a new event."""
        changed, self.changed = self.changed, self._loop.create_future()
        changed.set_result(None)


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
        self._closed = asyncio.get_running_loop().create_future()
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
            changed = run.changed if run is not None else None
            if not self._backlog_read:
                self._backlog_read = True
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
            if changed is None or run is None or run.finished:
                self.ended = True  # the turn ended without a (further) done, e.g. the server is stopping
                return []
            await asyncio.wait({changed, self._closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if self._closed.done():
                self.ended = True
            elif not changed.done():
                return []  # timed out: the caller may send a heartbeat
        return []

    def close(self) -> None:
        """Stop following; the last follower to leave a running turn starts its cancel countdown."""
        if self._closed.done():
            return
        self._closed.set_result(None)
        self.inbox.clear()
        if self.client is not None:
            self.client.queued -= self.queued
        self.queued = 0
        run = self.run
        if run is None:
            return
        run.followers.discard(self)
        self.run = None  # a closed follower keeps nothing of the turn alive
        if not run.followers and not run.finished:
            grace = self.service.limits.disconnect_grace
            run.cancel_timer = asyncio.get_running_loop().call_later(grace, run.chat.cancel)


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
        self._runs: dict[str, TurnRun] = {}
        self._deleting: set[str] = set()  # no turn may start in these sessions

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
        if session_id in self._runs:
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
        expired = [session_id for session_id in expired if session_id not in self._runs]
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
        if not await self.store.begin_turn(session_id):
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
            run = TurnRun(current, chat)
            follower = Follower(self, session_id, run, after=0, client=client)
        except BaseException:
            await self.store.end_turn(session_id)  # a turn that never started must not leave the session busy
            raise
        self._runs[session_id] = run
        run.task = asyncio.get_running_loop().create_task(self._drive(run, message), name=f"streamchat {session_id}")
        run.task.add_done_callback(_log_failure)  # nobody else may ever look at a turn's outcome
        return follower

    def _check_not_deleting(self, session_id: str) -> None:
        if session_id in self._deleting:
            raise SessionNotFoundError(f"session {session_id!r} is being deleted: start a new session")

    def _check_turn_limits(self, owner: str) -> None:
        limits = self.limits
        mine = sum(1 for run in self._runs.values() if run.record.owner == owner)
        if mine >= limits.max_running_turns_per_user:
            what = "1 turn running: wait for it" if mine == 1 else f"{mine} turns running: wait for one"
            raise TooManyTurnsError(f"you already have {what} to finish or cancel it")
        if len(self._runs) >= limits.max_running_turns:
            what = "1 message" if len(self._runs) == 1 else f"{len(self._runs)} messages"
            raise TooManyTurnsError(f"the server is already answering {what} (its limit): try again in a moment")

    async def _drive(self, run: TurnRun, message: str) -> None:
        try:
            # closed here, not by the loop's finalizer: a failure below stops the turn at once
            stream = cast(AsyncGenerator[Event, None], run.chat.stream(message))  # an async generator
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, ErrorEvent):
                        event = self._public_error(event)
                    await self.store.append_event(run.session_id, event)
                    run.publish(event)
        finally:
            try:
                current = await self.store.get(run.session_id)
                if current is not None and _same_record(current, run.record):  # never into a re-created session
                    history = trim_history(run.chat.history, self.limits.max_history_messages)
                    await self.store.save_history(run.session_id, history)
            finally:
                await self.store.end_turn(run.session_id)
                if run.cancel_timer is not None:
                    run.cancel_timer.cancel()
                run.finished = True
                if self._runs.get(run.session_id) is run:
                    del self._runs[run.session_id]
                run.notify()

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
        if turn_id is not None and await self.store.latest_turn_id(session_id) != turn_id:
            raise ReplayGapError(
                f"turn {turn_id!r} is over and the session has moved on to another turn: read the answer "
                f"in the session's history (GET api/streamchat/sessions/{session_id})",
                code="turn_replaced",
            )
        try:
            pending = await self.store.events_after(session_id, last_seq)
        except ReplayGapError as exc:
            raise ReplayGapError(
                f"{exc.message}: read the answer in the session's history (GET api/streamchat/sessions/{session_id})"
            ) from exc
        run = self._runs.get(session_id)
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
        await self.store.aclose()
