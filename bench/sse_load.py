"""The serving benchmarks' shared parts: the model the servers run, the SSE load client, the load steps.

Used by `bench/server_streams.py` (the extension alone) and `bench/peers.py` (the
extension next to a FastAPI + sse-starlette app), and by the server processes they start
(`make_provider`, `StampingModel`).

- `StampingModel`: a scripted model whose every token says when it was due,
  "<due time>|<i> ". Asked "COUNT INTERVAL [FIRST]" it yields COUNT tokens, the first
  FIRST seconds after the turn starts (INTERVAL when not given), then one every
  INTERVAL seconds. It sleeps until each token is due and stamps the due time, not the
  time it woke up: when the server's event loop runs late, the token's lateness shows it
  (a model server produces at its own pace whatever the process serving it does).
- `SseParser`: an incremental HTTP/1.1 response parser (chunked, Content-Length or
  until close) and Server-Sent Events parser; lines may end in "\\n", "\\r\\n" or "\\r"
  (tornado frames with "\\n", sse-starlette with "\\r\\n"), split anywhere across reads.
- The load client: raw asyncio `Protocol` connections, one per stream, no HTTP library,
  so that the client costs as little per frame as it can (it reads the clock once per
  socket read, and per token frame only finds the stamp). `load_step` starts the streams
  spread over a ramp (users arrive over time, not all in the same millisecond) and
  records the lateness (receive time − due time) of every token, the first ones
  included (this process's garbage collector off meanwhile: its pauses are not the
  server's); `capacity` grows the load step by step (`load_steps`: 50, 100, 250, 500, 750,
  1000 …) until p99 lateness reaches the budget; `interleaved` takes times to first
  token of several servers (or paths) turn by turn, with a gap before each.
- `split_cores`: the server process on one core, this (client) process on the other.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import psutil

from streamchat import Settings
from streamchat.providers.base import FinishDelta, ModelRequest, Provider, ProviderDelta, TextDelta

TOKEN = "bench-token"
"""The server token both benchmark servers require (``Authorization: token …``)."""
STREAM_PATH = "/api/streamchat/chat/stream"
"""The route both benchmark servers stream a turn on (POST, JSON body ``{"message": …}``)."""
RATE = 20
"""Tokens per second of each stream under load."""
BUDGET = 0.050
"""A load step is held while p99 lateness stays under this many seconds."""


# -- the model the servers run ----------------------------------------------------------------------


class StampingModel(Provider):
    """Answers "COUNT INTERVAL [FIRST]" with COUNT tokens "<due time>|<i> ", each yielded when due.

    One instance serves every session of a server.
    """

    name = "stamping"

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        count, interval, *rest = (float(word) for word in request.messages[-1].content.split())
        first = rest[0] if rest else interval
        start = time.time()
        for i in range(int(count)):
            due = start + first + i * interval
            now = time.time()
            if due > now:
                await asyncio.sleep(due - now)
            elif not interval and not first:
                due = now  # a turn as fast as possible: the stamp is when the token was made
            yield TextDelta(text=f"{due:.6f}|{i} ")
        yield FinishDelta(reason="stop")


def make_provider(settings: Settings) -> StampingModel:
    """`StreamChat.provider_factory` of the benchmark servers."""
    return StampingModel("stamping")


# -- processes and cores -----------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Cores:
    """Which core the server process and the load client run on (None: not pinned)."""

    server: int | None
    client: int | None
    note: str

    def pin_client(self) -> None:
        """Pin this process to the client's core."""
        if self.client is not None:
            os.sched_setaffinity(0, {self.client})

    def server_preexec(self) -> Callable[[], None] | None:
        """A `Popen(preexec_fn=…)` pinning the server process (all its threads) to its core."""
        core = self.server
        if core is None:
            return None
        return lambda: os.sched_setaffinity(0, {core})


