"""A real HTTP/1.1 server on 127.0.0.1 that replays recorded backend responses.

It runs on its own event loop in a thread, so the code under test talks to it through
real sockets exactly as it talks to Ollama or vLLM. Each request takes the next queued
`Reply`: a status, headers, and body pieces written as separate HTTP chunks (so a line
or a UTF-8 character can be cut anywhere), then an ending: a proper end, a dropped
connection, or a stall until the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["RecordedRequest", "ReplayServer", "Reply", "cut", "cut_plans"]


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP response."""

    pieces: Sequence[bytes] = ()
    status: int = 200
    content_type: str = "application/x-ndjson"
    headers: dict[str, str] = field(default_factory=dict)
    ending: Literal["end", "drop", "stall"] = "end"
    pause: float = 0.0
    """Seconds between pieces (pacing, so the client reads them one by one)."""
    chunked: bool = True
    """Chunked transfer encoding; False sends a Content-Length (and needs ending="end")."""


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    """`data` split at the given byte offsets (out-of-range and repeated offsets ignored)."""
    bounds = sorted({p for p in points if 0 < p < len(data)})
    edges = [0, *bounds, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def cut_plans(data: bytes) -> dict[str, list[bytes]]:
    """The same bytes cut in several ways, named for the test ids."""
    text = data.decode()
    inside_chars: list[int] = []  # the offsets inside every multi-byte character
    offset = 0
    for char in text:
        size = len(char.encode())
        inside_chars += range(offset + 1, offset + size)
        offset += size
    return {
        "whole": [data],
        "lines": cut(data, [i + 1 for i, b in enumerate(data) if b == 0x0A]),
        "every-byte": cut(data, range(1, len(data))),
        "every-7": cut(data, range(7, len(data), 7)),
        "inside-utf8": cut(data, inside_chars),
        "before-newlines": cut(data, [i for i, b in enumerate(data) if b == 0x0A]),
    }


class ReplayServer:
    """Serves queued `Reply`s in order; records requests and client disconnects."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.connections = 0
        """TCP connections accepted since the last `reset`."""
        self.disconnects = 0
        """Responses the client abandoned before their end."""
        self.closed_connections = 0
        """TCP connections ended since the last `reset` (by either side)."""
        self._replies: deque[Reply] = deque()
        self._disconnected = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="replay-server", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ReplayServer:
        """Start serving; returns self."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the replay server did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self, *replies: Reply) -> None:
        """Forget earlier requests and queue `replies` for the next requests."""
        self.requests.clear()
        self.connections = 0
        self.disconnects = 0
        self.closed_connections = 0
        self._replies = deque(replies)

    def wait_for_disconnects(self, count: int, timeout: float = 10.0) -> bool:
        """Block until `count` abandoned responses were seen (False on timeout)."""
        with self._disconnected:
            return self._disconnected.wait_for(lambda: self.disconnects >= count, timeout)

    def wait_for_closed_connections(self, count: int, timeout: float = 10.0) -> bool:
        """Block until `count` connections have ended (False on timeout)."""
        with self._disconnected:
            return self._disconnected.wait_for(lambda: self.closed_connections >= count, timeout)

    # -- serving ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        self._loop.run_until_complete(start())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            assert self._server is not None
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with self._disconnected:
                self.closed_connections += 1
                self._disconnected.notify_all()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(RecordedRequest(method, path, headers, body))
        reply = self._replies.popleft() if self._replies else Reply([b'{"error":"no reply queued"}'], status=500)
        return await self._reply(reply, reader, writer)

    async def _reply(self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = [f"HTTP/1.1 {reply.status} Scripted", f"Content-Type: {reply.content_type}"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        if reply.chunked:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append(f"Content-Length: {sum(len(p) for p in reply.pieces)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        try:
            await writer.drain()
            for index, piece in enumerate(reply.pieces):
                if index and reply.pause:
                    await asyncio.sleep(reply.pause)
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if reply.chunked else piece)
                await writer.drain()
                if reader.at_eof():  # the client closed its side
                    raise ConnectionResetError
        except ConnectionError:
            self._note_disconnect()
            return False
        if reply.ending == "drop":
            writer.transport.abort()
            return False
        if reply.ending == "stall":
            # say nothing more; the client's going away shows as EOF on our side (or as a reset,
            # when it closes with some of our bytes unread)
            with contextlib.suppress(ConnectionError):
                await reader.read()
            self._note_disconnect()
            return False
        if reply.chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return True

    def _note_disconnect(self) -> None:
        with self._disconnected:
            self.disconnects += 1
            self._disconnected.notify_all()
