"""The server with its sessions in Redis (`store_url`): shared with another process, resilient to Redis outages.

The server under test is the real Jupyter server of the fixtures; "another process" is a
second `ChatService` on its own `RedisStore` client of the same Redis and prefix, in this
test's loop (the two-process tests with real `jupyter server` processes are in tests/scale).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis_helpers import RedisServer, redis_server  # noqa: F401  (a fixture, found by name)
from server_helpers import SCRIPT, TOOLS, Frame, comparable, error_of, server_config, sse_events

from jupyter_server_extension.app import load_tools
from jupyter_server_extension.service import ChatService, Limits
from streamchat import Settings
from streamchat.errors import SessionBusyError
from streamchat.events import Event, TokenEvent
from streamchat.providers import ProviderChoice
from streamchat.redis_store import RedisStore

PREFIX = "test-redis:"
LEASE = 0.6


@pytest.fixture
def jp_server_config(redis_server: RedisServer) -> dict[str, Any]:  # noqa: F811
    return server_config(store_url=redis_server.url, store_prefix=PREFIX, turn_lease=LEASE, disconnect_grace=0.5)


@pytest.fixture
async def other_process(redis_server: RedisServer, chat_service: ChatService) -> AsyncIterator[ChatService]:  # noqa: F811
    """A second chat service on the same Redis and prefix, as a second server process has."""
    store = RedisStore.from_url(redis_server.url, prefix=PREFIX, turn_lease=LEASE)
    choice = await chat_service.provider_choice()

    async def provider_choice() -> ProviderChoice:
        return choice

    service = ChatService(
        store,
        provider_choice=provider_choice,
        tools=load_tools(TOOLS),
        settings=Settings(),
        limits=Limits(),
    )
    yield service
    await service.aclose()


async def test_the_server_keeps_its_sessions_in_redis(
    client: httpx.AsyncClient, chat_service: ChatService, other_process: ChatService
) -> None:
    assert isinstance(chat_service.store, RedisStore) and chat_service.store.prefix == PREFIX
    answer = (await client.post("api/streamchat/chat", json={"message": "hi"})).json()
    history = await other_process.history("alice", answer["session_id"])
    assert [(m.role, m.content) for m in history] == [("user", "hi"), ("assistant", "Hello there")]
    await other_process.delete("alice", answer["session_id"])
    assert (await client.get(f"api/streamchat/sessions/{answer['session_id']}")).status_code == 404


async def test_another_process_follows_a_turn_event_for_event_refuses_a_second_message_and_stops_it(
    client: httpx.AsyncClient, other_process: ChatService
) -> None:
    SCRIPT.turns = [[f"w{n} " for n in range(200)]]
    SCRIPT.token_delay = 0.02
    here: list[Frame] = []
    streaming = asyncio.ensure_future(
        sse_events(client, "GET", "api/streamchat/sessions/shared/stream", params={"message": "go"})
    )
    for _ in range(500):
        record = await other_process.store.get("shared")
        if record is not None and await other_process.store.events_after("shared", 0):
            break
        assert not streaming.done()
        await asyncio.sleep(0.02)
    assert record is not None
    follower = await other_process.resume("alice", "shared", 0)
    assert follower is not None and type(follower).__name__ == "RemoteFollower"
    with pytest.raises(SessionBusyError):
        await other_process.start_turn("alice", "shared", "another")
    there: list[Event] = []
    while len(there) < 10:
        there += await follower.next_events(timeout=5)
    assert await other_process.cancel("alice", "shared") is True  # the turn runs on the server, not here
    while not follower.ended:
        there += await follower.next_events(timeout=5)
    follower.close()
    here = await asyncio.wait_for(streaming, 5)
    assert here[-1].event.type == "done" and here[-1].event.reason == "cancelled"
    assert [e.seq for e in there] == list(range(1, len(there) + 1))  # each event once, none missing
    assert [comparable(e) for e in there] == [comparable(f.event) for f in here]
    assert record.owner == "alice"
    history = await other_process.history("alice", "shared")
    assert history[-1].interrupted and history[-1].content == "".join(
        e.content for e in there if isinstance(e, TokenEvent)
    )


async def test_a_turn_whose_server_stopped_is_ended_for_its_followers_and_frees_the_session(
    client: httpx.AsyncClient, other_process: ChatService
) -> None:
    # a process took the lease, wrote two tokens and died (it never renews the lease)
    store = other_process.store
    await store.create("orphan", owner="alice")
    assert await store.begin_turn("orphan", holder="dead process", message="tell me")
    for seq, text in ((1, "Once"), (2, " upon")):
        await store.append_event("orphan", TokenEvent(session_id="orphan", turn_id="t1", seq=seq, content=text))
    assert (await client.post("api/streamchat/chat", json={"message": "x", "session_id": "orphan"})).status_code == 409
    frames = await asyncio.wait_for(
        sse_events(client, "GET", "api/streamchat/sessions/orphan/stream", headers={"Last-Event-ID": "1"}),
        LEASE + 2,
    )
    assert [(f.id, f.event.type) for f in frames] == [("t1:2", "token"), ("t1:3", "error"), ("t1:4", "done")]
    error, done = frames[1].event, frames[2].event
    assert error.type == "error" and error.code == "server_stopped" and "server" in error.message
    assert done.type == "done" and done.reason == "error" and done.text == "Once upon"
    history = (await client.get("api/streamchat/sessions/orphan")).json()["history"]
    assert [(m["role"], m["content"], m.get("interrupted", False)) for m in history] == [
        ("user", "tell me", False),
        ("assistant", "Once upon", True),
    ]
    answer = await client.post("api/streamchat/chat", json={"message": "again", "session_id": "orphan"})
    assert answer.status_code == 200 and answer.json()["text"] == "Hello there"


async def test_redis_down_is_a_503_and_redis_back_serves_again(
    client: httpx.AsyncClient,
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = (await client.post("api/streamchat/chat", json={"message": "hi"})).json()["session_id"]
    redis_server.stop()
    try:
        for method, url, body in (
            ("POST", "api/streamchat/chat", {"message": "hi"}),
            ("POST", "api/streamchat/chat/stream", {"message": "hi"}),
            ("GET", f"api/streamchat/sessions/{session}", None),
            ("DELETE", f"api/streamchat/sessions/{session}", None),
        ):
            response = await client.request(method, url, json=body)
            assert response.status_code == 503, (method, url)
            assert response.headers["content-type"].startswith("application/json")
            error = error_of(response)
            assert error["code"] == "store_unavailable" and "session store (Redis)" in error["message"]
            assert str(redis_server.port) not in error["message"]  # the address stays in the log
    finally:
        redis_server.start()  # empty: as a Redis that lost its data
    assert not any(record.exc_info for record in caplog.records if record.levelname in ("ERROR", "WARNING"))
    answer = await client.post("api/streamchat/chat", json={"message": "again"})
    assert answer.status_code == 200 and answer.json()["text"] == "Hello there"


async def test_redis_restarted_mid_turn_loses_nothing_for_the_server_s_own_followers(
    client: httpx.AsyncClient,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    SCRIPT.turns = [[f"w{n} " for n in range(60)]]
    SCRIPT.token_delay = 0.02

    async def restart_when_streaming() -> None:
        await asyncio.sleep(0.3)
        redis_server.stop()
        await asyncio.sleep(0.5)
        redis_server.start()

    restart = asyncio.ensure_future(restart_when_streaming())
    frames = await sse_events(client, "POST", "api/streamchat/chat/stream", json={"message": "go"})
    await restart
    assert [f.event.seq for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1].event.type == "done" and frames[-1].event.reason == "stop"
    assert frames[-1].event.text == "".join(f"w{n} " for n in range(60))
    SCRIPT.token_delay = 0.0
    answer = await client.post("api/streamchat/chat", json={"message": "again"})
    assert answer.status_code == 200


class TestUnreachableAtStartup:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(store_url="redis://127.0.0.1:1/0")

    async def test_the_extension_does_not_start_and_says_why_in_one_line(
        self, capsys: pytest.CaptureFixture[str], client: httpx.AsyncClient
    ) -> None:
        server_log = capsys.readouterr().err
        lines = [line for line in server_log.splitlines() if "streamchat: the extension cannot start" in line]
        assert len(lines) == 1 and "the session store at redis://127.0.0.1:1/0 does not answer" in lines[0]
        assert "Traceback" not in server_log
        assert (await client.get("api/streamchat/health")).status_code == 404
