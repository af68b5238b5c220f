"""The session store (`streamchat.stores`) and the bounded replay buffer behind SSE resume."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from server_helpers import SCRIPT, error_of, server_config, sse_events

from streamchat import Message, TokenEvent
from streamchat.errors import ReplayGapError, SessionExistsError
from streamchat.stores import MemoryStore, SessionRecord


def token(seq: int) -> TokenEvent:
    return TokenEvent(session_id="s", turn_id="t", seq=seq, content=f"t{seq}")


async def test_memory_store_keeps_records_turn_flags_and_a_bounded_replay_buffer() -> None:
    store = MemoryStore(replay_size=3)
    record = await store.create("s", owner="alice")
    with pytest.raises(SessionExistsError):
        await store.create("s", owner="bob")
    assert await store.count_owned("alice") == 1 and await store.count_owned("bob") == 0
    assert await store.begin_turn("s") is True
    assert await store.begin_turn("s") is False  # one turn at a time
    for seq in range(1, 6):
        await store.append_event("s", token(seq))
    assert [e.seq for e in await store.events_after("s", 2)] == [3, 4, 5]
    assert [e.seq for e in await store.events_after("s", 4)] == [5]
    assert await store.events_after("s", 5) == []
    with pytest.raises(ReplayGapError):
        await store.events_after("s", 1)  # event 2 was dropped from the buffer
    await store.end_turn("s")
    assert await store.begin_turn("s") is True  # a new turn starts with an empty buffer
    assert await store.events_after("s", 0) == []
    history = (Message(role="user", content="hi"), Message(role="assistant", content="hello"))
    await store.save_history("s", history)
    saved = await store.get("s")
    assert saved is not None and saved.history == history and saved.created_at == record.created_at
    assert SessionRecord.model_validate_json(saved.model_dump_json()) == saved  # serialisable as is
    assert await store.idle_since(time.time() + 1) == ["s"] and await store.idle_since(0) == []
    assert await store.delete("s") is True and await store.get("s") is None and await store.delete("s") is False


class TestReplayGap:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(replay_buffer_size=3)

    async def test_resuming_from_an_event_no_longer_buffered_is_410(self, client: httpx.AsyncClient) -> None:
        SCRIPT.turns = [["a", "b", "c", "d", "e"]]
        frames = await sse_events(client, "GET", "api/streamchat/sessions/long/stream", params={"message": "go"})
        assert len(frames) == 7
        gone = await client.get("api/streamchat/sessions/long/stream", headers={"Last-Event-ID": "2"})
        assert gone.status_code == 410 and error_of(gone)["code"] == "replay_gap"
        rest = await sse_events(client, "GET", "api/streamchat/sessions/long/stream", headers={"Last-Event-ID": "4"})
        assert [f.id for f in rest] == [f"{frames[0].event.turn_id}:{n}" for n in (5, 6, 7)]
