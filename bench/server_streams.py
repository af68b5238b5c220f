"""Cost of serving the chat through the Jupyter Server extension (loopback only).

Starts `jupyter server` with streamchat in a subprocess on 127.0.0.1, its model the
`StampingModel` of `bench/sse_load.py` (each token says when it was due), the server
process pinned to one core and this process (the load client) to the other, then prints:

1. time to first token added by SSE over `ChatSession.stream`: --ttft-turns one-token
   turns each way, interleaved: calling `ChatSession.stream` in this process (from the
   call to the first `token` event), and through POST chat/stream read by a raw asyncio
   socket client (from writing the request to reading the first `token` event), on one
   kept-alive connection as a page's client holds, and on a new connection each turn
   (its handshake done before the clock starts, the server's accepting it not), each turn
   10 ms after the previous one ended (a user's next message finds the server idle, the
   previous turn's teardown done); and, with the same client, connection and gaps, the
   floor: `bench/floor_server.py`, a bare asyncio server process pinned to the same core
   answering each request with a one-token SSE response in one write (what any server in
   another process pays on this machine: the loopback round trip and the wake-up of its
   idle core); and the jupyter_server floor: `bench/jupyter_floor.py`, a bare handler in a
   `jupyter server` process of its own on the same core, answering the same request with
   the same bytes behind jupyter_server's whole request (routing, token authentication,
   headers, request log and metrics) and nothing of streamchat's. p50 and p99 of each
   (this process's garbage collector off meanwhile; the servers' on); SSE's added time is
   the kept-alive row's percentile minus the direct one's (goal: ≤ 1 ms at p50, ≤ 3 ms at
   p99), split into jupyter_server's share (jupyter_server floor − floor) and streamchat's
   own (kept-alive − jupyter_server floor), what any jupyter_server handler adds
   (jupyter_server floor − direct), and the server's CPU per such turn, whole (teardown
   included), next to its CPU per jupyter_server's own cheapest authenticated request
   (GET api/status) and the jupyter_server floor's per turn, alike. Then, labelled as such, one turn of --tokens tokens through
   client libraries (httpx-sse and tornado's WebSocket client), whose own cost is in their
   figures;
2. memory: --idle SSE streams held open and idle (POST chat/stream turns whose model
   waits an hour before its first token, so each is a running turn with an open SSE
   response that has sent its head and the `thinking` event, and nothing since); the
   server process's RSS before and with them, and the cost per stream (goal: 1000
   streams ≤ 100 MB);
3. how many concurrent SSE streams at 20 tokens/s each the server process holds while
   the lateness of every token (client receive time − the time the model had it due)
   stays under 50 ms at p99. In each step the streams start spread evenly over --ramp
   seconds (users arrive over time), each --seconds long; every token counts, the first
   ones included. The steps are 50, 100, then every --step (250) streams (250, 500, 750, 1000 …)
   up to --max-streams, and stop at the first step over budget (or in which a stream
   failed or lost tokens). Each row prints the server process's CPU µs per token
   delivered (psutil; other load on a shared machine disturbs it less than the
   latencies), and the client's CPU use and event-loop lag (p99 lateness of a 5 ms
   timer; the client's garbage collector is off during a step): when these near a core
   or the budget, the client, not the server, limits the step. Then the same steps on
   each floor, which paces the same tokens with the same timers and writes them with
   nothing else: the bare asyncio server (what one Python process holds on this core,
   whatever it serves) and the jupyter_server floor (what any handler on jupyter_server
   holds: a new request per stream costs it jupyter_server's whole request).

    python bench/server_streams.py [--ttft-turns 200] [--idle 1000] [--max-streams 1500] [--step 250] [--seconds 4] [--ramp 1]

`--only ttft|memory|streams` runs one part.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/server_streams.py`: the repository root on the path, for `bench.*`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from httpx_sse import aconnect_sse
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from bench.sse_load import (
    TOKEN,
    Cores,
    SseStream,
    StampingModel,
    capacity,
    cpu_seconds,
    first_token_seconds,
    free_port,
    interleaved,
    load_steps,
    make_provider,
    open_stream,
    percentile,
    rss_bytes,
    split_cores,
)
from streamchat import ChatSession, Settings

__all__ = [
    "TOKEN",
    "StampingModel",
    "direct",
    "free_port",
    "make_provider",
    "raw_sse_stream",
    "start_floor_server",
    "start_server",
]

TTFT_GOALS = (0.001, 0.003)
"""SSE time to first token added over `ChatSession.stream`: at most this at p50, and at p99 (issue 12)."""
IDLE_GOAL = 100e6
"""1000 idle SSE streams cost at most this many bytes of the server's RSS (issue 12)."""
STREAMS_GOAL = 1000
"""Concurrent streams the server process must hold (issue 12)."""


