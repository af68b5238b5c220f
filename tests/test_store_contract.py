"""The `SessionStore` contract, run against `MemoryStore` and `RedisStore` (on a real `redis-server`).

Each test gets two stores, `a` and `b`, standing for two server processes: the same
`MemoryStore` twice, or two `RedisStore` clients of one Redis with one prefix.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis_helpers import RedisServer, redis_server  # noqa: F401  (a fixture, found by name)

from streamchat import Message, TokenEvent
from streamchat.errors import ReplayGapError, SessionExistsError, StoreUnavailableError
from streamchat.events import (
    DoneEvent,
    ErrorEvent,
    Event,
    Metrics,
    ThinkingEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
)
from streamchat.redis_store import RedisStore, describe_url
from streamchat.stores import ControlMessage, MemoryStore, SessionRecord, SessionStore

LEASE = 0.3


def token(seq: int, turn: str = "t") -> TokenEvent:
    return TokenEvent(session_id="s", turn_id=turn, seq=seq, content=f"t{seq}")


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    """One `redis-server` for this module's tests; each test uses its own key prefix."""
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def pair(
    request: pytest.FixtureRequest, shared_redis: RedisServer
) -> AsyncIterator[tuple[SessionStore, SessionStore]]:
    """Two views of one store, as two server processes have."""
    if request.param == "memory":
        store = MemoryStore(replay_size=3, idle_timeout=60, turn_lease=LEASE)
        yield store, store
        return
    prefix = f"t{time.monotonic_ns()}:"
    a, b = (
        RedisStore.from_url(shared_redis.url, prefix=prefix, replay_size=3, idle_timeout=60, turn_lease=LEASE)
        for _ in range(2)
    )
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_records_are_created_once_and_kept_with_their_history(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    record = await a.create("s", owner="alice")
    with pytest.raises(SessionExistsError):
        await b.create("s", owner="bob")
    assert await b.count_owned("alice") == 1 and await b.count_owned("bob") == 0 and await b.count() == 1
    history = (Message(role="user", content="hi"), Message(role="assistant", content="hello", interrupted=True))
    await a.save_history("s", history)
    saved = await b.get("s")
    assert saved is not None and saved.history == history and saved.created_at == record.created_at
    assert saved.last_activity >= record.last_activity
    assert SessionRecord.model_validate_json(saved.model_dump_json()) == saved
    assert await b.idle_since(time.time() + 1) == ["s"] and await b.idle_since(0) == []
    assert await b.delete("s") is True and await a.get("s") is None and await a.delete("s") is False
    assert await a.count() == 0 and await a.count_owned("alice") == 0


async def test_sessions_are_counted_per_owner_as_they_come_and_go(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    for session_id, owner in (("s1", "alice"), ("s2", "alice"), ("s3", "bob"), ("s4", "alice")):
        await a.create(session_id, owner=owner)
    with pytest.raises(SessionExistsError):
        await b.create("s1", owner="bob")  # refused: counts nothing
    assert [await b.count_owned(owner) for owner in ("alice", "bob", "carol")] == [3, 1, 0]
    assert await b.delete("s2") is True and await a.delete("s2") is False and await a.delete("nope") is False
    assert [await a.count_owned(owner) for owner in ("alice", "bob")] == [2, 1] and await a.count() == 3
    await b.delete("s3")
    await a.create("s3", owner="carol")  # an id deleted can be taken again, by anyone
    assert [await b.count_owned(owner) for owner in ("alice", "bob", "carol")] == [2, 0, 1] and await b.count() == 3


async def test_one_turn_at_a_time_on_every_process(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    await a.create("s", owner="alice")
    assert await a.begin_turn("s", holder="A", message="hi") is True
    assert await b.begin_turn("s", holder="B") is False
    assert await b.turn_holder("s") == "A"
    running = await b.running_turn("s")
    assert running is not None and running.holder == "A" and running.message == "hi"
    assert await b.renew_turn("s", holder="B") is False  # not B's lease
    assert await b.claim_orphan("s", holder="B") is None  # A still renews it
    await b.end_turn("s", holder="B")  # not B's: nothing happens
    assert await a.turn_holder("s") == "A"
    await a.end_turn("s", holder="A")
    assert await b.turn_holder("s") is None and await b.running_turn("s") is None
    assert await b.begin_turn("s", holder="B") is True


async def test_a_lease_not_renewed_expires_and_its_orphan_is_claimed_once(
    pair: tuple[SessionStore, SessionStore],
) -> None:
    a, b = pair
    await a.create("s", owner="alice")
    assert await a.begin_turn("s", holder="A", message="hi")
    for _ in range(3):  # renewed: it outlives its lease time
        await asyncio.sleep(LEASE / 2)
        assert await a.renew_turn("s", holder="A") is True
    assert await b.turn_holder("s") == "A"
    await asyncio.sleep(LEASE * 1.5)  # A stops renewing (it crashed)
    assert await b.turn_holder("s") is None
    assert await b.begin_turn("s", holder="B") is False  # the orphan must be ended first
    orphan = await b.claim_orphan("s", holder="B")
    assert orphan is not None and orphan.holder == "A" and orphan.message == "hi"
    assert await a.claim_orphan("s", holder="C") is None  # claimed once
    assert await a.renew_turn("s", holder="A") is False  # the crashed holder cannot take it back
    await b.end_turn("s", holder="B")
    assert await a.begin_turn("s", holder="A") is True


async def test_a_lease_lost_by_the_store_is_taken_back_by_its_holder(pair: tuple[SessionStore, SessionStore]) -> None:
    a, _ = pair
    await a.create("s", owner="alice")
    assert await a.begin_turn("s", holder="A")
    await asyncio.sleep(LEASE * 1.5)  # as after a Redis restart: no lease at all
    assert await a.renew_turn("s", holder="A") is True and await a.turn_holder("s") == "A"


async def test_the_replay_buffer_keeps_the_latest_events_by_seq(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    await a.create("s", owner="alice")
    assert await a.begin_turn("s", holder="A")
    assert await b.events_after("s", 0) == [] and await b.latest_turn_id("s") is None
    for seq in range(1, 12):
        await a.append_event("s", token(seq))
    await a.append_event("s", token(11))  # the same event again is not kept twice
    assert [e.seq for e in await b.events_after("s", 8)] == [9, 10, 11]  # 10 > 9 as integers, not strings
    assert [e.seq for e in await b.events_after("s", 10)] == [11]
    assert await b.events_after("s", 11) == []
    assert await b.latest_turn_id("s") == "t"
    with pytest.raises(ReplayGapError):
        await b.events_after("s", 7)  # event 8 was dropped
    await a.end_turn("s", holder="A")
    assert [e.seq for e in await b.events_after("s", 8)] == [9, 10, 11]  # a finished turn's events stay
    assert await a.begin_turn("s", holder="A")
    assert await b.events_after("s", 0) == []  # a new turn starts with an empty buffer
    await a.append_event("s", token(1, turn="t2"))
    assert await b.latest_turn_id("s") == "t2"


async def test_a_follower_waits_for_the_next_events(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    await a.create("s", owner="alice")
    assert await a.begin_turn("s", holder="A")
    await a.append_event("s", token(1))
    assert [e.seq for e in await b.wait_events("s", 0, timeout=0.5)] == [1]
    assert await b.wait_events("s", 1, timeout=0.1) == []  # nothing came
    waiting = asyncio.ensure_future(b.wait_events("s", 1, timeout=5))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    done = DoneEvent(session_id="s", turn_id="t", seq=2, reason="stop", text="t1")
    await a.append_event("s", done)
    assert await asyncio.wait_for(waiting, 2) == [done]


async def test_a_deleted_session_keeps_no_turn_or_events(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    await a.create("s", owner="alice")
    assert await a.begin_turn("s", holder="A")
    await a.append_event("s", token(1))
    await b.add_follower("s", "f1")
    assert await b.delete("s") is True
    await a.append_event("s", token(2))  # the turn's late event does not bring the session back
    assert await a.events_after("s", 0) == [] and await a.running_turn("s") is None
    assert await a.turn_holder("s") is None and await a.count_followers("s") == 0


async def test_followers_are_counted_over_processes_until_they_leave_or_stop_renewing(
    pair: tuple[SessionStore, SessionStore],
) -> None:
    a, b = pair
    await a.add_follower("s", "on-a")
    await b.add_follower("s", "on-b")
    assert await a.count_followers("s") == 2
    await b.remove_follower("s", "on-b")
    assert await a.count_followers("s") == 1
    await asyncio.sleep(LEASE / 2)
    await a.add_follower("s", "on-a")  # renewed
    await asyncio.sleep(LEASE * 0.7)
    assert await b.count_followers("s") == 1
    await asyncio.sleep(LEASE * 0.7)  # not renewed: its process stopped
    assert await b.count_followers("s") == 0


async def test_control_messages_reach_every_listening_process(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    received: list[ControlMessage] = []
    subscribed = asyncio.Event()

    async def listen() -> None:
        messages = b.control_messages()
        first = asyncio.ensure_future(anext(messages))
        while await a.publish_control(ControlMessage(session_id="probe", action="followers")) == 0:
            await asyncio.sleep(0.02)  # until the subscription is in place
        subscribed.set()
        message = await first
        while True:
            if message.session_id != "probe":
                received.append(message)
                if len(received) == 2:
                    await messages.aclose()  # type: ignore[attr-defined]
                    return
            message = await anext(messages)

    listener = asyncio.ensure_future(listen())
    await asyncio.wait_for(subscribed.wait(), 5)
    cancel = ControlMessage(session_id="s", action="cancel")
    pause = ControlMessage(session_id="s", action="tool", call_id="c1", tool_action="pause")
    assert await a.publish_control(cancel) >= 1
    await a.publish_control(pause)
    await asyncio.wait_for(listener, 5)
    assert received == [cancel, pause]


# -- Redis only: keys, prefixes, faults ------------------------------------------------------------------------


async def test_every_redis_key_has_a_ttl_and_the_prefix(redis_server: RedisServer) -> None:  # noqa: F811
    store = RedisStore.from_url(redis_server.url, prefix="dep1:", turn_lease=5, idle_timeout=60)
    other = RedisStore.from_url(redis_server.url, prefix="dep2:")
    try:
        await store.create("s", owner="alice")
        assert await store.begin_turn("s", holder="A", message="hi")
        await store.append_event("s", token(1))
        await store.add_follower("s", "f")
        assert await other.get("s") is None and await other.count() == 0  # another deployment's prefix
        raw = aioredis.Redis.from_url(redis_server.url)
        keys = sorted(k.decode() for k in await raw.keys("*"))
        assert keys == [
            "dep1:events:s",
            "dep1:followers:s",
            "dep1:index",
            "dep1:lease:s",
            "dep1:owner:alice",
            "dep1:session:s",
            "dep1:turn:s",
        ]
        for key in keys:
            assert 0 < await raw.pttl(key) <= 60_000, key
        await store.end_turn("s", holder="A")
        assert 0 < await raw.pttl("dep1:events:s") <= 60_000  # the finished turn's events expire
        await raw.aclose()
    finally:
        await store.aclose()
        await other.aclose()


async def test_an_unreachable_redis_raises_store_unavailable_and_a_restarted_one_serves_again(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    store = RedisStore.from_url(redis_server.url)
    try:
        await store.ping()
        redis_server.stop()
        with pytest.raises(StoreUnavailableError) as caught:
            await store.get("s")
        assert caught.value.status == 503 and caught.value.retryable
        assert "session store (Redis)" in caught.value.message
        assert f"127.0.0.1:{redis_server.port}" in str(caught.value.__cause__)  # for the server log
        redis_server.start()
        assert await store.get("s") is None  # the same client reconnects
    finally:
        await store.aclose()


def test_urls_are_logged_without_their_password() -> None:
    assert describe_url("redis://:pw@host:6379/0") == "redis://***@host:6379/0"
    assert describe_url("rediss://host:6380/1") == "rediss://host:6380/1"
    assert describe_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


async def test_events_appended_now_are_kept_as_appended_ones(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    await a.create("s", owner="alice")
    assert await a.begin_turn("s", holder="A")
    await a.append_event("s", token(1))
    if not a.append_events_now("s", [token(2), token(3)]):  # a networked store: nothing added
        assert isinstance(a, RedisStore) and [e.seq for e in await b.events_after("s", 0)] == [1]
        return
    assert [e.seq for e in await b.events_after("s", 0)] == [1, 2, 3]
    assert a.append_events_now("s", [token(3), token(4)])  # the same event again is not kept twice
    assert [e.seq for e in await b.events_after("s", 1)] == [2, 3, 4]
    with pytest.raises(ReplayGapError):
        await b.events_after("s", 0)  # event 1 was dropped (3 are kept)


async def test_a_memory_store_with_appending_of_its_own_does_not_append_now() -> None:
    class Counting(MemoryStore):
        appended = 0

        async def append_event(self, session_id: str, event: Event) -> None:
            self.appended += 1
            await super().append_event(session_id, event)

    store = Counting()
    await store.create("s", owner="alice")
    assert await store.begin_turn("s", holder="A")
    assert store.append_events_now("s", [token(1)]) is False and await store.events_after("s", 0) == []
    await store.append_events("s", [token(1), token(2)])
    assert store.appended == 2 and [e.seq for e in await store.events_after("s", 0)] == [1, 2]


async def test_every_kind_of_event_comes_back_equal(pair: tuple[SessionStore, SessionStore]) -> None:
    a, b = pair
    await a.create("s", owner="alice")
    metrics = Metrics(ttft_ms=12.5, tokens_per_s=41.3, duration_ms=100.25, model_calls=2)
    for turn, kinds in enumerate(
        [
            lambda stamp: [
                ThinkingEvent(**stamp(1), text="Thinking…", kind="status"),
                TokenEvent(**stamp(2), content="서울은 맑음 \x7f\n"),
                ToolCallEvent(**stamp(3), call_id="c1", tool="get_weather", args={"city": "Seoul", "type": "x"}),
            ],
            lambda stamp: [
                ToolProgressEvent(**stamp(1), call_id="c1", tool="get_weather", message="Fetching…", percent=50),
                ToolResultEvent(
                    **stamp(2), call_id="c1", tool="get_weather", status="ok", result={"temp": 21.5}, duration_ms=3.25
                ),
                ErrorEvent(**stamp(3), message="slow", code="backend_slow", retryable=True),
            ],
            lambda stamp: [DoneEvent(**stamp(1), reason="stop", text="21°C", metrics=metrics)],
        ]
    ):
        assert await a.begin_turn("s", holder="p1")
        events: list[Event] = kinds(lambda seq, turn=turn: {"session_id": "s", "turn_id": f"t{turn}", "seq": seq})
        await a.append_events("s", events)
        assert await b.events_after("s", 0) == events
        assert await b.events_after("s", 1) == events[1:]
        await a.end_turn("s", holder="p1")


async def test_a_memory_stores_replay_buffers_are_not_walked_by_the_garbage_collector() -> None:
    """Every session keeps its latest turn: kept as JSON, thousands of them add nothing to a full collection's walk."""
    store = MemoryStore()
    await store.create("s", owner="alice")
    assert await store.begin_turn("s", holder="p1")
    assert store.append_events_now("s", [token(seq) for seq in range(1, 101)])
    lone = TokenEvent(session_id="s", turn_id="t", seq=101, content="lone \ud800 surrogate")  # no JSON: kept as is
    assert store.append_events_now("s", [lone])
    gc.collect()  # untracks the tuples of untracked values
    assert sum(gc.is_tracked(kept) for kept in store._buffers["s"]) == 1
    assert [event.content for event in await store.events_after("s", 98)] == ["t99", "t100", lone.content]


async def test_an_update_never_re_creates_a_session_deleted_meanwhile(
    shared_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn ending on one process saves its history while another deletes the session: it stays deleted.

    Redis only: `MemoryStore` reads and writes a record with nothing in between.
    """
    prefix = f"t{time.monotonic_ns()}:"
    a, b = (RedisStore.from_url(shared_redis.url, prefix=prefix) for _ in range(2))
    try:
        await a.create("s", owner="alice")
        await a.create("t", owner="alice")
        read = a.get

        async def read_then_deleted_elsewhere(session_id: str) -> SessionRecord | None:
            record = await read(session_id)
            await b.delete(session_id)  # between the update's read and its write
            return record

        monkeypatch.setattr(a, "get", read_then_deleted_elsewhere)
        await a.save_history("s", [Message(role="user", content="hi")])
        await a.touch("t")
        monkeypatch.undo()
        assert await b.get("s") is None and await b.get("t") is None
        assert await b.count_owned("alice") == 0 and await b.count() == 0
    finally:
        await a.aclose()
        await b.aclose()
