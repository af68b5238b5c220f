"""`RedisStore`: the session store in Redis (or Valkey), so several server processes share sessions and turns.

It implements `SessionStore` with redis-py's asyncio client over a `BlockingConnectionPool`.
Every key starts with the store's prefix (``streamchat:`` by default, so several
deployments can share one Redis) and every key has a TTL:

- ``<prefix>session:<id>``: the `SessionRecord` as JSON; TTL the idle timeout, refreshed on activity;
- ``<prefix>index`` and ``<prefix>owner:<owner>``: sorted sets of session ids by last activity
  (for the counts and the idle sweep); TTL the idle timeout, refreshed on each write;
- ``<prefix>lease:<id>``: the running turn's lease, holding its holder's id (``SET NX PX``), TTL
  `turn_lease`, renewed by the holder's heartbeat;
- ``<prefix>turn:<id>``: the `RunningTurn` as JSON, until the turn ends (TTL the idle timeout);
- ``<prefix>events:<id>``: the latest turn's events, a Redis Stream whose entry ids are
  ``<seq>-0`` (so ids compare as integers and an event cannot be added twice), trimmed to
  `replay_size` entries, expiring the idle timeout after its last event;
- ``<prefix>followers:<id>``: a sorted set of follower ids by the time they stop counting;
- the pub/sub channel ``<prefix>control``: `ControlMessage` as JSON.

A Redis that cannot be reached (or does not answer within the socket timeout) raises
`StoreUnavailableError`; the client reconnects by itself on the next call, so a
restarted Redis serves the next request.

Example:
    >>> store = RedisStore.from_url("redis://localhost:6379/0", prefix="myapp:")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ConfigurationError, ReplayGapError, SessionExistsError, StoreUnavailableError
from .events import Event, parse_event
from .messages import Message
from .stores import ControlMessage, RunningTurn, SessionRecord, SessionStore

__all__ = ["DEFAULT_PREFIX", "RedisStore", "check_reachable", "describe_url"]

DEFAULT_PREFIX = "streamchat:"
"""The key prefix of a store made without one."""

MAX_BLOCK = 1.0
"""Longest ``XREAD BLOCK``, in seconds: shorter than the client's socket timeout, so a wait never reads as a dead server."""

SOCKET_TIMEOUT = 5.0
"""Seconds a Redis command may take before the store reports Redis unavailable."""

UNAVAILABLE = "the session store (Redis) cannot be reached: try again in a moment"
"""What a `StoreUnavailableError` says; its cause, Redis's own error, names the address."""

P = ParamSpec("P")
T = TypeVar("T")

_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('DEL', KEYS[3])
return 1
"""
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_END = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' or not current or current == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
return 1
"""
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
"""
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV, 2 do
  redis.pcall('XADD', KEYS[2], 'MAXLEN', ARGV[1], ARGV[i], 'e', ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local turn = redis.call('GET', KEYS[2])
if not turn then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return turn
"""


def describe_url(url: str) -> str:
    """The store's URL without its password, fit for a log line."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{'***@' if at and credentials else ''}{host}"


def check_reachable(url: str, timeout: float = 3.0) -> None:
    """Check, without an event loop, that the Redis at `url` answers PING; `StoreUnavailableError` says which did not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        raise ConfigurationError(f"StreamChat.store_url: {describe_url(url)!r} is not a Redis URL: {exc}") from exc
    try:
        client.ping()
    except RedisError as exc:
        raise StoreUnavailableError(
            f"the session store at {describe_url(url)} does not answer ({exc}): start Redis there, "
            "or set StreamChat.store_url (STREAMCHAT_STORE_URL) to one that runs"
        ) from exc
    finally:
        client.close()