# -- the server --------------------------------------------------------------------------------


def server_env() -> dict[str, str]:
    """This environment with the repository root first on PYTHONPATH (the servers import `bench.sse_load`).

    bench/ comes next, for `bench/store.py`'s servers, which import this module as `server_streams`.
    """
    bench = Path(__file__).parent
    path = [str(bench.parent), str(bench), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def start_server(port: int, workdir: Path, preexec: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """`jupyter server` with streamchat and the stamping model, in a subprocess (`preexec`: e.g. pin it)."""
    streamchat = {
        "provider_factory": "bench.sse_load:make_provider",
        "tools": [],
        "max_sessions": 1_000_000,
        "max_sessions_per_user": 1_000_000,
        "max_running_turns": 1_000_000,
        "max_running_turns_per_user": 1_000_000,
        "heartbeat_interval": 15.0,
    }
    return _start_jupyter_server(port, workdir, {"streamchat": True}, {"StreamChat": streamchat}, preexec)


def start_jupyter_floor(port: int, workdir: Path, preexec: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """`jupyter server` with `bench/jupyter_floor.py`'s handler instead of streamchat, in a subprocess."""
    return _start_jupyter_server(port, workdir, {"streamchat": False, "bench.jupyter_floor": True}, {}, preexec)


def _start_jupyter_server(
    port: int,
    workdir: Path,
    extensions: dict[str, bool],
    config: dict[str, Any],
    preexec: Callable[[], None] | None,
) -> subprocess.Popen[bytes]:
    """`jupyter server` on 127.0.0.1:`port` with the bench's token, `extensions` and `config`, its files in `workdir`."""
    server = {"jpserver_extensions": extensions, "ip": "127.0.0.1", "port": port, "open_browser": False}
    config = {"ServerApp": {**server, "allow_root": True}, "IdentityProvider": {"token": TOKEN}, **config}
    workdir.mkdir(exist_ok=True)
    path = workdir / "jupyter_server_config.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", f"--config={path}", f"--ServerApp.root_dir={workdir}"],
        env=server_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec,
    )


def start_floor_server(port: int, preexec: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """`bench/floor_server.py` (a bare asyncio server pacing tokens as the stamping model does) in a subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.floor_server", "--port", str(port)],
        env=server_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec,
    )


async def wait_ready(base: str, path: str = "api/streamchat/health") -> None:
    """Wait until the server answers `path` (the extension's health route by default)."""
    async with httpx.AsyncClient(headers={"Authorization": f"token {TOKEN}"}) as client:
        for _ in range(300):
            try:
                if (await client.get(f"{base}{path}")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start within 30 s")


# -- 1. time to first token -------------------------------------------------------------------------


async def direct(tokens: int) -> tuple[float, float]:
    """(time to first token, total) calling ChatSession.stream in this process."""
    session = ChatSession(make_provider(Settings()), tools=[])
    start = time.perf_counter()
    first = 0.0
    async for event in session.stream(f"{tokens} 0"):
        if event.type == "token" and not first:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


IDLE_BEFORE_TURN = 0.01
"""Seconds the TTFT measurement waits before each turn, so that the server has finished the previous one."""


async def ttft_added(port: int, pid: int, turns: int, floor_port: int, jupyter_floor: tuple[int, int]) -> None:
    """Print part 1: p50/p99 time to first token, direct, through SSE (raw socket client) and the floors; differences.

    `jupyter_floor`: the port and pid of `bench/jupyter_floor.py`'s server.
    """
    kept = await open_stream(port, "1 0", keep_alive=True)  # a page's client: one connection for its turns
    floor = await open_stream(floor_port, "1 0", keep_alive=True)
    jfloor = await open_stream(jupyter_floor[0], "1 0", keep_alive=True)
    await asyncio.gather(kept.ended, floor.ended, jfloor.ended)
    for _ in range(10):  # warm every path up
        await direct(1)
        await first_token_seconds(port, connection=kept)
        await first_token_seconds(port)
        await first_token_seconds(floor_port, connection=floor)
        await first_token_seconds(jupyter_floor[0], connection=jfloor)

    async def kept_alive() -> float:
        return await first_token_seconds(port, connection=kept)

    async def in_process() -> float:
        return (await direct(1))[0]

    # each turn starts with the server idle, as a user's next message finds it: the previous turn's
    # teardown (history saved, response finished) is not in the next turn's figure
    rows = await interleaved(
        {
            "ChatSession.stream (in this process)": in_process,
            "SSE, POST chat/stream on a kept-alive connection": kept_alive,
            "SSE, POST chat/stream on a new connection": lambda: first_token_seconds(port),
            "floor: a bare asyncio server (the one-token response in one write), same cores": lambda: (
                first_token_seconds(floor_port, connection=floor)
            ),
            "jupyter_server floor: the same response from a bare handler (kept-alive)": lambda: first_token_seconds(
                jupyter_floor[0], connection=jfloor
            ),
        },
        turns,
        IDLE_BEFORE_TURN,
    )
    server_cpu = await cpu_per_request(pid, lambda: first_token_seconds(port, connection=kept), turns)
    status_cpu = await cpu_per_request(pid, await status_request(port), turns)
    jfloor_cpu = await cpu_per_request(
        jupyter_floor[1], lambda: first_token_seconds(jupyter_floor[0], connection=jfloor), turns
    )
    kept.close()
    floor.close()
    jfloor.close()
    directs, sses, _, floors, jfloors = rows.values()
    width = max(map(len, rows))
    print(
        f"\n1. time to first token, {turns} one-token turns each way, interleaved, {IDLE_BEFORE_TURN * 1e3:g} ms apart"
    )
    print(f"   {'path':<{width}} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in rows.items():
        print(f"   {name:<{width}} {percentile(values, 0.5) * 1e3:8.3f} {percentile(values, 0.99) * 1e3:8.3f}")
    added = [percentile(sses, share) - percentile(directs, share) for share in (0.5, 0.99)]
    own = [percentile(sses, share) - percentile(floors, share) for share in (0.5, 0.99)]
    verdict = "ok" if added[0] <= TTFT_GOALS[0] and added[1] <= TTFT_GOALS[1] else "BELOW GOAL"
    print(f"   {'added by SSE (kept-alive SSE − direct)':<{width}} {added[0] * 1e3:8.3f} {added[1] * 1e3:8.3f}")
    print(f"   → goal ≤ {TTFT_GOALS[0] * 1e3:g} ms p50, ≤ {TTFT_GOALS[1] * 1e3:g} ms p99: {verdict}")
    label = "the extension's share, with jupyter_server's (kept-alive SSE − floor)"
    print(f"   {label:<{width}} {own[0] * 1e3:8.3f} {own[1] * 1e3:8.3f}")
    for label, minuend, subtrahend in (
        ("jupyter_server's share (jupyter_server floor − floor)", jfloors, floors),
        ("streamchat's own share (kept-alive SSE − jupyter_server floor)", sses, jfloors),
        ("added by any jupyter_server handler (jupyter_server floor − direct)", jfloors, directs),
    ):
        shares = [percentile(minuend, share) - percentile(subtrahend, share) for share in (0.5, 0.99)]
        print(f"   {label:<{width}} {shares[0] * 1e3:8.3f} {shares[1] * 1e3:8.3f}")
    print(
        f"   server process CPU per one-token SSE turn, whole (request, auth, session, turn, response, teardown): "
        f"{server_cpu * 1e3:.2f} ms"
    )
    print(
        f"   the same server's CPU per GET api/status (jupyter_server's own, token-authenticated), alike: "
        f"{status_cpu * 1e3:.2f} ms"
    )
    print(f"   the jupyter_server floor's CPU per one-token turn, alike: {jfloor_cpu * 1e3:.2f} ms")


async def cpu_per_request(pid: int, request: Callable[[], Awaitable[object]], count: int) -> float:
    """The server's CPU seconds per `request()` (awaited `count` times, `IDLE_BEFORE_TURN` apart), whole.

    Taken over the whole run, less what the idle server burns meanwhile (its timers): the
    scheduler counts a running process's time when it stops running, so a count read while the
    server still sends a response's end would miss it.
    """
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.1)
    before, began = cpu_seconds(pid), loop.time()
    await asyncio.sleep(1.0)
    idle = (cpu_seconds(pid) - before) / (loop.time() - began)
    before, began = cpu_seconds(pid), loop.time()
    for _ in range(count):
        await asyncio.sleep(IDLE_BEFORE_TURN)
        await request()
    await asyncio.sleep(0.1)  # the last response's teardown
    return (cpu_seconds(pid) - before - idle * (loop.time() - began)) / count


async def status_request(port: int) -> Callable[[], Awaitable[None]]:
    """A kept-alive connection's ``GET /api/status`` with the server's token: jupyter_server's own cheapest request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {TOKEN}\r\n\r\n".encode()

    async def send() -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = next(int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
        await reader.readexactly(length)

    return send


async def through_sse(client: httpx.AsyncClient, base: str, tokens: int) -> tuple[float, float]:
    """(time to first token, total) through POST chat/stream with httpx-sse."""
    start = time.perf_counter()
    first = 0.0
    async with aconnect_sse(
        client, "POST", f"{base}api/streamchat/chat/stream", json={"message": f"{tokens} 0"}
    ) as source:
        async for sse in source.aiter_sse():
            if sse.event == "token" and not first:
                first = time.perf_counter() - start
    return first, time.perf_counter() - start


async def through_ws(port: int, tokens: int) -> tuple[float, float]:
    """(time to first token, total) through the WebSocket (connection set up beforehand)."""
    ws = await websocket_connect(
        HTTPRequest(f"ws://127.0.0.1:{port}/api/streamchat/ws", headers={"Authorization": f"token {TOKEN}"})
    )
    start = time.perf_counter()
    first = 0.0
    await ws.write_message(json.dumps({"type": "chat.message", "message": f"{tokens} 0"}))
    while True:
        message = json.loads(await ws.read_message() or "{}")
        if message.get("type") == "chat.token" and not first:
            first = time.perf_counter() - start
        if message.get("type") in ("chat.complete", None):
            break
    elapsed = time.perf_counter() - start
    ws.close()
    return first, elapsed


async def raw_total(port: int, tokens: int) -> tuple[float, float]:
    """(time to first token, total) through POST chat/stream with the raw socket client."""
    stream = await open_stream(port, f"{tokens} 0")
    await stream.ended
    if stream.error or not stream.done:
        raise RuntimeError(f"the stream failed: {stream.error or 'no done event'}")
    return stream.first_token_at - stream.sent_at, time.time() - stream.sent_at


async def overheads(base: str, port: int, tokens: int, repeat: int) -> None:
    """Print part 1b: per-event cost of a long turn, including the client libraries' own."""
    events = tokens + 2  # thinking, tokens, done
    rows = []
    async with httpx.AsyncClient(headers={"Authorization": f"token {TOKEN}"}, timeout=60) as client:
        paths: list[tuple[str, Callable[[int], Awaitable[tuple[float, float]]]]] = [
            ("ChatSession.stream", direct),
            ("SSE, raw socket client", lambda n: raw_total(port, n)),
            ("SSE, httpx + httpx-sse", lambda n: through_sse(client, base, n)),
            ("WebSocket, tornado client", lambda n: through_ws(port, n)),
        ]
        for name, run in paths:
            ttft = statistics.median([(await run(1))[0] for _ in range(repeat * 5)])
            total = min([(await run(tokens))[1] for _ in range(repeat)])
            rows.append((name, ttft, total))
    base_total = rows[0][2]
    print(
        f"\n1b. one turn of {tokens} tokens (best of {repeat}; ttft: median of {repeat * 5} one-token turns), "
        "the client's own cost included"
    )
    print(f"   {'path':<28} {'ttft ms':>9} {'total ms':>9} {'µs/event':>9} {'added µs/event':>15}")
    for name, ttft, total in rows:
        added = (total - base_total) / events * 1e6
        print(f"   {name:<28} {ttft * 1e3:9.2f} {total * 1e3:9.1f} {total / events * 1e6:9.1f} {added:15.1f}")


# -- 2. idle streams' memory ----------------------------------------------------------------------------


async def idle_memory(port: int, pid: int, count: int) -> None:
    """Print part 2: the server's RSS before and with `count` idle SSE streams open."""
    await asyncio.sleep(1.0)
    before = rss_bytes(pid)
    streams: list[SseStream] = []
    for start in range(0, count, 100):  # a hundred at a time: connecting all at once overflows the listen backlog
        batch = await asyncio.gather(*(open_stream(port, "1 0 3600") for _ in range(min(100, count - start))))
        await asyncio.gather(*(stream.head for stream in batch))
        streams.extend(batch)
    failed = [stream.error or f"HTTP {stream.parser.status}" for stream in streams if stream.parser.status != 200]
    await asyncio.sleep(1.0)
    held = rss_bytes(pid)
    for stream in streams:
        stream.close()
    per_stream = (held - before) / count
    goal = IDLE_GOAL * count / 1000
    verdict = "ok" if held - before <= goal else "ABOVE"
    print(f"\n2. server RSS with {count} idle SSE streams (running turns whose model has not produced a token yet)")
    print(f"   before {before / 1e6:.1f} MB, with them {held / 1e6:.1f} MB: {per_stream / 1e3:.1f} kB per stream")
    print(f"   → {(held - before) / 1e6:.1f} MB for {count} (goal ≤ {goal / 1e6:g} MB: {verdict})")
    if failed:
        print(f"   {len(failed)} streams were refused: {failed[0]}")
    await asyncio.sleep(2.0)  # the server cancels the turns after its disconnect grace


# -- 3. concurrent streams ------------------------------------------------------------------------------


async def concurrency(
    port: int,
    pid: int,
    max_streams: int,
    seconds: float,
    ramp: float,
    step: int = 250,
    floors: Sequence[tuple[str, int, int]] = (),
) -> int:
    """Print part 3: grow the load until p99 lateness reaches 50 ms; the most streams held.

    Then the same steps on each floor server (`floors`: what it is, its port and pid).
    """
    print(
        f"\n3. concurrent SSE streams, 20 tokens/s each for {seconds:g} s, started over {ramp:g} s "
        "(lateness = received − due, every token)"
    )
    held, results = await capacity(port, load_steps(max_streams, step), seconds, ramp, pid)
    verdict = "ok" if held >= STREAMS_GOAL else "BELOW GOAL"
    last = results[-1]
    stop = "" if not last.held else f" (stopped at --max-streams {max_streams})"
    print(
        f"   → one server process holds {held} concurrent streams at 20 tokens/s with p99 lateness < 50 ms{stop}"
        f" (goal ≥ {STREAMS_GOAL}: {verdict})"
    )
    for what, floor_port, floor_pid in floors:
        print(f"   {what} with the same model pacing, same client and steps")
        floor_held, floor_results = await capacity(floor_port, load_steps(max_streams, step), seconds, ramp, floor_pid)
        stop = "" if not floor_results[-1].held else f" (stopped at --max-streams {max_streams})"
        share = f": the extension holds {held / floor_held:.0%} of it" if floor_held else ""
        print(f"   → it holds {floor_held} concurrent streams{stop}{share}")
    return held


async def raw_sse_stream(port: int, tokens: int, lateness: list[float]) -> None:
    """One POST chat/stream of `tokens` tokens at 20/s over a bare socket; records receive − due time per token."""
    stream = await open_stream(port, f"{tokens} 0.05", lateness)
    await stream.closed


# -- the run ---------------------------------------------------------------------------------------------


def versions(*packages: str) -> str:
    """ "name version" of each package."""
    found = []
    for package in packages:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} ?")
    return ", ".join(found)


async def main_async(args: argparse.Namespace, cores: Cores) -> None:
    """Start the server, measure, stop the server."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    floor_port = free_port()
    jfloor_port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(port, Path(workdir), cores.server_preexec())
        floor = start_floor_server(floor_port, cores.server_preexec())
        jfloor = start_jupyter_floor(jfloor_port, Path(workdir) / "jupyter_floor", cores.server_preexec())
        try:
            await wait_ready(base)
            await wait_ready(f"http://127.0.0.1:{floor_port}/")
            await wait_ready(f"http://127.0.0.1:{jfloor_port}/", "api/status")
            print(f"jupyter server with streamchat at {base} (pid {server.pid})", flush=True)
            print(f"floor server at http://127.0.0.1:{floor_port}/ (pid {floor.pid})", flush=True)
            print(f"jupyter_server floor at http://127.0.0.1:{jfloor_port}/ (pid {jfloor.pid})", flush=True)
            if args.only in (None, "ttft"):
                await ttft_added(port, server.pid, args.ttft_turns, floor_port, (jfloor_port, jfloor.pid))
                await overheads(base, port, args.tokens, args.repeat)
            if args.only in (None, "memory"):
                await idle_memory(port, server.pid, args.idle)
            if args.only in (None, "streams"):
                floors = [
                    ("the floor: a bare asyncio server (bench/floor_server.py)", floor_port, floor.pid),
                    ("the jupyter_server floor: a bare handler (bench/jupyter_floor.py)", jfloor_port, jfloor.pid),
                ]
                await concurrency(port, server.pid, args.max_streams, args.seconds, args.ramp, args.step, floors)
        finally:
            for process in (server, floor, jfloor):
                process.terminate()
                process.wait(timeout=30)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ttft-turns", type=int, default=200, help="one-token turns each way for part 1")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens of part 1b's long turn")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each part 1b measurement; the best is reported")
    parser.add_argument("--idle", type=int, default=1000, help="idle streams of part 2")
    parser.add_argument("--max-streams", type=int, default=1500, help="largest load step of part 3")
    parser.add_argument("--step", type=int, default=250, help="part 3's load steps: 50, 100, then multiples of this")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each load step's streams")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds over which a load step's streams start")
    parser.add_argument("--only", choices=["ttft", "memory", "streams"], help="run one part only")
    args = parser.parse_args()
    cores = split_cores()
    cores.pin_client()
    gc.freeze()  # this process's imports: a full collection of the client need not walk them while it measures
    print(f"python {platform.python_version()}, {os.cpu_count()} cores; {cores.note}")
    print(versions("streamchat", "jupyter_server", "tornado"))
    print(
        f"settings: --ttft-turns {args.ttft_turns} --tokens {args.tokens} --repeat {args.repeat} --idle {args.idle} "
        f"--max-streams {args.max_streams} --seconds {args.seconds:g} --ramp {args.ramp:g}"
    )
    asyncio.run(main_async(args, cores))


if __name__ == "__main__":
    main()
