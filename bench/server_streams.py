"""Cost of serving the chat through the Jupyter Server extension (loopback only).

Starts `jupyter server` with streamchat in a subprocess on 127.0.0.1 (a scripted model
that stamps each token with the time it produced it), then prints:

1. time to first token and per-event overhead through SSE and WebSocket, next to calling
   `ChatSession.stream` directly in this process;
2. how many concurrent SSE streams at 20 tokens/s each the server process holds while
   the added latency (client receive time − model produce time) stays under 50 ms at p99.
   The load grows step by step (25, 50, 100 … up to --max-streams) and stops at the first
   step over the budget.

    python bench/server_streams.py [--tokens 2000] [--max-streams 800] [--seconds 4]

The client side uses raw asyncio sockets for the load test so that it, not the server,
is the lighter of the two processes; both share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from streamchat import ChatSession, Settings
from streamchat.providers.base import FinishDelta, ModelRequest, Provider, ProviderDelta, TextDelta

TOKEN = "bench-token"


# -- the model the server runs (imported by the server process as server_streams:make_provider) --


class StampingModel(Provider):
    """Answers every request with tokens "<produced at>|<i> ", as many and as fast as the user message asks.

    The message is "N DELAY". One instance serves every session of the server.
    """

    name = "stamping"

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        count, delay = request.messages[-1].content.split()
        for i in range(int(count)):
            if float(delay):
                await asyncio.sleep(float(delay))
            yield TextDelta(text=f"{time.time():.6f}|{i} ")
        yield FinishDelta(reason="stop")


def make_provider(settings: Settings) -> StampingModel:
    """`StreamChat.provider_factory` of the benchmark server."""
    return StampingModel("stamping")


# -- the server --------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """`jupyter server` with streamchat and the stamping model, in a subprocess."""
    config = {
        "ServerApp": {
            "jpserver_extensions": {"streamchat": True},
            "ip": "127.0.0.1",
            "port": port,
            "open_browser": False,
            "allow_root": True,
        },
        "IdentityProvider": {"token": TOKEN},
        "StreamChat": {
            "provider_factory": "server_streams:make_provider",
            "tools": [],
            "max_sessions": 1_000_000,
            "max_sessions_per_user": 1_000_000,
            "max_running_turns": 1_000_000,
            "max_running_turns_per_user": 1_000_000,
            "heartbeat_interval": 15.0,
        },
    }
    path = workdir / "jupyter_server_config.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", f"--config={path}", f"--ServerApp.root_dir={workdir}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_ready(base: str) -> None:
    """Wait until the extension answers its health route."""
    async with httpx.AsyncClient(headers={"Authorization": f"token {TOKEN}"}) as client:
        for _ in range(300):
            try:
                if (await client.get(f"{base}api/streamchat/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start within 30 s")


# -- 1. time to first token and per-event cost -----------------------------------------------------


async def direct(tokens: int) -> tuple[float, float]:
    """(time to first token, total) calling ChatSession.stream in this process."""
    session = ChatSession(make_provider(Settings()), tools=[])
    start = time.perf_counter()
    first = 0.0
    async for event in session.stream(f"{tokens} 0"):
        if event.type == "token" and not first:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


async def through_sse(client: httpx.AsyncClient, base: str, tokens: int) -> tuple[float, float]:
    """(time to first token, total) through POST chat/stream."""
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


async def overheads(base: str, port: int, tokens: int, repeat: int) -> None:
    """Print part 1: time to first token and per-event cost of each path."""
    events = tokens + 2  # thinking, tokens, done
    rows = []
    async with httpx.AsyncClient(headers={"Authorization": f"token {TOKEN}"}, timeout=60) as client:
        for name, run in (
            ("ChatSession.stream", lambda n: direct(n)),
            ("SSE (POST chat/stream)", lambda n: through_sse(client, base, n)),
            ("WebSocket", lambda n: through_ws(port, n)),
        ):
            ttft = min([(await run(1))[0] for _ in range(repeat * 5)])
            total = min([(await run(tokens))[1] for _ in range(repeat)])
            rows.append((name, ttft, total))
    base_total = rows[0][2]
    print(
        f"\n1. one turn of {tokens} tokens (best of {repeat}; time to first token best of {repeat * 5} one-token turns)"
    )
    print(f"   {'path':<24} {'ttft ms':>9} {'total ms':>9} {'µs/event':>9} {'added µs/event':>15}")
    for name, ttft, total in rows:
        added = (total - base_total) / events * 1e6
        print(f"   {name:<24} {ttft * 1e3:9.2f} {total * 1e3:9.1f} {total / events * 1e6:9.1f} {added:15.1f}")


# -- 2. concurrent SSE streams at 20 tokens/s ----------------------------------------------------------


async def raw_sse_stream(port: int, tokens: int, lateness: list[float]) -> None:
    """One POST chat/stream over a bare socket; records receive time − produce time per token."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"message": f"{tokens} 0.05"}).encode()
    writer.write(
        b"POST /api/streamchat/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: token {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    pending = b""
    done = False
    while not done:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            break
        pending += (await reader.readexactly(size + 2))[:-2]  # each chunk ends with CRLF
        *frames, pending = pending.split(b"\n\n")
        now = time.time()
        for frame in frames:
            if b"event: token" in frame:
                content = json.loads(frame.split(b"data: ", 1)[1])["content"]
                lateness.append(now - float(content.split("|", 1)[0]))
            elif b"event: done" in frame:
                done = True
    writer.close()


async def load_step(port: int, streams: int, seconds: float) -> tuple[float, float, int]:
    """Run `streams` concurrent streams; (p50, p99, tokens received)."""
    lateness: list[float] = []
    tokens = int(seconds * 20)
    await asyncio.gather(*(raw_sse_stream(port, tokens, lateness) for _ in range(streams)))
    lateness.sort()
    p99 = lateness[int(len(lateness) * 0.99) - 1]
    return statistics.median(lateness), p99, len(lateness)


async def concurrency(port: int, max_streams: int, seconds: float) -> None:
    """Print part 2: grow the load until p99 added latency reaches 50 ms."""
    print(f"\n2. concurrent SSE streams, 20 tokens/s each for {seconds:g} s (latency = received − produced)")
    print(f"   {'streams':>8} {'tokens':>8} {'p50 ms':>8} {'p99 ms':>8}")
    held = 0
    streams = 25
    while streams <= max_streams:
        p50, p99, count = await load_step(port, streams, seconds)
        print(f"   {streams:8d} {count:8d} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f}")
        if p99 >= 0.050:
            break
        held = streams
        streams *= 2
    print(
        f"   → one server process holds {held} concurrent streams at 20 tokens/s with p99 added latency < 50 ms"
        + ("" if streams <= max_streams else f" (stopped at --max-streams {max_streams})")
    )


async def main_async(args: argparse.Namespace) -> None:
    """Start the server, measure, stop the server."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(port, Path(workdir))
        try:
            await wait_ready(base)
            print(f"jupyter server with streamchat at {base} (pid {server.pid})")
            await overheads(base, port, args.tokens, args.repeat)
            await concurrency(port, args.max_streams, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2000, help="tokens in the overhead turn")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best is reported")
    parser.add_argument("--max-streams", type=int, default=800, help="largest load step")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each load step's streams")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
