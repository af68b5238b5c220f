"""Session stores: where the server keeps each session's history, owner, running turn and replay buffer.

`SessionStore` is the interface (async, so a networked store fits it); `MemoryStore`
keeps everything in this process; `streamchat.redis_store.RedisStore` keeps it in Redis,
so several server processes share sessions. Everything a store holds is a pydantic
model or an event, so it serialises to JSON as is.

A store keeps, per session:
- a `SessionRecord`: owner, history, creation and last-activity times;
- the running turn: a `RunningTurn` (who runs it, its message) and a lease its holder
  renews; a lease that is not renewed expires, and the turn is then an orphan that
  another process may claim (`claim_orphan`) to end it;
- the replay buffer: the latest turn's events (bounded), which followers on any process
  read (`events_after`, `wait_events`), so a client can resume with `Last-Event-ID`;
- the turn's followers (`add_follower`), counted over every process sharing the store;
- a control channel (`publish_control`, `control_messages`) carrying cancel and tool
  control to the process running the turn.

Example:
    >>> import asyncio
    >>> store = MemoryStore()
    >>> record = asyncio.run(store.create("s1", owner="alice"))
    >>> record.owner
    'alice'
"""

from __future__ import annotations

import abc
import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

from .errors import ReplayGapError, SessionExistsError
from .events import Event, parse_event
from .messages import Message

__all__ = ["ControlMessage", "MemoryStore", "RunningTurn", "SessionRecord", "SessionStore"]


class SessionRecord(BaseModel):
    """What a store keeps about one session."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    """The session's id."""
    owner: str
    """The identity (Jupyter user) that created the session; only it may use the session."""
    history: tuple[Message, ...] = ()
    """The conversation so far, without the system prompt."""
    created_at: float = Field(default_factory=time.time)
    """Creation time, seconds since the epoch."""
    last_activity: float = Field(default_factory=time.time)
    """Time of the last message, event or read, seconds since the epoch."""


class RunningTurn(BaseModel):
    """What a store keeps about a session's running turn, besides its lease."""

    model_config = ConfigDict(frozen=True)

    holder: str
    """The id of the process running the turn (the lease's holder when it began)."""
    message: str = ""
    """The user message the turn answers (kept so an orphaned turn's history can be written)."""
    started_at: float = Field(default_factory=time.time)
    """When the turn began, seconds since the epoch."""