def split_cores() -> Cores:
    """The server on the first core this process may use, the client on the second; unpinned with one core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Cores(None, None, f"only {len(cpus)} core available: server and client share it (not pinned)")
    return Cores(
        cpus[0],
        cpus[1],
        f"server process pinned to core {cpus[0]}, load client to core {cpus[1]} ({os.cpu_count()} cores on the machine)",
    )


def cpu_seconds(pid: int) -> float:
    """CPU seconds process `pid` (all its threads) has run so far.

    On Linux the scheduler's own count in nanoseconds (``/proc/PID/task/*/schedstat``). The
    user + system times that psutil reads (``/proc/PID/stat``) are sampled at each clock
    tick (10 ms), which misses most of a server that wakes for a millisecond after an idle
    gap: 0.7 ms per one-token turn where the scheduler counts 2.8 ms. Elsewhere psutil's.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        tasks = []
    total_ns = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total_ns += int(stat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile (its time is in no task's count any more)
    if tasks and total_ns:
        return total_ns / 1e9
    times = psutil.Process(pid).cpu_times()
    total: float = times.user + times.system
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid`."""
    rss: int = psutil.Process(pid).memory_info().rss
    return rss


# -- the parser ----------------------------------------------------------------------------------------


class SseParser:
    """Parses one HTTP/1.1 response carrying Server-Sent Events, fed bytes as they arrive.

    `feed` returns the complete events of the bytes given, as (event type, data) with the
    type ``b"message"`` when the event names none and data lines joined by ``b"\\n"``
    (comments and events without data dispatch nothing, as in the SSE spec).
    """

    def __init__(self) -> None:
        self.status: int | None = None
        """The response's status code, once its head has arrived."""
        self.finished = False
        """The whole body has arrived."""
        self.body_error = b""
        """The body of a response whose status is not 200 (read whole)."""
        self._head = b""
        self._raw = b""  # body bytes not yet de-chunked
        self._mode = ""  # "chunked", "length" or "close"
        self._left = 0  # chunked: bytes of the current chunk left, its CRLF included; length: body bytes left
        self._text = b""  # de-chunked body not yet split into events (a trailing lone "\r" waits here)

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The events completed by `data`."""
        if self.status is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return []
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            self._start(head)
        body = self._dechunk(data) if self._mode == "chunked" else self._take(data)
        if self.status != 200:
            self.body_error += body
            return []
        return self._events(body) if body or (self.finished and self._text) else []

    def eof(self) -> list[tuple[bytes, bytes]]:
        """The connection closed: the end of a body that only its close delimits, and its last events."""
        if self._mode != "close" or self.finished:
            return []
        self.finished = True
        return self._events(b"") if self.status == 200 and self._text else []

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            self._mode = "chunked"
        elif b"content-length" in headers:
            self._mode, self._left = "length", int(headers[b"content-length"])
            self.finished = self._left == 0
        else:
            self._mode = "close"

    def _take(self, data: bytes) -> bytes:
        if self._mode == "length":
            data = data[: self._left]
            self._left -= len(data)
            self.finished = self._left == 0
        return data

    def _dechunk(self, data: bytes) -> bytes:
        if not self._raw and not self._left:  # the common case: `data` is one whole chunk
            end = data.find(b"\r\n")
            if 0 < end < 8 and data.endswith(b"\r\n"):
                length = int(data[:end], 16)
                if length and end + 4 + length == len(data):
                    return data[end + 2 : -2]
        raw = self._raw + data if self._raw else data
        pieces = []
        pos = 0
        size = len(raw)
        while pos < size and not self.finished:
            if self._left == 0:  # a chunk-size line
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                extension = raw.find(b";", pos, end)  # a chunk extension, which nobody sends: ignored
                length = int(raw[pos : end if extension < 0 else extension], 16)
                pos = end + 2
                if length == 0:
                    self.finished = True  # trailers, if any, are not read
                    break
                self._left = length + 2
            take = min(self._left, size - pos)
            data_left = self._left - 2  # of the chunk's data, its CRLF excluded
            if data_left > 0:
                pieces.append(raw[pos : pos + min(take, data_left)])
            pos += take
            self._left -= take
        self._raw = raw[pos:] if pos < size and not self.finished else b""
        return b"".join(pieces)

    def _events(self, body: bytes) -> list[tuple[bytes, bytes]]:
        text = self._text + body if self._text else body
        keep = b""
        if b"\r" in text:
            if text.endswith(b"\r") and not self.finished:  # maybe the first half of "\r\n": wait for the next byte
                text, keep = text[:-1], b"\r"
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = text.split(b"\n\n")
        self._text = rest + keep
        events = []
        for block in blocks:
            event = b"message"
            data: bytes | None = None
            for line in block.split(b"\n"):
                if line.startswith(b"data"):
                    value = line[6:] if line[5:6] == b" " else line[5:]
                    if line[4:5] not in (b":", b""):
                        continue  # another field whose name starts with "data"
                    data = value if data is None else data + b"\n" + value
                elif line.startswith(b"event:"):
                    event = line[7:] if line[6:7] == b" " else line[6:]
            if data is not None:
                events.append((event, data))
        return events


def stamp_of(data: bytes) -> float:
    """The due time a `StampingModel` token event carries (its content starts "<due>|")."""
    start = data.index(b'"content":"') + 11
    return float(data[start : data.index(b"|", start)])


# -- the client ---------------------------------------------------------------------------------------


def stream_request(message: str, host: str = "127.0.0.1", path: str = STREAM_PATH) -> bytes:
    """The bytes of a POST starting a turn that streams `message`'s answer."""
    body = json.dumps({"message": message}).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: token {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class SseStream(asyncio.Protocol):
    """Streamed turns over one connection: sends a request, parses its response, records what it is told to.

    The connection closes at the end of the response unless `keep_alive`; then `send`
    writes the next request on it.
    """

    def __init__(self, request: bytes, lateness: list[float] | None = None, keep_alive: bool = False) -> None:
        self.lateness = lateness
        """Where each token's receive time − due time goes (None: not recorded)."""
        self.keep_alive = keep_alive
        self.closed = asyncio.get_running_loop().create_future()
        """Resolved once the connection is closed."""
        self.transport: asyncio.Transport | None = None
        self._reset(request)

    def _reset(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.parser = SseParser()
        self.tokens = 0
        self.done = False
        """The turn's `done` event arrived."""
        self.sent_at = 0.0
        self.first_token_at = 0.0
        """`time.time()` when the request was written, and when the first token event arrived."""
        self.head = loop.create_future()
        """Resolved once the response's head has arrived (the server accepted the stream)."""
        self.first_token = loop.create_future()
        self.ended = loop.create_future()
        """Resolved once the whole response has arrived, or the connection closed."""
        self.error: str | None = None

    def send(self, request: bytes) -> None:
        """Write the next request on this kept-alive connection, its response's parsing afresh."""
        assert self.transport is not None and self.keep_alive and self.ended.done()
        self._reset(request)
        self.sent_at = time.time()
        self.transport.write(request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self.sent_at = time.time()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self._take(self.parser.feed(data), time.time())

    def _take(self, events: list[tuple[bytes, bytes]], now: float) -> None:
        parser = self.parser
        for event, payload in events:
            if event == b"token":
                if not self.tokens:
                    self.first_token_at = now
                    self.first_token.set_result(None)
                self.tokens += 1
                if self.lateness is not None:
                    self.lateness.append(now - stamp_of(payload))
            elif event == b"done":
                self.done = True
        if parser.status is not None and not self.head.done():
            self.head.set_result(None)
        if parser.finished:
            if parser.status != 200:
                self.error = f"HTTP {parser.status}: {parser.body_error[:200]!r}"
            if not self.keep_alive:
                self.close()
            for future in (self.head, self.first_token, self.ended):
                if not future.done():
                    future.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None and not self.parser.finished:
            self._take(self.parser.eof(), time.time())
        if exc is not None and self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
        elif not self.parser.finished and self.error is None:
            self.error = "the server closed the connection before the end of the response"
        for future in (self.head, self.first_token, self.ended, self.closed):
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        """Close the connection (the server sees the client leave)."""
        if self.transport is not None:
            self.transport.close()


async def open_stream(
    port: int, message: str, lateness: list[float] | None = None, keep_alive: bool = False
) -> SseStream:
    """A connected `SseStream` of a turn answering `message`, its request written."""
    stream = SseStream(stream_request(message), lateness, keep_alive)
    await asyncio.get_running_loop().create_connection(lambda: stream, "127.0.0.1", port)
    return stream


async def first_token_seconds(port: int, message: str = "1 0", connection: SseStream | None = None) -> float:
    """Seconds from writing the request to reading the first token event; reads to the end.

    On a new connection (its handshake done before the clock starts), or on `connection`,
    kept alive, whose previous response has ended.
    """
    if connection is None:
        stream = await open_stream(port, message)
    else:
        stream = connection
        stream.send(stream_request(message))
    await stream.first_token
    await stream.ended
    if stream.error or not stream.done:
        raise RuntimeError(f"the stream failed: {stream.error or 'no done event'}")
    return stream.first_token_at - stream.sent_at


async def interleaved(
    paths: dict[str, Callable[[], Awaitable[float]]], turns: int, gap: float
) -> dict[str, list[float]]:
    """`turns` rounds of one call of each path in turn, each call `gap` seconds after the previous one ended.

    Each call returns the seconds it measured (a time to first token); the values of each
    path come back sorted. This process's garbage collector is off meanwhile: its
    collections would land in any of the columns at random.
    """
    values: dict[str, list[float]] = {name: [] for name in paths}
    gc.collect()
    gc.disable()
    try:
        for _ in range(turns):
            for name, measure in paths.items():
                await asyncio.sleep(gap)
                values[name].append(await measure())
    finally:
        gc.enable()
    for column in values.values():
        column.sort()
    return values


def percentile(ordered: Sequence[float], share: float) -> float:
    """The value at `share` (0–1) of sorted values (nearest rank)."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class StepResult:
    """One load step: `streams` streams of `seconds` s at `RATE` tokens/s each."""

    streams: int
    expected: int
    """Tokens the step should deliver."""
    lateness: list[float] = field(repr=False)
    """Sorted."""
    failed: list[str]
    """What went wrong with each stream that failed (an error, or tokens missing)."""
    wall: float
    client_cpu: float
    server_cpu: float | None
    client_lag: list[float] = field(repr=False)
    """Sorted: how late this process's event loop ran a 5 ms timer, sampled all through the step."""

    @property
    def received(self) -> int:
        """Tokens delivered."""
        return len(self.lateness)

    @property
    def p50(self) -> float:
        """Median lateness."""
        return percentile(self.lateness, 0.5)

    @property
    def p99(self) -> float:
        """99th percentile lateness."""
        return percentile(self.lateness, 0.99)

    @property
    def held(self) -> bool:
        """Every stream delivered every token with p99 lateness under `BUDGET`."""
        return not self.failed and self.received == self.expected and self.p99 < BUDGET

    @property
    def server_us_per_token(self) -> float:
        """Server process CPU µs per token delivered (all its work during the step)."""
        if self.server_cpu is None or not self.received:
            return math.nan
        return self.server_cpu / self.received * 1e6

    @property
    def client_load(self) -> float:
        """This (client) process's CPU time over the step's wall time: 1.0 is a whole core."""
        return self.client_cpu / self.wall


async def load_step(port: int, streams: int, seconds: float, ramp: float, server_pid: int | None) -> StepResult:
    """`streams` streams of `seconds` × `RATE` tokens, their starts spread evenly over `ramp` seconds."""
    loop = asyncio.get_running_loop()
    tokens = round(seconds * RATE)
    message = f"{tokens} {1 / RATE}"
    lateness: list[float] = []
    opened: list[SseStream] = []
    failed: list[str] = []

    async def start(delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            opened.append(await open_stream(port, message, lateness))
        except OSError as exc:
            failed.append(f"connect: {exc}")

    lag: list[float] = []

    async def watch() -> None:  # the client's own lateness: if it nears the budget, the client is what limits
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            lag.append(loop.time() - before - 0.005)

    gc.collect()
    gc.disable()  # a full collection of this process would pause reading every stream at once
    try:
        server_cpu = cpu_seconds(server_pid) if server_pid else 0.0
        client_cpu, began = time.process_time(), loop.time()
        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(start(ramp * i / streams) for i in range(streams)))
        deadline = ramp + seconds + 30 + streams / 100
        pending = [stream.closed for stream in opened]
        if pending:
            await asyncio.wait(pending, timeout=max(1.0, deadline - (loop.time() - began)))
        wall = loop.time() - began
        client_cpu = time.process_time() - client_cpu
        watcher.cancel()
    finally:
        gc.enable()
    server_used = cpu_seconds(server_pid) - server_cpu if server_pid else None
    for stream in opened:
        if not stream.closed.done():
            failed.append(f"not finished after {deadline:.0f} s")
            stream.close()
        elif stream.error or not stream.done or stream.tokens != tokens:
            failed.append(stream.error or f"{stream.tokens} of {tokens} tokens, done={stream.done}")
    lateness.sort()
    lag.sort()
    return StepResult(streams, streams * tokens, lateness, failed, wall, client_cpu, server_used, lag)


def load_steps(max_streams: int, step: int = 250, small: Sequence[int] = (50, 100)) -> list[int]:
    """The streams of each load step: the `small` ones, then every multiple of `step` up to `max_streams`."""
    steps = [*(streams for streams in small if streams < step), *range(step, max_streams + 1, step)]
    return [streams for streams in steps if streams <= max_streams] or [max_streams]


STEP_HEADER = (
    f"   {'streams':>8} {'tokens':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
    f"{'server µs/token':>16} {'client CPU':>11} {'client lag p99':>15}  failed"
)


def step_row(result: StepResult) -> str:
    """One printed line of a load step."""
    late = [value * 1e3 for value in (result.p50, result.p99, result.lateness[-1] if result.lateness else math.nan)]
    return (
        f"   {result.streams:8d} {result.received:8d} {late[0]:8.2f} {late[1]:8.2f} {late[2]:8.1f} "
        f"{result.server_us_per_token:16.1f} {result.client_load:10.0%} {percentile(result.client_lag, 0.99) * 1e3:12.1f} ms"
        f"  {len(result.failed)}" + (f" ({result.failed[0]})" if result.failed else "")
    )


async def capacity(
    port: int, steps: Sequence[int], seconds: float, ramp: float, server_pid: int | None
) -> tuple[int, list[StepResult]]:
    """Run the steps in order, printing each, up to the first not held; (most streams held, the steps run)."""
    held = 0
    results = []
    print(STEP_HEADER, flush=True)
    for streams in steps:
        result = await load_step(port, streams, seconds, ramp, server_pid)
        results.append(result)
        print(step_row(result), flush=True)
        client_lag = percentile(result.client_lag, 0.99)
        if result.client_load > 0.8 or client_lag > BUDGET / 2:
            print(
                f"   (the client used {result.client_load:.0%} of its core and ran its timers up to "
                f"{client_lag * 1e3:.0f} ms late (p99): part of this step's lateness may be the client's)"
            )
        if not result.held:
            break
        held = streams
        await asyncio.sleep(1.0)  # let the server drop the finished streams' connections
    return held, results
