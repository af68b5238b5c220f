"""What the Redis session store costs and what it buys: one server with `MemoryStore` next to two sharing Redis.

Starts a `redis-server` on a free port (nothing persisted), one `jupyter server` with the
in-memory store and two with ``store_url`` pointing at that Redis (all on 127.0.0.1, the
stamping model of `bench/sse_load.py`: each token carries the time it was due),
then prints, in one run:

1. events/s and per-event cost of one turn through the server with each store (POST
   chat/stream, a model with no delay), next to `ChatSession.stream` in this process; the
   added cost of Redis is the RedisStore row minus the MemoryStore row;
2. the time for a follower to see an event (received − due, p50/p99) on the process
   running the turn and on the other process (which reads the turn from Redis);
3. how many concurrent SSE streams at 20 tokens/s each the servers hold with p99 added
   latency < 50 ms: one process with `MemoryStore`, and two processes sharing Redis (half
   the streams started on each). The method is `bench/server_streams.py`'s: the load grows
   (5, 10, 25, 50, 100 … up to --max-streams) and stops at the first step over the budget.

    python bench/store.py [--tokens 2000] [--repeat 3] [--follow-tokens 400] [--max-streams 800] [--seconds 4]

Needs Debian's `redis-server` on PATH. Every process shares this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from httpx_sse import aconnect_sse

# bench/ is the script's directory, so on sys.path: the stamping model, as the server processes import it
from server_streams import TOKEN, direct, free_port, raw_sse_stream

AUTH = {"Authorization": f"token {TOKEN}"}
UNLIMITED = 1_000_000
LOAD_STEPS = [5, 10, 25, 50, 100, 200, 400, 800, 1600]
"""Concurrent streams of each load step (`bench/server_streams.py`'s 25, 50 … with smaller first steps for a busy machine)."""


# -- the processes ---------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A `redis-server` on a free port with nothing persisted; yields its URL."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=30)


class Server:
    """One `jupyter server` with streamchat and the stamping model; `store_url` empty = `MemoryStore`."""

    def __init__(self, workdir: Path, name: str, store_url: str, prefix: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        root = workdir / name
        root.mkdir()
        streamchat: dict[str, Any] = {
            "provider_factory": "server_streams:make_provider",
            "tools": [],
            "max_sessions": UNLIMITED,
            "max_sessions_per_user": UNLIMITED,
            "max_running_turns": UNLIMITED,
            "max_running_turns_per_user": UNLIMITED,
            "heartbeat_interval": 15.0,
            "disconnect_grace": 2.0,
        }
        if store_url:
            streamchat.update(store_url=store_url, store_prefix=prefix)
        config = {
            "ServerApp": {
                "jpserver_extensions": {"streamchat": True},
                "ip": "127.0.0.1",
                "port": self.port,
                "port_retries": 0,
                "open_browser": False,
                "allow_root": True,
            },
            "IdentityProvider": {"token": TOKEN},
            "StreamChat": streamchat,
        }
        path = root / "jupyter_server_config.json"
        path.write_text(json.dumps(config))
        env = {key: value for key, value in os.environ.items() if not key.startswith("STREAMCHAT_")}
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
        self.log_path = root / "server.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", f"--config={path}", f"--ServerApp.root_dir={root}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self) -> None:
        """Wait until the extension answers its health route (raise with the log if it does not)."""
        async with httpx.AsyncClient(headers=AUTH) as client:
            for _ in range(1200):
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.base}api/streamchat/health")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the server on port {self.port} did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


# -- 1. one turn through each store ------------------------------------------------------------------


async def turn_through(client: httpx.AsyncClient, server: Server, tokens: int) -> float:
    """Seconds for one whole turn through POST chat/stream (a model with no delay)."""
    start = time.perf_counter()
    async with aconnect_sse(
        client, "POST", f"{server.base}api/streamchat/chat/stream", json={"message": f"{tokens} 0"}
    ) as source:
        async for sse in source.aiter_sse():
            if sse.event == "done":
                break
    return time.perf_counter() - start


async def turn_costs(memory: Server, redis: Server, tokens: int, repeat: int) -> None:
    """Print part 1."""
    events = tokens + 2  # thinking, tokens, done
    rows: list[tuple[str, float]] = [("ChatSession.stream", min([(await direct(tokens))[1] for _ in range(repeat)]))]
    async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
        for name, server in (("server, MemoryStore", memory), ("server, RedisStore", redis)):
            await turn_through(client, server, 10)  # warm up the connection and the store
            rows.append((name, min([await turn_through(client, server, tokens) for _ in range(repeat)])))
    print(f"\n1. one turn of {tokens} tokens ({events} events) through POST chat/stream (best of {repeat})")
    print(f"   {'path':<22} {'total ms':>9} {'events/s':>10} {'µs/event':>9} {'added µs/event':>15}")
    for name, total in rows:
        added = (total - rows[0][1]) / events * 1e6
        print(f"   {name:<22} {total * 1e3:9.1f} {events / total:10.0f} {total / events * 1e6:9.1f} {added:15.1f}")
    redis_added = (rows[2][1] - rows[1][1]) / events * 1e6
    print(f"   → RedisStore adds {redis_added:.1f} µs per event over MemoryStore")


async def check_uses_redis(url: str, prefix: str) -> None:
    """Fail unless the RedisStore servers wrote keys under `prefix` (else part 1 measured the memory store twice)."""
    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    finally:
        await client.aclose()
    if not keys:
        raise RuntimeError(
            f"the servers given store_url wrote no key under {prefix!r} in Redis: is store_url supported?"
        )
    print(f"   ({len(keys)} keys under {prefix!r} in Redis)")


# -- 2. a follower on the other process ------------------------------------------------------------


async def follow(client: httpx.AsyncClient, url: str, headers: dict[str, str], lateness: list[float]) -> None:
    """Read a session's SSE stream to its end; record received − due per token."""
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        if source.response.status_code != 200:
            body = (await source.response.aread()).decode(errors="replace")
            raise RuntimeError(f"following {url}: {source.response.status_code} {body}")
        async for sse in source.aiter_sse():
            if sse.event == "token":
                lateness.append(time.time() - float(json.loads(sse.data)["content"].split("|", 1)[0]))
            elif sse.event == "done":
                return


async def follower_latency(a: Server, b: Server, tokens: int) -> None:
    """Print part 2: a turn on A at 50 tokens/s followed on A and on B."""
    on_a: list[float] = []
    on_b: list[float] = []
    async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
        for _ in range(3):
            session_id = f"bench-{uuid.uuid4().hex[:12]}"
            url = f"api/streamchat/sessions/{session_id}/stream"
            started = asyncio.Event()

            async def run_on_a(session_url: str = url, ready: asyncio.Event = started) -> None:
                async with aconnect_sse(
                    client, "GET", f"{a.base}{session_url}", params={"message": f"{tokens} 0.02"}
                ) as source:
                    async for sse in source.aiter_sse():
                        ready.set()
                        if sse.event == "token":
                            on_a.append(time.time() - float(json.loads(sse.data)["content"].split("|", 1)[0]))
                        elif sse.event == "done":
                            return

            owner = asyncio.create_task(run_on_a())
            await started.wait()
            await follow(client, f"{b.base}{url}", {"Last-Event-ID": "0"}, on_b)
            await owner
    print(f"\n2. time for a follower to see an event (received − due; 3 turns of {tokens} tokens at 50/s)")
    print(f"   {'follower on':<36} {'events':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name, lateness in (("the turn's process (A)", on_a), ("another process (B, through Redis)", on_b)):
        lateness.sort()
        p99 = lateness[max(0, int(len(lateness) * 0.99) - 1)]
        print(f"   {name:<36} {len(lateness):7d} {statistics.median(lateness) * 1e3:8.2f} {p99 * 1e3:8.2f}")


# -- 3. concurrent streams at 20 tokens/s --------------------------------------------------------------


async def load_step(servers: list[Server], streams: int, seconds: float) -> tuple[float, float, int]:
    """Run `streams` concurrent streams spread over `servers`; (p50, p99, tokens received)."""
    lateness: list[float] = []
    tokens = int(seconds * 20)
    await asyncio.gather(*(raw_sse_stream(servers[i % len(servers)].port, tokens, lateness) for i in range(streams)))
    lateness.sort()
    return statistics.median(lateness), lateness[int(len(lateness) * 0.99) - 1], len(lateness)


async def capacity(name: str, servers: list[Server], max_streams: int, seconds: float) -> int:
    """Grow the load until p99 added latency reaches 50 ms; the largest step under it."""
    held = 0
    for streams in [step for step in LOAD_STEPS if step <= max_streams]:
        p50, p99, count = await load_step(servers, streams, seconds)
        print(f"   {name:<30} {streams:8d} {count:8d} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f}")
        if p99 >= 0.050:
            break
        held = streams
    return held


async def concurrency(memory: Server, a: Server, b: Server, max_streams: int, seconds: float) -> None:
    """Print part 3."""
    print(f"\n3. concurrent SSE streams, 20 tokens/s each for {seconds:g} s (latency = received − due)")
    print(f"   {'servers':<30} {'streams':>8} {'tokens':>8} {'p50 ms':>8} {'p99 ms':>8}")
    one = await capacity("1 process, MemoryStore", [memory], max_streams, seconds)
    two = await capacity("2 processes, RedisStore", [a, b], max_streams, seconds)
    print(f"   → with p99 added latency < 50 ms: 1 process with MemoryStore holds {one} streams,")
    print(f"     2 processes sharing Redis hold {two} streams (load steps up to --max-streams {max_streams})")


async def main_async(args: argparse.Namespace) -> None:
    """Start Redis and the servers, measure, stop them."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with redis_server() as url, tempfile.TemporaryDirectory() as workdir:
        servers = [
            Server(Path(workdir), "memory", "", prefix),
            Server(Path(workdir), "redis-a", url, prefix),
            Server(Path(workdir), "redis-b", url, prefix),
        ]
        memory, a, b = servers
        try:
            for server in servers:
                await server.wait_ready()
            print(f"redis-server at {url}; jupyter servers: MemoryStore {memory.base}, RedisStore {a.base} {b.base}")
            await turn_costs(memory, a, args.tokens, args.repeat)
            await check_uses_redis(url, prefix)
            await follower_latency(a, b, args.follow_tokens)
            await concurrency(memory, a, b, args.max_streams, args.seconds)
        finally:
            for server in servers:
                server.stop()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2000, help="tokens in the turn of part 1")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each part-1 measurement; the best is reported")
    parser.add_argument("--follow-tokens", type=int, default=400, help="tokens of each followed turn in part 2")
    parser.add_argument("--max-streams", type=int, default=800, help="largest load step of part 3")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each load step's streams")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