class ControlMessage(BaseModel):
    """A request for the process running a session's turn, sent over the store's control channel."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    """The session whose turn it is for."""
    action: Literal["cancel", "tool", "followers"]
    """``cancel`` stops the turn; ``tool`` controls one tool call; ``followers`` says the follower count changed."""
    call_id: str | None = None
    """The tool call (``tool`` only)."""
    tool_action: Literal["cancel", "pause", "resume"] | None = None
    """What to do to the tool call (``tool`` only)."""


class SessionStore(abc.ABC):
    """The interface of a session store. Every method is a coroutine.

    Args:
        replay_size: how many events of the latest turn each session keeps for resume.
        idle_timeout: seconds a session lives without activity (a networked store expires it by itself).
        turn_lease: seconds a running turn's lease lasts unless its holder renews it.
    """

    def __init__(self, *, replay_size: int = 2000, idle_timeout: float = 3600.0, turn_lease: float = 5.0) -> None:
        if replay_size < 1:
            raise ValueError("replay_size must be at least 1")
        if idle_timeout <= 0 or turn_lease <= 0:
            raise ValueError("idle_timeout and turn_lease must be positive")
        self.replay_size = replay_size
        self.idle_timeout = idle_timeout
        self.turn_lease = turn_lease

    @abc.abstractmethod
    async def create(self, session_id: str, *, owner: str) -> SessionRecord:
        """Create an empty session; raises `SessionExistsError` if the id is taken."""

    @abc.abstractmethod
    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's record, or None if there is no such session."""

    @abc.abstractmethod
    async def save_history(self, session_id: str, history: Sequence[Message]) -> None:
        """Replace the session's history and mark it active now."""

    @abc.abstractmethod
    async def touch(self, session_id: str) -> None:
        """Mark the session active now."""

    @abc.abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Forget the session, its turn flag and its replay buffer; False if it did not exist."""

    @abc.abstractmethod
    async def count_owned(self, owner: str) -> int:
        """How many sessions `owner` has."""

    @abc.abstractmethod
    async def count(self) -> int:
        """How many sessions there are, every owner's together."""

    @abc.abstractmethod
    async def idle_since(self, before: float) -> list[str]:
        """Ids of the sessions whose last activity is older than `before` (epoch seconds)."""

    @abc.abstractmethod
    async def begin_turn(self, session_id: str, *, holder: str = "local", message: str = "") -> bool:
        """Take the session's turn lease for `holder` and empty the replay buffer; False if a turn runs (or an orphan waits).

        The lease lasts `turn_lease` seconds unless `renew_turn` extends it.
        """

    @abc.abstractmethod
    async def renew_turn(self, session_id: str, *, holder: str) -> bool:
        """Extend `holder`'s lease by `turn_lease` seconds (taking it again if the store lost it); False if another holds it."""

    @abc.abstractmethod
    async def end_turn(self, session_id: str, *, holder: str | None = None) -> None:
        """End the session's running turn and free its lease (only `holder`'s, when given)."""

    @abc.abstractmethod
    async def running_turn(self, session_id: str) -> RunningTurn | None:
        """The session's running turn, or None; an orphan (its lease expired) counts until claimed and ended."""

    @abc.abstractmethod
    async def turn_holder(self, session_id: str) -> str | None:
        """Who holds the session's turn lease now; None when nobody does (no turn, or its holder stopped)."""

    @abc.abstractmethod
    async def claim_orphan(self, session_id: str, *, holder: str) -> RunningTurn | None:
        """Take the lease of a turn whose holder stopped renewing it, so `holder` can end it; None if there is none."""

    @abc.abstractmethod
    async def append_event(self, session_id: str, event: Event) -> None:
        """Add an event of the running turn to the replay buffer."""

    async def append_events(self, session_id: str, events: Sequence[Event]) -> None:
        """Add several events of the running turn, in order (a networked store does it in one round trip)."""
        for event in events:
            await self.append_event(session_id, event)

    def append_events_now(self, session_id: str, events: Sequence[Event]) -> bool:
        """Add the events as `append_events` does, at once, when the store needs no I/O for it (True).

        False: nothing was added, and the caller awaits `append_events` instead (the default: a store
        that appends over the network, or a subclass with appending of its own).
        """
        return False

    @abc.abstractmethod
    async def latest_turn_id(self, session_id: str) -> str | None:
        """The `turn_id` of the buffered events (the latest turn's); None before its first event."""

    @abc.abstractmethod
    async def events_after(self, session_id: str, seq: int) -> list[Event]:
        """The buffered events of the latest turn with a `seq` above `seq`, in order.

        Raises `ReplayGapError` when some of them were already dropped from the buffer.
        """

    @abc.abstractmethod
    async def wait_events(self, session_id: str, seq: int, timeout: float) -> list[Event]:
        """Like `events_after`, but waits up to `timeout` seconds for some to come ([] when none came)."""

    @abc.abstractmethod
    async def add_follower(self, session_id: str, follower_id: str) -> None:
        """Count a follower of the session's turn for `turn_lease` seconds (call again to keep it counted)."""

    @abc.abstractmethod
    async def remove_follower(self, session_id: str, follower_id: str) -> None:
        """Stop counting a follower."""

    @abc.abstractmethod
    async def count_followers(self, session_id: str) -> int:
        """How many followers the session's turn has, on every process sharing the store."""

    @abc.abstractmethod
    async def publish_control(self, message: ControlMessage) -> int:
        """Send a control message to every process listening; returns how many listen."""

    @abc.abstractmethod
    def control_messages(self) -> AsyncIterator[ControlMessage]:
        """The control messages published from now on (an endless async iterator; close it to stop)."""

    async def aclose(self) -> None:  # noqa: B027  (an optional hook: nothing to release by default)
        """Release the store's connections (nothing to do for the memory store)."""


_Kept = tuple[int, str, bytes | Event]
"""An event in `MemoryStore`'s replay buffer: its seq, its turn id, and its JSON (the event itself if it has none)."""


