"""`SharedMetrics`: the figures of every server process sharing a Redis store, combined there.

Each process writes its own state; a reader adds up everyone's. In Redis, under the
store's prefix, every key with a TTL:

- ``metrics:slot:<window>:<scope>:<slot>``: a hash, one field per process (its holder id),
  the value that process's `Stats.to_dict()` of the slot (window ``5m``: 10 s slots, ``1h``:
  1 min slots; scope ``*`` for the whole deployment, ``user:<owner>`` per user). The field
  is overwritten with the slot's whole state, so a write can be repeated (after an outage
  every slot is written again; also when a write finds its own live counts gone, as after a
Redis restart that lost everything) without counting anything twice. TTL: the window's span
  plus `SLOT_MARGIN_S`, renewed at each write, so a process that died still counts for
  the window it recorded in.
- ``metrics:live:<holder>``: the process's live counts (active turns, sessions, open
  streams per scope, retries) as JSON, TTL `LIVE_TTL_S`; ``metrics:processes``, a sorted
  set of holders by the time their live counts expire, says whose to read (a process that
  died stops counting once its entry expires).

The recorder's hot path is unchanged: it only notes which slots changed (`Recorder.share`).
A background task (`start`, closed by `aclose` with a last write) writes the changed slots
at most every `interval` seconds (0.5), and the live counts at least every
`LIVE_REFRESH_S`: one pipelined round trip.

`summary(scope)` is `Recorder.summary` for the deployment: this process's own windows (as
they are now) plus the other processes' from Redis (as of their last write, at most about
`interval` old). Slots are numbered by wall-clock time, so the processes' clocks must
agree to within a slot. When Redis cannot be reached, the summary is this process's own
figures with ``partial: true``; a dashboard goes on showing what it can and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
from collections import Counter
from typing import Any

from ..errors import StoreUnavailableError
from .recorder import Recorder, Windows, summarize
from .window import RollingWindow, Stats

__all__ = ["LIVE_REFRESH_S", "LIVE_TTL_S", "SLOT_MARGIN_S", "SharedMetrics"]

SLOT_MARGIN_S = 120
"""How long past its window's span a slot's key lives."""
LIVE_TTL_S = 15
"""How long a process's live counts count without being written again."""
LIVE_REFRESH_S = 5.0
"""Longest time between two writes of the live counts (when nothing changed)."""

log = logging.getLogger("streamchat.analytics")


def _scope_key(scope: str | None) -> str:
    return "*" if scope is None else f"user:{scope}"