def _unavailable(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn the client's connection failures and timeouts into `StoreUnavailableError`."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailableError(UNAVAILABLE) from exc  # the cause names the address, for the log

    return call


class RedisStore(SessionStore):
    """Keeps sessions, turns and their events in Redis, shared by every process using the same URL and prefix.

    Args:
        client: a redis-py asyncio client (`from_url` makes one over a `BlockingConnectionPool`).
        prefix: the start of every key and channel name.
        url: the store's address, for messages (without a password).
        replay_size: how many events of the latest turn each session keeps for resume.
        idle_timeout: seconds a session lives without activity (its keys' TTL).
        turn_lease: seconds a turn's lease lasts unless its holder renews it.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        url: str = "redis",
        replay_size: int = 2000,
        idle_timeout: float = 3600.0,
        turn_lease: float = 5.0,
    ) -> None:
        super().__init__(replay_size=replay_size, idle_timeout=idle_timeout, turn_lease=turn_lease)
        self.client = client
        """The redis-py client."""
        # redis-py types its answers as unions (bytes | str | Awaitable…): the store reads them as bytes
        self._redis: Any = client
        self.prefix = prefix
        self.url = url
        self._idle_ms = max(1, int(idle_timeout * 1000))
        self._lease_ms = max(1, int(turn_lease * 1000))
        self._begin = self._redis.register_script(_BEGIN)
        self._renew = self._redis.register_script(_RENEW)
        self._end = self._redis.register_script(_END)
        self._claim = self._redis.register_script(_CLAIM)
        self._append = self._redis.register_script(_APPEND)  # XADD errs only on an id already there: skipped
        self._update_script = self._redis.register_script(_UPDATE)  # never re-creates a deleted session

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_connections: int = 64,
        replay_size: int = 2000,
        idle_timeout: float = 3600.0,
        turn_lease: float = 5.0,
    ) -> RedisStore:
        """A store on the Redis at `url` (``redis://host:port/db``, ``rediss://…``, ``unix://path``); connects lazily."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=SOCKET_TIMEOUT,  # seconds to wait for a free connection
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=2.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=10,
        )
        client = aioredis.Redis(connection_pool=pool)
        return cls(
            client,
            prefix=prefix,
            url=describe_url(url),
            replay_size=replay_size,
            idle_timeout=idle_timeout,
            turn_lease=turn_lease,
        )

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}index"

    @property
    def _channel(self) -> str:
        return f"{self.prefix}control"

    @_unavailable
    async def ping(self) -> None:
        """Check that Redis answers; raises `StoreUnavailableError` if it does not."""
        await self._redis.ping()

    async def aclose(self) -> None:
        """Close the client and its connection pool."""
        await self._redis.aclose(close_connection_pool=True)

    # -- sessions ---------------------------------------------------------------------------

    async def _write_new(self, record: SessionRecord) -> bool:
        key = self._key("session", record.session_id)
        if not await self._redis.set(key, record.model_dump_json(), px=self._idle_ms, nx=True):
            return False
        pipe = self._redis.pipeline(transaction=True)
        for index in (self._index, self._key("owner", record.owner)):
            pipe.zadd(index, {record.session_id: record.last_activity})
            pipe.pexpire(index, self._idle_ms)
        await pipe.execute()
        return True

    @_unavailable
    async def create(self, session_id: str, *, owner: str) -> SessionRecord:
        record = SessionRecord(session_id=session_id, owner=owner)
        if not await self._write_new(record):
            raise SessionExistsError(f"session {session_id!r} already exists")
        return record

    @_unavailable
    async def get(self, session_id: str) -> SessionRecord | None:
        data = await self._redis.get(self._key("session", session_id))
        return None if data is None else SessionRecord.model_validate_json(data)

    async def _update(self, session_id: str, **changes: Any) -> None:
        """Change an existing record; one deleted meanwhile (by any process) stays deleted."""
        record = await self.get(session_id)
        if record is None:
            return
        record = record.model_copy(update={**changes, "last_activity": time.time()})
        keys = [self._key("session", session_id), self._index, self._key("owner", record.owner)]
        args: list[str | int | float] = [record.model_dump_json(), self._idle_ms, record.last_activity, session_id]
        await self._update_script(keys=keys, args=args)

    @_unavailable
    async def save_history(self, session_id: str, history: Sequence[Message]) -> None:
        await self._update(session_id, history=tuple(history))

    @_unavailable
    async def touch(self, session_id: str) -> None:
        await self._update(session_id)

    @_unavailable
    async def delete(self, session_id: str) -> bool:
        record = await self.get(session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._key("session", session_id))
        pipe.delete(
            self._key("lease", session_id),
            self._key("turn", session_id),
            self._key("events", session_id),
            self._key("followers", session_id),
        )
        pipe.zrem(self._index, session_id)
        if record is not None:
            pipe.zrem(self._key("owner", record.owner), session_id)
        deleted = await pipe.execute()
        return bool(deleted[0])

    async def _count(self, index: str) -> int:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zremrangebyscore(index, "-inf", f"({time.time() - self.idle_timeout}")  # expired records
        pipe.zcard(index)
        counted = await pipe.execute()
        return int(counted[1])

    @_unavailable
    async def count_owned(self, owner: str) -> int:
        return await self._count(self._key("owner", owner))

    @_unavailable
    async def count(self) -> int:
        return await self._count(self._index)

    @_unavailable
    async def idle_since(self, before: float) -> list[str]:
        ids = await self._redis.zrangebyscore(self._index, "-inf", f"({before}")
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    # -- turns and leases -------------------------------------------------------------------

    def _turn_keys(self, session_id: str) -> list[str]:
        return [self._key("lease", session_id), self._key("turn", session_id), self._key("events", session_id)]

    @_unavailable
    async def begin_turn(self, session_id: str, *, holder: str = "local", message: str = "") -> bool:
        turn = RunningTurn(holder=holder, message=message)
        args: list[str | int] = [holder, self._lease_ms, turn.model_dump_json(), self._idle_ms]
        return bool(await self._begin(keys=self._turn_keys(session_id), args=args))

    @_unavailable
    async def renew_turn(self, session_id: str, *, holder: str) -> bool:
        return bool(await self._renew(keys=[self._key("lease", session_id)], args=[holder, self._lease_ms]))

    @_unavailable
    async def end_turn(self, session_id: str, *, holder: str | None = None) -> None:
        await self._end(keys=self._turn_keys(session_id), args=[holder or "", self._idle_ms])

    @_unavailable
    async def running_turn(self, session_id: str) -> RunningTurn | None:
        data = await self._redis.get(self._key("turn", session_id))
        return None if data is None else RunningTurn.model_validate_json(data)

    @_unavailable
    async def turn_holder(self, session_id: str) -> str | None:
        holder = await self._redis.get(self._key("lease", session_id))
        return None if holder is None else holder.decode()

    @_unavailable
    async def claim_orphan(self, session_id: str, *, holder: str) -> RunningTurn | None:
        keys = [self._key("lease", session_id), self._key("turn", session_id)]
        data = await self._claim(keys=keys, args=[holder, self._lease_ms])
        return None if not data else RunningTurn.model_validate_json(data)

    # -- the replay buffer: a Redis Stream whose entry ids are the events' seqs ------------

    async def append_event(self, session_id: str, event: Event) -> None:
        await self.append_events(session_id, [event])

    @_unavailable
    async def append_events(self, session_id: str, events: Sequence[Event]) -> None:
        """Add the events in one round trip; nothing if the session was deleted, an event already there is skipped."""
        if not events:
            return
        args: list[str | int] = [self.replay_size, self._idle_ms]
        for event in events:
            args += [f"{event.seq}-0", event.model_dump_json()]
        await self._append(keys=[self._key("session", session_id), self._key("events", session_id)], args=args)

    @_unavailable
    async def latest_turn_id(self, session_id: str) -> str | None:
        last = await self._redis.xrevrange(self._key("events", session_id), count=1)
        return parse_event(last[0][1][b"e"]).turn_id if last else None

    def _check_gap(self, first: list[Any], seq: int) -> None:
        if first and int(first[0][0].split(b"-")[0]) > seq + 1:
            raise ReplayGapError(
                f"the events after {seq} are no longer buffered (the buffer keeps {self.replay_size} events)"
            )

    @_unavailable
    async def events_after(self, session_id: str, seq: int) -> list[Event]:
        key = self._key("events", session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.xrange(key, count=1)
        pipe.xrange(key, min=f"({seq}-0" if seq > 0 else "-")
        first, entries = await pipe.execute()
        self._check_gap(first, seq)
        return [parse_event(fields[b"e"]) for _, fields in entries]

    @_unavailable
    async def wait_events(self, session_id: str, seq: int, timeout: float) -> list[Event]:
        events = await self.events_after(session_id, seq)
        if events or timeout <= 0:
            return events
        key = self._key("events", session_id)
        block = max(1, int(min(timeout, MAX_BLOCK) * 1000))
        read = await self._redis.xread({key: f"{seq}-0"}, block=block)
        if not read:
            return []
        entries = read[0][1]
        if int(entries[0][0].split(b"-")[0]) > seq + 1:
            self._check_gap(entries, seq)
        return [parse_event(fields[b"e"]) for _, fields in entries]

    # -- followers and control --------------------------------------------------------------

    @_unavailable
    async def add_follower(self, session_id: str, follower_id: str) -> None:
        key = self._key("followers", session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(key, {follower_id: time.time() + self.turn_lease})
        pipe.pexpire(key, self._lease_ms)
        await pipe.execute()

    @_unavailable
    async def remove_follower(self, session_id: str, follower_id: str) -> None:
        await self._redis.zrem(self._key("followers", session_id), follower_id)

    @_unavailable
    async def count_followers(self, session_id: str) -> int:
        return int(await self._redis.zcount(self._key("followers", session_id), f"({time.time()}", "+inf"))

    @_unavailable
    async def publish_control(self, message: ControlMessage) -> int:
        return int(await self._redis.publish(self._channel, message.model_dump_json()))

    async def control_messages(self) -> AsyncIterator[ControlMessage]:
        """The control messages published from now on; raises `StoreUnavailableError` if the subscription breaks."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=MAX_BLOCK)
                    if message is not None and message["type"] == "message":
                        yield ControlMessage.model_validate_json(message["data"])
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise StoreUnavailableError(UNAVAILABLE) from exc
        finally:
            await pubsub.aclose()
