"""The serving benchmarks' load client (bench/sse_load.py) reads what the servers send.

Its parser against framings split at every possible place, then the client against the
two real servers the benchmarks load: the extension (tornado, lines end in "\\n") and the
FastAPI + sse-starlette peer (uvicorn, lines end in "\\r\\n"), both in their own process;
and the two floors `bench/server_streams.py` measures beside the extension.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.server_streams import server_env, start_floor_server, start_jupyter_floor, start_server, wait_ready
from bench.sse_load import STREAM_PATH, TOKEN, SseParser, first_token_seconds, free_port, load_step, open_stream

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENTS = [
    (b"thinking", b'{"seq":1}'),
    (b"token", b'{"content":"1.5|0 "}'),
    (b"token", b"line one\nline two"),
    (b"message", b"no event field"),
    (b"done", b'{"seq":4}'),
]


def framed(newline: bytes) -> bytes:
    """`EVENTS` as an SSE body with `newline` ending each line, with an id, a comment and a retry among them."""
    lines = [b"retry: 250", b": ping", b""]
    for seq, (event, data) in enumerate(EVENTS, 1):
        lines.append(b"id: t:%d" % seq)
        if event != b"message":
            lines.append(b"event: " + event)
        lines.extend(b"data: " + line for line in data.split(b"\n"))
        lines.append(b"")
    return newline.join(lines) + newline


@given(
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    chunk_size=st.integers(min_value=1, max_value=64),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_the_parser_gets_every_event_however_the_bytes_are_chunked_and_split(
    newline: bytes, chunk_size: int, cuts: list[int]
) -> None:
    body = framed(newline)
    chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
    wire = HEAD + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    parser = SseParser()
    events = []
    edges = sorted({0, len(wire), *(cut for cut in cuts if cut < len(wire))})
    for start, end in itertools.pairwise(edges):
        events.extend(parser.feed(wire[start:end]))
    assert parser.status == 200
    assert parser.finished
    assert events == EVENTS


def test_a_body_that_the_close_delimits_ends_with_the_connection() -> None:
    parser = SseParser()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    assert parser.feed(head + b"event: token\rdata: a\r\revent: done\rdata: b\r\r") == [(b"token", b"a")]
    assert not parser.finished  # the last "\r" may be the first half of "\r\n"
    assert parser.eof() == [(b"done", b"b")]
    assert parser.finished
    cut = SseParser()
    assert cut.feed(head + b"event: token\ndata: a\n") == []
    assert cut.eof() == []  # an event the close cut short is not dispatched (the SSE spec)


def test_the_parser_reads_a_refusal_whole() -> None:
    parser = SseParser()
    assert parser.feed(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 8\r\n\r\nno ") == []
    assert parser.feed(b"token") == []
    assert (parser.status, parser.finished, parser.body_error) == (401, True, b"no token")


@pytest.fixture(params=["streamchat", "fastapi"])
async def server_port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """A port where one of the benchmarks' two servers streams `StampingModel` turns."""
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        if request.param == "streamchat":
            process = start_server(port, Path(workdir))
        else:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.starlette_app", "--port", str(port), "--http", "h11"],
                env=server_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            await wait_ready(f"http://127.0.0.1:{port}/")
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


async def test_the_client_reads_every_token_of_each_server_with_its_lateness(server_port: int) -> None:
    lateness: list[float] = []
    streams = await asyncio.gather(*(open_stream(server_port, "5 0.01", lateness) for _ in range(3)))
    await asyncio.gather(*(stream.closed for stream in streams))
    for stream in streams:
        assert (stream.error, stream.parser.status, stream.tokens, stream.done) == (None, 200, 5, True)
    assert len(lateness) == 15
    # a token is read after the time its model had it due (the processes share the clock)
    assert min(lateness) > -0.005


async def test_the_client_streams_turn_after_turn_on_a_kept_alive_connection(server_port: int) -> None:
    connection = await open_stream(server_port, "2 0", keep_alive=True)
    await connection.ended
    assert (connection.error, connection.tokens, connection.done) == (None, 2, True)
    for _ in range(3):
        assert await first_token_seconds(server_port, "3 0", connection=connection) > 0
        assert (connection.error, connection.tokens, connection.done) == (None, 3, True)
    assert not connection.closed.done()
    connection.close()
    await connection.closed


@contextlib.asynccontextmanager
async def floor(kind: str) -> AsyncIterator[tuple[int, int]]:
    """A floor server of `bench/server_streams.py` running ("bare": floor_server.py, "jupyter": jupyter_floor.py).

    Yields its port and pid.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        if kind == "bare":
            process = start_floor_server(port)
            ready = ""
        else:
            process = start_jupyter_floor(port, Path(workdir))
            ready = "api/status"
        try:
            await wait_ready(f"http://127.0.0.1:{port}/", ready)
            yield port, process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


FLOORS = pytest.mark.parametrize("kind", ["bare", "jupyter"])


@FLOORS
async def test_a_floor_server_answers_turn_after_turn_with_one_token_and_done(kind: str) -> None:
    async with floor(kind) as (port, _):
        connection = await open_stream(port, "1 0", keep_alive=True)
        await connection.ended
        assert (connection.error, connection.parser.status, connection.tokens, connection.done) == (None, 200, 1, True)
        for _ in range(3):
            assert await first_token_seconds(port, connection=connection) > 0
            assert (connection.error, connection.tokens, connection.done) == (None, 1, True)
        connection.close()
        await connection.closed


@FLOORS
async def test_a_floor_server_paces_a_stream_as_the_stamping_model_does(kind: str) -> None:
    """COUNT INTERVAL FIRST: COUNT stamped tokens, the first FIRST s in, then every INTERVAL s, then done."""
    async with floor(kind) as (port, pid):
        lateness: list[float] = []
        began = time.time()
        stream = await open_stream(port, "5 0.04 0.1", lateness)
        await stream.closed
        took = time.time() - began
        assert (stream.error, stream.parser.status, stream.tokens, stream.done) == (None, 200, 5, True)
        assert len(lateness) == 5 and all(0 <= late < 0.05 for late in lateness)  # received after it was due
        assert took >= 0.1 + 4 * 0.04
        result = await load_step(port, 20, 0.5, 0.2, pid)
        assert (result.failed, result.received) == ([], 20 * 10)
        assert result.server_cpu is not None and result.server_cpu > 0


async def stream_response_head(port: int, token: str | None) -> bytes:
    """The response head to a one-token ``POST`` `STREAM_PATH`, with ``Authorization: token <token>`` when given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"message": "1 0"}'
    auth = b"Authorization: token %s\r\n" % token.encode() if token else b""
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (STREAM_PATH.encode(), auth, len(body), body)
    )
    try:
        return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def test_the_jupyter_server_floor_authenticates_as_jupyter_server_does() -> None:
    """Its handler is behind jupyter_server's token check: a request without the token is refused."""
    async with floor("jupyter") as (port, _):
        head = await stream_response_head(port, None)
        assert head.startswith(b"HTTP/1.1 403 "), head


async def test_the_jupyter_server_floor_sets_no_login_cookie() -> None:
    """As the extension does for the server token's holder (the rest of jupyter_server's request is whole)."""
    async with floor("jupyter") as (port, _):
        head = await stream_response_head(port, TOKEN)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"set-cookie" not in head.lower(), head
