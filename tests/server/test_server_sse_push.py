"""Live events written straight to a caught-up SSE client by the turn's task (`Follower.pushed`)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.parse
from typing import Any

import httpx
import pytest
from server_helpers import ALICE, SCRIPT, comparable, server_config, sse_events

from bench.sse_load import SseParser
from jupyter_server_extension.service import Follower
from streamchat import ChatSession, ScriptedProvider, parse_event
from streamchat.events import Event


async def test_tokens_to_a_caught_up_client_are_pushed_in_order_and_done_ends_the_response(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed: list[str] = []
    returned: list[str] = []
    original_pushed, original_next = Follower.pushed, Follower.next_events

    def recording_pushed(self: Follower, event: Event) -> bool:
        written = original_pushed(self, event)
        if written:
            pushed.append(event.type)
        return written

    async def recording_next(self: Follower, timeout: float | None = None) -> list[Event]:
        events = await original_next(self, timeout)
        returned.extend(event.type for event in events)
        return events

    monkeypatch.setattr(Follower, "pushed", recording_pushed)
    monkeypatch.setattr(Follower, "next_events", recording_next)
    script = [[f"t{i} " for i in range(20)]]
    SCRIPT.token_delay = 0.01  # each token comes while the response waits for the next
    SCRIPT.turns = script
    frames = await sse_events(client, "POST", "api/streamchat/chat/stream", json={"message": "go"})
    direct = [comparable(event) async for event in ChatSession(ScriptedProvider(script)).stream("go")]
    assert [comparable(f.event) for f in frames] == direct
    assert [f.id for f in frames] == [f"{frames[0].event.turn_id}:{n}" for n in range(1, len(frames) + 1)]
    assert pushed and set(pushed) == {"token"}  # most tokens went straight to the socket
    assert returned[-1] == "done" and "done" not in pushed  # done wakes the response, which ends
    assert len(pushed) + len(returned) == len(frames)  # each event written once


class TestPartialSends:
    """Pushed chunks to a client that reads slowly, past what the kernel's socket buffers take (several MB)."""

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_buffered_bytes=64 * 1024 * 1024)  # the slow client is not dropped

    async def test_a_pushed_chunk_the_socket_takes_in_part_arrives_whole_and_in_order(
        self, base_url: str, jp_http_port: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A client that reads late, through a small window: a pushed chunk's rest goes through tornado, in order."""
        from jupyter_server_extension import handlers

        partial: list[int] = []  # per pushed chunk that the socket took in part: the bytes left for tornado to send
        original = handlers._send_chunk

        def recording_send_chunk(handler: Any, stream: Any, data: bytes) -> bool:
            written = original(handler, stream, data)
            if written and len(stream._write_buffer):
                partial.append(len(stream._write_buffer))
            return written

        monkeypatch.setattr(handlers, "_send_chunk", recording_send_chunk)
        script = [[f"{i}:" + "x" * 200_000 for i in range(40)]]  # 8 MB
        SCRIPT.token_delay = 0.005  # each token comes while the response waits for the next
        SCRIPT.turns = script
        body = json.dumps({"message": "go"}).encode()
        path = urllib.parse.urlsplit(base_url).path + "api/streamchat/chat/stream"
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, as a slow client's
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", jp_http_port))
        reader, writer = await asyncio.open_connection(sock=sock)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {ALICE}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        parser, received = SseParser(), []
        await asyncio.sleep(0.3)  # reads nothing while the turn runs: the server's socket buffer fills up
        try:
            while not parser.finished:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout=10)
                assert data, "the server closed the connection before the response ended"
                received += [parse_event(payload) for _, payload in parser.feed(data)]
        finally:
            writer.close()
        direct = [comparable(event) async for event in ChatSession(ScriptedProvider(script)).stream("go")]
        assert parser.status == 200
        assert [comparable(event) for event in received] == direct
        assert partial  # the case under test happened


async def test_sse_events_go_out_without_nagles_delay(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TCP_NODELAY is on while a response streams (Nagle's algorithm would hold a token until the last is acked)."""
    from jupyter_server_extension import handlers

    nodelay: list[int] = []
    original = handlers._send_chunk

    def recording_send_chunk(handler: Any, stream: Any, data: bytes) -> bool:
        nodelay.append(stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return original(handler, stream, data)

    monkeypatch.setattr(handlers, "_send_chunk", recording_send_chunk)
    SCRIPT.token_delay = 0.01  # each token comes while the response waits for the next: pushed
    SCRIPT.turns = [[f"t{i} " for i in range(5)]]
    frames = await sse_events(client, "POST", "api/streamchat/chat/stream", json={"message": "go"})
    assert frames[-1].event.type == "done"
    assert nodelay and all(nodelay), nodelay
