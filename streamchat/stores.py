"""Session stores: where the server keeps each session's history, owner and replay buffer.

`SessionStore` is the interface (async, so a networked store such as Redis fits it);
`MemoryStore` keeps everything in this process. Everything a store holds is a pydantic
model or an event, so it serialises to JSON as is.

A store keeps, per session:
- a `SessionRecord`: owner, history, creation and last-activity times;
- a turn flag, so one turn runs at a time even when several processes share the store;
- the replay buffer: the latest turn's events (bounded), so a client that lost its SSE
  connection can resume with `Last-Event-ID`.

Example:
    >>> import asyncio
    >>> store = MemoryStore()
    >>> record = asyncio.run(store.create("s1", owner="alice"))
    >>> record.owner
    'alice'
"""

from __future__ import annotations

import abc
import collections
import itertools
import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from .errors import ReplayGapError, SessionExistsError
from .events import Event
from .messages import Message

__all__ = ["MemoryStore", "SessionRecord", "SessionStore"]


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


class SessionStore(abc.ABC):
    """The interface of a session store. Every method is a coroutine.

    Args:
        replay_size: how many events of the latest turn each session keeps for resume.
    """

    def __init__(self, *, replay_size: int = 2000) -> None:
        if replay_size < 1:
            raise ValueError("replay_size must be at least 1")
        self.replay_size = replay_size

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
    async def begin_turn(self, session_id: str) -> bool:
        """Mark a turn as running and empty the replay buffer for it; False if one already runs."""

    @abc.abstractmethod
    async def end_turn(self, session_id: str) -> None:
        """Clear the session's running-turn mark."""

    @abc.abstractmethod
    async def append_event(self, session_id: str, event: Event) -> None:
        """Add an event of the running turn to the replay buffer."""

    @abc.abstractmethod
    async def latest_turn_id(self, session_id: str) -> str | None:
        """The `turn_id` of the buffered events (the latest turn's); None before its first event."""

    @abc.abstractmethod
    async def events_after(self, session_id: str, seq: int) -> list[Event]:
        """The buffered events of the latest turn with a `seq` above `seq`, in order.

        Raises `ReplayGapError` when some of them were already dropped from the buffer.
        """

    async def aclose(self) -> None:  # noqa: B027  (an optional hook: nothing to release by default)
        """Release the store's connections (nothing to do for the memory store)."""


class MemoryStore(SessionStore):
    """Keeps sessions in this process's memory; the default store.

    Args:
        replay_size: how many events of the latest turn each session keeps for resume.
    """

    def __init__(self, *, replay_size: int = 2000) -> None:
        super().__init__(replay_size=replay_size)
        self._records: dict[str, SessionRecord] = {}
        self._turns: set[str] = set()
        self._buffers: dict[str, collections.deque[Event]] = {}
        self._dropped: dict[str, int] = {}  # highest seq pushed out of each buffer

    async def create(self, session_id: str, *, owner: str) -> SessionRecord:
        if session_id in self._records:
            raise SessionExistsError(f"session {session_id!r} already exists")
        record = SessionRecord(session_id=session_id, owner=owner)
        self._records[session_id] = record
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
        self._turns.discard(session_id)
        self._buffers.pop(session_id, None)
        self._dropped.pop(session_id, None)
        return self._records.pop(session_id, None) is not None

    async def count_owned(self, owner: str) -> int:
        return sum(1 for record in self._records.values() if record.owner == owner)

    async def count(self) -> int:
        return len(self._records)

    async def idle_since(self, before: float) -> list[str]:
        return [sid for sid, record in self._records.items() if record.last_activity < before]

    async def begin_turn(self, session_id: str) -> bool:
        if session_id in self._turns:
            return False
        self._turns.add(session_id)
        self._buffers[session_id] = collections.deque(maxlen=self.replay_size)
        self._dropped[session_id] = 0
        return True

    async def end_turn(self, session_id: str) -> None:
        self._turns.discard(session_id)

    async def append_event(self, session_id: str, event: Event) -> None:
        buffer = self._buffers.get(session_id)
        if buffer is None:
            return  # the session was deleted
        if len(buffer) == buffer.maxlen:
            self._dropped[session_id] = buffer[0].seq
        buffer.append(event)

    async def latest_turn_id(self, session_id: str) -> str | None:
        buffer = self._buffers.get(session_id)
        return buffer[-1].turn_id if buffer else None

    async def events_after(self, session_id: str, seq: int) -> list[Event]:
        if seq < self._dropped.get(session_id, 0):
            raise ReplayGapError(
                f"the events after {seq} are no longer buffered (the buffer keeps {self.replay_size} events)"
            )
        buffer = self._buffers.get(session_id)
        if not buffer or buffer[-1].seq <= seq:
            return []
        start = max(0, seq - buffer[0].seq + 1)  # seqs in a buffer are consecutive
        return list(itertools.islice(buffer, start, None))
