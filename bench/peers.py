"""streamchat beside its peers, on the same bytes from the same local server.

One server process on 127.0.0.1 (this script with `--serve`) answers every client with
the same recorded-style streams of `bench/provider_parse.py`: a 10,000-token Ollama
`/api/chat` NDJSON stream and a 10,000-token OpenAI `/v1/chat/completions` SSE stream,
each line (NDJSON) or event (SSE) in its own HTTP chunk, as a model server sends them.
Each client reads the whole stream; the runs are interleaved (one of each client per
round) so that other load on the machine falls on all of them alike, and the median of
the rounds is printed as tokens/s (wall time; and per CPU-second of this process, which
the load of other processes disturbs less: the server runs in its own) with the ratios:

- `OllamaProvider.stream` vs `ollama.AsyncClient.chat(stream=True)`,
- `OpenAIProvider.stream` vs `openai.AsyncOpenAI().chat.completions.create(stream=True)`,
- `ChatSession.stream` (OpenAI) token events vs pydantic-ai's `Agent.run_stream` text
  deltas (`stream_text(delta=True, debounce_by=None)`, its OpenAI model pointed at the
  same server),

and the peak Python memory (tracemalloc) of a 10k-token answer through `ChatSession`.
The server process and this one are each pinned to a core of their own where there are
two (`bench._cores.pin`); both the cores and the HTTP transport streamchat's providers
read on (aiohttp's by default; the peers read on httpx's own) are printed.

Serving: the extension's SSE (`jupyter server`, tornado) next to a FastAPI +
sse-starlette app (`bench/starlette_app.py`, uvicorn, one process, one worker) that
streams the same `ChatSession` on the same `StampingModel` (20 tokens/s per stream) with
the same SSE fields. Each server process runs alone, pinned to one core, the load client
(`bench/sse_load.py`, the load steps of `bench/server_streams.py`: 50, 100, 250, 500 …
--max-streams, the streams of a step started over --ramp seconds) pinned to the other;
for each, the most streams held with p99 lateness (receive − due time, every token)
< 50 ms, the ratio, and the server's CPU µs per token at the first step. Before those,
time to first token: --ttft-turns one-token turns on each server, interleaved, each
10 ms after the previous one ended, on one kept-alive connection per server, with the
same raw client, next to the floor (`bench/floor_server.py`: a bare asyncio server
answering with the one-token SSE response in one write; what any server process pays on this
machine); all three server processes pinned to the same core, idle but for the turn
measured. p50 and p99 of each, each minus the floor, the extension's over the peer's, and
each server process's CPU over the run per turn (psutil: the load of other processes
disturbs it less; the turns' teardowns included).
The peers come from the `bench` extra: `pip install -e ".[bench]"`.

Run: python bench/peers.py [--tokens 10000] [--rounds 5] [--only providers|serving] [--max-streams 1500] [--ttft-turns 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as `python bench/peers.py`: the repository root on the path, for `bench.*`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ollama
import openai
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider as PydanticAIOpenAIProvider

from bench._cores import pin
from bench.provider_parse import ollama_stream, openai_stream
from streamchat import ChatSession, OllamaProvider, OpenAIProvider, Settings
from streamchat.messages import Message
from streamchat.providers import ModelRequest, Provider, TextDelta
from streamchat.providers._transport import choose_transport

if TYPE_CHECKING:
    from bench.sse_load import StepResult

GOALS = {"ollama": 1.5, "openai": 4.0, "session": 5.0}
"""The ratio each comparison must reach (issue 12)."""
CLIENT_CORE, SERVER_CORE = 0, 1
"""The cores (`bench._cores.pin`) of this process, which runs every client, and of the server process."""


# -- the server process -------------------------------------------------------------------------


def chunked(pieces: Iterator[bytes]) -> bytes:
    """`pieces` as an HTTP/1.1 chunked body: one chunk each, then the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def responses(tokens: int) -> dict[str, bytes]:
    """The whole HTTP response (head and chunked body) for each path, made once."""
    ndjson = ollama_stream(tokens)
    sse = openai_stream(tokens)
    ollama_body = chunked(line + b"\n" for line in ndjson.splitlines())
    sse_body = chunked(event + b"\n\n" for event in sse.split(b"\n\n") if event)

    def head(content_type: str) -> bytes:
        return (
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode()

    return {
        "/api/chat": head("application/x-ndjson") + ollama_body,
        "/v1/chat/completions": head("text/event-stream; charset=utf-8") + sse_body,
    }


async def serve(tokens: int, core: str) -> None:
    """Answer POSTs to `/api/chat` and `/v1/chat/completions` until stdin closes; print the port and the core first."""
    answers = responses(tokens)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1].decode()
                length = next((int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                answer = answers.get(path)
                if answer is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                else:
                    writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()  # the client closed its connection, or the server stops

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], core, sep="\t", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # the parent closes stdin (or exits) to stop the server
    server.close()


@contextlib.contextmanager
def server_process(tokens: int) -> Iterator[str]:
    """The server in its own process, on a core of its own (`SERVER_CORE`, printed); its base URL."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--tokens", str(tokens)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port, core = process.stdout.readline().rstrip("\n").split("\t")
        print(f"server process (pid {process.pid}): {core}")
        yield f"http://127.0.0.1:{port}"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the clients: each reads one whole stream and returns the tokens it got ------------------------

Client = Callable[[], Awaitable[int]]
REQUEST = ModelRequest(messages=(Message(role="user", content="go"),))


def provider_client(provider: Provider) -> Client:
    async def run() -> int:
        count = 0
        async for delta in provider.stream(REQUEST):
            if isinstance(delta, TextDelta):
                count += 1
        return count

    return run


def session_client(provider: Provider) -> Client:
    async def run() -> int:
        session = ChatSession(provider, tools=[])
        count = 0
        async for event in session.stream("go"):
            if event.type == "token":
                count += 1
        return count

    return run


def ollama_client(client: ollama.AsyncClient) -> Client:
    async def run() -> int:
        count = 0
        async for part in await client.chat("llama3.2", messages=[{"role": "user", "content": "go"}], stream=True):
            if part.message.content:
                count += 1
        return count

    return run


def openai_client(client: openai.AsyncOpenAI) -> Client:
    async def run() -> int:
        count = 0
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "go"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                count += 1
        return count

    return run


def pydantic_ai_client(agent: Agent[None, str]) -> Client:
    async def run() -> int:
        count = 0
        async with agent.run_stream("go") as result:
            async for text in result.stream_text(delta=True, debounce_by=None):
                if text:
                    count += 1
        return count

    return run


async def measure(url: str, tokens: int, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Tokens per second of every client in each round (after one warm-up round): of wall time, and of CPU time."""
    settings = Settings(backend_retries=0)
    ollama_provider = OllamaProvider("llama3.2", base_url=url, settings=settings)
    openai_provider = OpenAIProvider("m", base_url=f"{url}/v1", api_key="none", settings=settings)
    official_ollama = ollama.AsyncClient(host=url)
    official_openai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    agent: Agent[None, str] = Agent(
        OpenAIChatModel("m", provider=PydanticAIOpenAIProvider(base_url=f"{url}/v1", api_key="none"))
    )
    clients: dict[str, Client] = {
        "OllamaProvider.stream": provider_client(ollama_provider),
        "ollama.AsyncClient.chat": ollama_client(official_ollama),
        "OpenAIProvider.stream": provider_client(openai_provider),
        "openai.AsyncOpenAI": openai_client(official_openai),
        "ChatSession.stream (openai)": session_client(openai_provider),
        "pydantic-ai Agent.run_stream": pydantic_ai_client(agent),
        "ChatSession.stream (ollama)": session_client(ollama_provider),
    }
    rates: dict[str, list[float]] = {name: [] for name in clients}
    cpu_rates: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for round_ in range(rounds + 1):
            for name, run in clients.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                count = await run()
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                if count != tokens:
                    raise SystemExit(f"{name} read {count} tokens, not {tokens}")
                if round_:  # the first round warms connections and caches
                    rates[name].append(count / elapsed)
                    cpu_rates[name].append(count / cpu)
    finally:
        await ollama_provider.aclose()
        await openai_provider.aclose()
        await official_openai.close()
    return rates, cpu_rates


async def peak_memory(provider: Provider) -> int:
    """Peak traced bytes while `ChatSession.stream` reads one whole answer from `provider`."""
    session = ChatSession(provider, tools=[])
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        async for _ in session.stream("go"):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await provider.aclose()


# -- serving: the extension's SSE vs FastAPI + sse-starlette ---------------------------------------
# (bench/server_streams.py and bench/sse_load.py are imported where used: the providers-only run does not load them)


@contextlib.contextmanager
def serving_process(kind: str, port: int, workdir: Path, http: str) -> Iterator[subprocess.Popen[bytes]]:
    """The extension's `jupyter server` ("streamchat"), the FastAPI app under uvicorn ("fastapi") or the floor, pinned.

    The floor ("floor"): `bench/floor_server.py`, a bare asyncio server pacing the stamping model's tokens (a one-token turn: one write).
    """
    from bench.server_streams import server_env, start_floor_server, start_server
    from bench.sse_load import split_cores

    preexec = split_cores().server_preexec()
    if kind == "streamchat":
        process = start_server(port, workdir, preexec)
    elif kind == "floor":
        process = start_floor_server(port, preexec)
    else:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.starlette_app", "--port", str(port), "--http", http],
            env=server_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=preexec,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def serving_capacity(kind: str, args: argparse.Namespace) -> tuple[int, list[StepResult]]:
    """Print one server's load steps; (most streams held, the steps' `StepResult`s)."""
    import httpx

    from bench.server_streams import wait_ready
    from bench.sse_load import TOKEN, capacity, first_token_seconds, free_port, load_steps

    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as workdir, serving_process(kind, port, Path(workdir), args.http) as process:
        await wait_ready(base)
        async with httpx.AsyncClient(headers={"Authorization": f"token {TOKEN}"}) as client:
            health = (await client.get(f"{base}api/streamchat/health")).json()
        runs_on = f"uvicorn, http {health['http']}, loop {health['loop']}" if kind == "fastapi" else "tornado"
        print(f"\n  {kind} ({runs_on}, pid {process.pid}):", flush=True)
        for _ in range(10):  # both servers warmed up alike
            await first_token_seconds(port)
        return await capacity(port, load_steps(args.max_streams, args.step), args.seconds, args.ramp, process.pid)


SERVERS = {
    "streamchat": "streamchat (jupyter server, tornado)",
    "fastapi": "fastapi + sse-starlette (uvicorn)",
    "floor": "floor: a bare asyncio server (the one-token response in one write)",
}
"""The servers of the time to first token comparison, as printed."""


async def serving_ttft(args: argparse.Namespace) -> None:
    """Print the time to first token of one-token turns on each server and the floor, interleaved."""
    from bench.server_streams import IDLE_BEFORE_TURN, wait_ready
    from bench.sse_load import (
        SseStream,
        cpu_seconds,
        first_token_seconds,
        free_port,
        interleaved,
        open_stream,
        percentile,
    )

    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        ports = {kind: free_port() for kind in SERVERS}
        pids = {
            kind: stack.enter_context(serving_process(kind, port, Path(workdir), args.http)).pid
            for kind, port in ports.items()
        }
        for port in ports.values():
            await wait_ready(f"http://127.0.0.1:{port}/")
        connections: dict[str, SseStream] = {}
        for kind, port in ports.items():  # one kept-alive connection per server, as a page's client holds
            connections[kind] = await open_stream(port, "1 0", keep_alive=True)
            await connections[kind].ended
        for _ in range(10):  # every server warmed up alike
            for kind, port in ports.items():
                await first_token_seconds(port, connection=connections[kind])

        def turn(kind: str) -> Callable[[], Awaitable[float]]:
            return lambda: first_token_seconds(ports[kind], connection=connections[kind])

        # each server process's CPU over the whole run: its turns' teardowns included (and its idle timers)
        cpu = {kind: cpu_seconds(pid) for kind, pid in pids.items()}
        values = await interleaved({kind: turn(kind) for kind in SERVERS}, args.ttft_turns, IDLE_BEFORE_TURN)
        cpu = {kind: cpu_seconds(pid) - cpu[kind] for kind, pid in pids.items()}
        for connection in connections.values():
            connection.close()
    p50 = {kind: percentile(column, 0.5) for kind, column in values.items()}
    p99 = {kind: percentile(column, 0.99) for kind, column in values.items()}
    print(
        f"\n  time to first token: {args.ttft_turns} one-token turns on each server, interleaved, "
        f"{IDLE_BEFORE_TURN * 1e3:g} ms apart, one kept-alive connection each, the three server processes on one core"
    )
    width = max(map(len, SERVERS.values()))
    print(
        f"    {'server':<{width}} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/turn':>12} {'p50 − floor':>12} {'p99 − floor':>12}"
    )
    for kind, name in SERVERS.items():
        above = (p50[kind] - p50["floor"]) * 1e3, (p99[kind] - p99["floor"]) * 1e3
        floor = f"{above[0]:12.3f} {above[1]:12.3f}" if kind != "floor" else ""
        print(
            f"    {name:<{width}} {p50[kind] * 1e3:8.3f} {p99[kind] * 1e3:8.3f} "
            f"{cpu[kind] / args.ttft_turns * 1e3:12.2f} {floor}".rstrip()
        )
    print(
        f"    streamchat / fastapi + sse-starlette: p50 {p50['streamchat'] / p50['fastapi']:.2f}x, "
        f"p99 {p99['streamchat'] / p99['fastapi']:.2f}x (below 1: streamchat answers first)"
    )


def serving(args: argparse.Namespace) -> None:
    """Print the serving comparison: streams held at 20 tokens/s with p99 lateness < 50 ms, each server alone."""
    from bench.sse_load import BUDGET, RATE, load_steps, split_cores

    cores = split_cores()
    affinity = os.sched_getaffinity(0)
    cores.pin_client()
    gc.freeze()  # this process's objects so far: a full collection of the client need not walk them
    try:
        print(f"\nserving: python {platform.python_version()}, streamchat {version('streamchat')}; {cores.note}")
        print(
            f"  fastapi {version('fastapi')}, sse-starlette {version('sse-starlette')}, uvicorn {version('uvicorn')}, "
            f"starlette {version('starlette')}; tornado {version('tornado')}, jupyter_server {version('jupyter_server')}"
        )
        print(
            f"  the same ChatSession, StampingModel at {RATE} tokens/s per stream for {args.seconds:g} s, streams started "
            f"over {args.ramp:g} s; steps {', '.join(map(str, load_steps(args.max_streams, args.step)))}; "
            f"held while p99 lateness < {BUDGET * 1e3:g} ms"
        )
        if args.ttft_turns:
            asyncio.run(serving_ttft(args))
        held: dict[str, int] = {}
        results: dict[str, list[StepResult]] = {}
        for kind in ("streamchat", "fastapi"):
            held[kind], results[kind] = asyncio.run(serving_capacity(kind, args))
        print()
        ours, theirs = held["streamchat"], held["fastapi"]
        ratio = f"{ours / theirs:.2f}x" if theirs else "n/a (fastapi held no step)"
        verdict = "ok" if ours > theirs else "BELOW GOAL"
        print(f"  streams held: streamchat {ours}, fastapi + sse-starlette {theirs}: {ratio} (goal: ahead: {verdict})")
        first = [runs[0] for runs in results.values()]
        cost = [result.server_us_per_token for result in first]
        print(
            f"  server CPU per token at {first[0].streams} streams: streamchat {cost[0]:.1f} µs, "
            f"fastapi + sse-starlette {cost[1]:.1f} µs (fastapi / streamchat {cost[1] / cost[0]:.2f}x; above 1: streamchat "
            "is the cheaper)"
        )
    finally:
        os.sched_setaffinity(0, affinity)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds; the median is printed")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["providers", "serving"], help="run one part only (default: both)")
    serving_options = parser.add_argument_group("serving")
    serving_options.add_argument("--max-streams", type=int, default=1500, help="largest load step")
    serving_options.add_argument("--step", type=int, default=250, help="load steps: 50, 100, then multiples of this")
    serving_options.add_argument("--seconds", type=float, default=4.0, help="length of each load step's streams")
    serving_options.add_argument("--ramp", type=float, default=1.0, help="seconds over which a step's streams start")
    serving_options.add_argument(
        "--ttft-turns", type=int, default=100, help="one-token turns on each server for time to first token (0: none)"
    )
    serving_options.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto", help="uvicorn's")
    args = parser.parse_args()
    if args.serve:
        core = pin(SERVER_CORE)  # first, so that the threads it starts are pinned too
        asyncio.run(serve(args.tokens, core))
        return
    if args.only == "serving":
        serving(args)
        return

    print(
        f"python {platform.python_version()}; streamchat {version('streamchat')}, httpx {version('httpx')}, "
        f"ollama {version('ollama')}, openai {version('openai')}, pydantic-ai {version('pydantic-ai-slim')}"
    )
    print(
        f"{args.tokens:,} tokens per stream, each line or event in its own HTTP chunk; median of {args.rounds} rounds"
    )
    transport = choose_transport(Settings().backend_http_transport)
    library = (
        f"httpx-aiohttp {version('httpx-aiohttp')}, aiohttp {version('aiohttp')}" if transport == "aiohttp" else "h11"
    )
    print(f"streamchat's providers read on the {transport} transport ({library}); the peers on httpx's own (h11)")
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with server_process(args.tokens) as url:
        print(f"this process (every client): {pin(CLIENT_CORE)}")  # after the server started, which would inherit it
        rates, cpu_rates = asyncio.run(measure(url, args.tokens, args.rounds))
        settings = Settings(backend_retries=0)
        memory = {
            "openai": asyncio.run(peak_memory(OpenAIProvider("m", base_url=f"{url}/v1", settings=settings))),
            "ollama": asyncio.run(peak_memory(OllamaProvider("llama3.2", base_url=url, settings=settings))),
        }
    median = {name: statistics.median(values) for name, values in rates.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu_rates.items()}
    print()
    print(f"  {'client':<30} {'tokens/s':>10}   {'(runs)':<17}   {'tokens per CPU-second':>21}")
    for name, value in median.items():
        low, high = min(rates[name]), max(rates[name])
        print(f"  {name:<30} {value:>10,.0f}   ({low:,.0f}–{high:,.0f})   {cpu_median[name]:>13,.0f}")
    print()
    comparisons = [
        ("ollama", "OllamaProvider.stream", "ollama.AsyncClient.chat"),
        ("openai", "OpenAIProvider.stream", "openai.AsyncOpenAI"),
        ("session", "ChatSession.stream (openai)", "pydantic-ai Agent.run_stream"),
    ]
    for goal, ours, theirs in comparisons:
        ratio = median[ours] / median[theirs]
        verdict = "ok" if ratio >= GOALS[goal] else "BELOW GOAL"
        cpu_ratio = cpu_median[ours] / cpu_median[theirs]
        print(
            f"  {ours} / {theirs}: {ratio:5.2f}x   (goal ≥ {GOALS[goal]:g}x: {verdict}; per CPU-second {cpu_ratio:.2f}x)"
        )
    print()
    for name, peak in memory.items():
        verdict = "ok" if peak <= 5e6 else "ABOVE 5 MB"
        print(
            f"  peak memory, {args.tokens:,}-token answer through ChatSession ({name}): {peak / 1e6:.2f} MB ({verdict})"
        )
    if args.only != "providers":
        if allowed is not None:
            os.sched_setaffinity(0, allowed)  # the serving part splits every core this process was given
        serving(args)


if __name__ == "__main__":
    main()
