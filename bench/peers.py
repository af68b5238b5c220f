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
read on (aiohttp's, with the `aiohttp` extra; the peers read on httpx's own) are printed.
The peers come from the `bench` extra: `pip install -e ".[bench]"`.

Run: python bench/peers.py [--tokens 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator

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
    args = parser.parse_args()
    if args.serve:
        core = pin(SERVER_CORE)  # first, so that the threads it starts are pinned too
        asyncio.run(serve(args.tokens, core))
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


if __name__ == "__main__":
    main()