class SharedMetrics:
    """Writes this process's figures to Redis and reads the deployment's back.

    Args:
        client: a `redis.asyncio.Redis` (the `RedisStore`'s `client`).
        prefix: the store's key prefix.
        holder: this process's id (`ChatService.holder`), its field in the shared hashes.
        recorder: the recorder whose figures are written (the process's `recorder()`).
        interval: shortest time between two writes, in seconds.
    """

    def __init__(self, client: Any, *, prefix: str, holder: str, recorder: Recorder, interval: float = 0.5) -> None:
        self.client = client
        self.prefix = prefix
        self.holder = holder
        self.recorder = recorder
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._written_version = -1
        self._written_at = -math.inf
        self._resend = True  # the first write (and the first after a failure) writes every slot kept
        self._down = False
        recorder.share()

    @classmethod
    def for_store(cls, store: Any, *, holder: str, recorder: Recorder) -> SharedMetrics | None:
        """The shared metrics of a `RedisStore`, or None for a store of one process."""
        redis_store = sys.modules.get("streamchat.redis_store")  # not imported: no RedisStore can exist
        if redis_store is None or not isinstance(store, redis_store.RedisStore):
            return None
        return cls(store.client, prefix=store.prefix, holder=holder, recorder=recorder)

    def _slot_key(self, window: str, scope: str | None, number: int) -> str:
        return f"{self.prefix}metrics:slot:{window}:{_scope_key(scope)}:{number}"

    def _live_key(self, holder: str) -> str:
        return f"{self.prefix}metrics:live:{holder}"

    @property
    def _processes(self) -> str:
        return f"{self.prefix}metrics:processes"

    # -- writing ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer, once (needs the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="streamchat shared metrics")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self, *, force: bool = False) -> bool:
        """Write what changed (and the live counts when due); False when Redis could not be reached."""
        loop_time = asyncio.get_running_loop().time()
        version = self.recorder.version
        if not force and version == self._written_version and loop_time - self._written_at < LIVE_REFRESH_S:
            return True
        resend = self._resend
        slots, live = self.recorder.take_changes(everything=resend)
        now = self.recorder.clock()
        pipe = self.client.pipeline(transaction=False)
        for scope, window, number, state in slots:
            key = self._slot_key(window, scope, number)
            pipe.hset(key, self.holder, json.dumps(state))
            span = 300 if window == "5m" else 3600
            pipe.expire(key, span + SLOT_MARGIN_S)
        pipe.set(self._live_key(self.holder), json.dumps(live), ex=LIVE_TTL_S, get=True)
        pipe.zadd(self._processes, {self.holder: now + LIVE_TTL_S})
        pipe.zremrangebyscore(self._processes, "-inf", f"({now}")
        pipe.expire(self._processes, LIVE_TTL_S * 4)
        try:
            answers = await pipe.execute()
        except _redis_errors() as exc:
            self._resend = True  # the slots taken are written again, whole, next time
            if not self._down:
                log.warning("streamchat: metrics cannot be shared through Redis: %s", exc)
                self._down = True
            return False
        if self._down:
            log.info("streamchat: metrics are shared through Redis again")
        self._down = False
        self._resend = False
        self._written_version, self._written_at = version, loop_time
        if answers[2 * len(slots)] is None and not resend:
            # our live counts were gone: Redis lost its data (a restart) or we were silent past LIVE_TTL_S
            self._resend = True
            return await self.flush(force=True)
        return True

    async def aclose(self) -> None:
        """Stop the writer, write once more and take this process's live counts out."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if await self.flush(force=True):
            with contextlib.suppress(Exception):
                pipe = self.client.pipeline(transaction=False)
                pipe.delete(self._live_key(self.holder))
                pipe.zrem(self._processes, self.holder)
                await pipe.execute()

    # -- reading ---------------------------------------------------------------------------------

    async def summary(self, scope: str | None = None) -> dict[str, Any]:
        """`Recorder.summary` of the deployment: every process's figures for `scope` (None: all scopes)."""
        self.start()
        now = self.recorder.clock()
        windows, retries, version = self.recorder.local(scope)
        partial = False
        try:
            await self._add_others(windows, scope, now)
            retries = await self._add_live(windows, scope, now, retries)
        except _redis_errors() as exc:
            if not self._down:  # logged once: the writer logs when Redis answers again
                log.warning("streamchat: metrics of other processes cannot be read from Redis: %s", exc)
                self._down = True
            partial = True
            windows, retries, version = self.recorder.local(scope)
        body = summarize(windows, now=now, version=version, retries=retries if scope is None else None)
        body["partial"] = partial
        return body

    async def _add_others(self, windows: Windows, scope: str | None, now: float) -> None:
        """Merge the other processes' slots of the windows' spans into `windows`."""
        wanted: list[tuple[str, RollingWindow, int]] = []
        for name, window in (("5m", windows.recent), ("1h", windows.hour)):
            newest = math.floor(now / window.slot_s)
            wanted += [(name, window, number) for number in range(newest - window.slots_kept + 1, newest + 1)]
        pipe = self.client.pipeline(transaction=False)
        for name, _, number in wanted:
            pipe.hgetall(self._slot_key(name, scope, number))
        for (_, window, number), fields in zip(wanted, await pipe.execute(), strict=True):
            for holder, state in fields.items():
                if _text(holder) == self.holder:
                    continue  # this process's own slots are the recorder's, newer than its last write
                stats = window.slots.get(number)
                if stats is None:
                    stats = window.slots[number] = Stats()
                stats.merge(Stats.from_dict(json.loads(state)))

    async def _add_live(self, windows: Windows, scope: str | None, now: float, retries: int) -> int:
        """Add the other live processes' active turns, sessions and streams; the retries of all of them."""
        holders = [_text(h) for h in await self.client.zrangebyscore(self._processes, now, "+inf")]
        others = [h for h in holders if h != self.holder]
        if not others:
            return retries
        for state in await self.client.mget([self._live_key(h) for h in others]):
            if state is None:
                continue
            live = json.loads(state)
            counts = live["process"] if scope is None else live["scopes"].get(scope)
            retries += live["retries"]
            if counts is None:
                continue
            windows.active_turns += counts["active_turns"]
            windows.sessions += counts["sessions"]
            windows.streams.update(Counter(counts["streams"]))
        return retries


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _redis_errors() -> tuple[type[Exception], ...]:
    """What a Redis that cannot be reached raises (redis is imported only once a `RedisStore` exists)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return StoreUnavailableError, OSError, RedisConnectionError, RedisTimeoutError