def _keep(event: Event) -> _Kept:
    """An event as the replay buffer keeps it: JSON bytes, which the garbage collector never walks.

    A server keeps every session's latest turn, for thousands of sessions: as pydantic objects
    (each with its dict and fields set) they were most of the heap that each full collection
    walks, and they paused every stream for longer as sessions piled up. The JSON is pydantic's
    own (which its parsing reads back to an equal event); an event it cannot write is kept as is.
    """
    try:
        data = event.__pydantic_serializer__.to_json(event)
    except PydanticSerializationError:
        return (event.seq, event.turn_id, event)
    return (event.seq, event.turn_id, data)


def _kept_event(kept: _Kept) -> Event:
    """The event a replay buffer entry holds (parsed and checked again from its JSON)."""
    data = kept[2]
    return data if not isinstance(data, bytes) else parse_event(data)


class MemoryStore(SessionStore):
    """Keeps sessions in this process's memory; the default store.

    Args:
        replay_size: how many events of the latest turn each session keeps for resume.
        idle_timeout: unused here (the server's sweep deletes idle sessions); kept for the interface.
        turn_lease: seconds a running turn's lease lasts unless renewed.
    """

    def __init__(self, *, replay_size: int = 2000, idle_timeout: float = 3600.0, turn_lease: float = 5.0) -> None:
        super().__init__(replay_size=replay_size, idle_timeout=idle_timeout, turn_lease=turn_lease)
        self._records: dict[str, SessionRecord] = {}
        self._owned: collections.Counter[str] = collections.Counter()  # sessions per owner: no scan per new session
        self._turns: dict[str, RunningTurn] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # holder, monotonic deadline
        self._buffers: dict[str, collections.deque[_Kept]] = {}  # each event as (seq, turn_id, its JSON)
        self._dropped: dict[str, int] = {}  # highest seq pushed out of each buffer
        self._appended: dict[str, asyncio.Event] = {}  # set (and replaced) on each event appended
        self._followers: dict[str, dict[str, float]] = {}  # follower id -> monotonic deadline
        self._listeners: set[asyncio.Queue[ControlMessage]] = set()

    async def create(self, session_id: str, *, owner: str) -> SessionRecord:
        if session_id in self._records:
            raise SessionExistsError(f"session {session_id!r} already exists")
        record = SessionRecord(session_id=session_id, owner=owner)
        self._records[session_id] = record
        self._owned[owner] += 1
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def save_history(self, session_id: str, history: Sequence[Message]) -> None:
        record = self._records.get(session_id)
        if record is not None:
            self._records[session_id] = record.model_copy(
                update={"history": tuple(history), "last_activity": time.time()}
            )

    async def touch(self, session_id: str) -> None:
        record = self._records.get(session_id)
        if record is not None:
            self._records[session_id] = record.model_copy(update={"last_activity": time.time()})

    async def delete(self, session_id: str) -> bool:
        self._turns.pop(session_id, None)
        self._leases.pop(session_id, None)
        self._buffers.pop(session_id, None)
        self._dropped.pop(session_id, None)
        self._followers.pop(session_id, None)
        self._wake(session_id)
        record = self._records.pop(session_id, None)
        if record is None:
            return False
        self._owned[record.owner] -= 1
        if not self._owned[record.owner]:
            del self._owned[record.owner]
        return True

    async def count_owned(self, owner: str) -> int:
        return self._owned[owner]

    async def count(self) -> int:
        return len(self._records)

    async def idle_since(self, before: float) -> list[str]:
        return [sid for sid, record in self._records.items() if record.last_activity < before]

    # -- turns and leases ---------------------------------------------------------------------

    def _lease(self, session_id: str) -> str | None:
        lease = self._leases.get(session_id)
        if lease is None or lease[1] <= time.monotonic():
            self._leases.pop(session_id, None)
            return None
        return lease[0]

    def _take(self, session_id: str, holder: str) -> None:
        self._leases[session_id] = (holder, time.monotonic() + self.turn_lease)

    async def begin_turn(self, session_id: str, *, holder: str = "local", message: str = "") -> bool:
        if self._lease(session_id) is not None or session_id in self._turns:
            return False
        self._take(session_id, holder)
        self._turns[session_id] = RunningTurn(holder=holder, message=message)
        self._buffers[session_id] = collections.deque(maxlen=self.replay_size)
        self._dropped[session_id] = 0
        return True

    async def renew_turn(self, session_id: str, *, holder: str) -> bool:
        current = self._lease(session_id)
        if current is not None and current != holder:
            return False
        self._take(session_id, holder)
        return True

    async def end_turn(self, session_id: str, *, holder: str | None = None) -> None:
        current = self._lease(session_id)
        if holder is None or current is None or current == holder:
            self._leases.pop(session_id, None)
            self._turns.pop(session_id, None)

    async def running_turn(self, session_id: str) -> RunningTurn | None:
        return self._turns.get(session_id)

    async def turn_holder(self, session_id: str) -> str | None:
        return self._lease(session_id)

    async def claim_orphan(self, session_id: str, *, holder: str) -> RunningTurn | None:
        turn = self._turns.get(session_id)
        if turn is None or self._lease(session_id) is not None:
            return None
        self._take(session_id, holder)
        return turn

    # -- the replay buffer --------------------------------------------------------------------

    def _wake(self, session_id: str) -> None:
        appended = self._appended.pop(session_id, None)
        if appended is not None:
            appended.set()

    async def append_event(self, session_id: str, event: Event) -> None:
        self._append(session_id, event)

    def append_events_now(self, session_id: str, events: Sequence[Event]) -> bool:
        cls = type(self)
        if cls.append_event is not MemoryStore.append_event or cls.append_events is not SessionStore.append_events:
            return False  # a subclass's own appending is awaited
        for event in events:
            self._append(session_id, event)
        return True

    def _append(self, session_id: str, event: Event) -> None:
        buffer = self._buffers.get(session_id)
        if buffer is None:
            return  # the session was deleted
        if buffer and event.seq <= buffer[-1][0] and event.turn_id == buffer[-1][1]:
            return  # already there (an orphan's end written by two processes)
        if len(buffer) == buffer.maxlen:
            self._dropped[session_id] = buffer[0][0]
        buffer.append(_keep(event))
        self._wake(session_id)

    async def latest_turn_id(self, session_id: str) -> str | None:
        buffer = self._buffers.get(session_id)
        return buffer[-1][1] if buffer else None

    async def events_after(self, session_id: str, seq: int) -> list[Event]:
        if seq < self._dropped.get(session_id, 0):
            raise ReplayGapError(
                f"the events after {seq} are no longer buffered (the buffer keeps {self.replay_size} events)"
            )
        buffer = self._buffers.get(session_id)
        if not buffer or buffer[-1][0] <= seq:
            return []
        start = max(0, seq - buffer[0][0] + 1)  # seqs in a buffer are consecutive
        return [_kept_event(kept) for kept in itertools.islice(buffer, start, None)]

    async def wait_events(self, session_id: str, seq: int, timeout: float) -> list[Event]:
        events = await self.events_after(session_id, seq)
        if events or timeout <= 0:
            return events
        appended = self._appended.setdefault(session_id, asyncio.Event())
        try:
            await asyncio.wait_for(appended.wait(), timeout)
        except TimeoutError:
            return []
        return await self.events_after(session_id, seq)

    # -- followers and control ----------------------------------------------------------------

    async def add_follower(self, session_id: str, follower_id: str) -> None:
        self._followers.setdefault(session_id, {})[follower_id] = time.monotonic() + self.turn_lease

    async def remove_follower(self, session_id: str, follower_id: str) -> None:
        followers = self._followers.get(session_id)
        if followers is not None:
            followers.pop(follower_id, None)
            if not followers:
                del self._followers[session_id]

    async def count_followers(self, session_id: str) -> int:
        now = time.monotonic()
        return sum(1 for deadline in self._followers.get(session_id, {}).values() if deadline > now)

    async def publish_control(self, message: ControlMessage) -> int:
        for queue in self._listeners:
            queue.put_nowait(message)
        return len(self._listeners)

    async def control_messages(self) -> AsyncIterator[ControlMessage]:
        queue: asyncio.Queue[ControlMessage] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)
