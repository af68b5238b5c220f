"""How fast the providers turn a backend's stream into deltas and events.

A recorded-style 10,000-token Ollama `/api/chat` NDJSON stream and a 10,000-token
OpenAI SSE stream are parsed (1) by bare `json.loads` of each line, the floor, (2) by
the provider's parser from memory, (3) by the provider reading a real HTTP response
from a server on 127.0.0.1, and (4) through `ChatSession.stream`, as events.

Run: python bench/provider_parse.py [--tokens 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable

from streamchat import ChatSession, OllamaProvider, OpenAIProvider, Settings
from streamchat.messages import Message
from streamchat.providers import ModelRequest, Provider
from streamchat.providers.ollama import OllamaStreamParser
from streamchat.providers.openai import OpenAIStreamParser

WORDS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", " —", " 世界", " é", " 🌍", "."]


def ollama_stream(tokens: int) -> bytes:
    """`tokens` content lines and the final `done` line, as Ollama sends them."""
    lines = [
        json.dumps(
            {
                "model": "llama3.2",
                "created_at": "2024-07-22T20:33:28.123648Z",
                "message": {"role": "assistant", "content": WORDS[i % len(WORDS)]},
                "done": False,
            },
            ensure_ascii=False,
        )
        for i in range(tokens)
    ]
    lines.append(
        json.dumps(
            {"model": "llama3.2", "created_at": "2024-07-22T20:33:28.123648Z", "message": {"role": "assistant", "content": ""}, "done": True,
             "done_reason": "stop", "total_duration": 4883583458, "prompt_eval_count": 26, "eval_count": tokens, "eval_duration": 4535599000}
        )
    )  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def openai_stream(tokens: int) -> bytes:
    """`tokens` content chunks, a finish chunk, a usage chunk and `[DONE]`, as SSE."""

    def chunk(delta: dict[str, object], finish: str | None = None) -> str:
        return json.dumps(
            {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]},
            ensure_ascii=False,
        )  # fmt: skip

    events = [chunk({"content": WORDS[i % len(WORDS)]}) for i in range(tokens)]
    events.append(chunk({}, "stop"))
    events.append(
        json.dumps({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 26, "completion_tokens": tokens}})
    )
    events.append("[DONE]")
    return "".join(f"data: {e}\n\n" for e in events).encode()


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    """The fastest of `repeat` runs: (seconds, items)."""
    best, items = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        items = run()
        best = min(best, time.perf_counter() - start)
    return best, items


async def serve(body: bytes, content_type: str) -> tuple[asyncio.Server, str]:
    """A 127.0.0.1 server answering every request with `body`, chunked in 16 KiB pieces."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(
                    f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                )
                for i in range(0, len(body), 16384):
                    piece = body[i : i + 16384]
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()  # the client went away, or the benchmark is over

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def over_http(
    make: Callable[[str], Provider], body: bytes, content_type: str, repeat: int
) -> tuple[tuple[float, int], tuple[float, int]]:
    """(provider deltas, session events) timings reading `body` from a local server."""
    server, url = await serve(body, content_type)
    provider = make(url)
    request = ModelRequest(messages=(Message(role="user", content="go"),))
    deltas, events = (float("inf"), 0), (float("inf"), 0)
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            count = 0
            async for _delta in provider.stream(request):
                count += 1
            deltas = min(deltas, (time.perf_counter() - start, count))
            session = ChatSession(provider, tools=[])
            start = time.perf_counter()
            count = 0
            async for _event in session.stream("go"):
                count += 1
            events = min(events, (time.perf_counter() - start, count))
    finally:
        await provider.aclose()
        server.close()
        await server.wait_closed()
    return deltas, events


def report(name: str, floor: tuple[float, int], rows: list[tuple[str, tuple[float, int]]]) -> None:
    floor_rate = floor[1] / floor[0]
    print(f"\n{name}")
    print(f"  {'bare json.loads per line':<34} {floor_rate:>12,.0f} lines/s")
    for label, (seconds, items) in rows:
        rate = items / seconds
        print(
            f"  {label:<34} {rate:>12,.0f} items/s   {floor_rate / rate:5.1f}x the json.loads cost   ({items} items, {seconds * 1000:.1f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = Settings(backend_retries=0)

    ollama = ollama_stream(args.tokens)
    lines = ollama.splitlines()

    def ollama_floor() -> int:
        return sum(1 for line in lines if json.loads(line))

    def ollama_parser() -> int:
        p = OllamaStreamParser()
        return sum(len(p.feed_line(line)) for line in lines) + len(p.finish())

    o_http, o_session = asyncio.run(
        over_http(
            lambda url: OllamaProvider("llama3.2", base_url=url, settings=settings),
            ollama,
            "application/x-ndjson",
            args.repeat,
        )
    )
    report(
        f"Ollama NDJSON, {args.tokens:,} tokens ({len(ollama) / 1e6:.2f} MB)",
        best_of(args.repeat, ollama_floor),
        [("parser, from memory (deltas)", best_of(args.repeat, ollama_parser)),
         ("OllamaProvider over HTTP (deltas)", o_http),
         ("ChatSession over HTTP (events)", o_session)],
    )  # fmt: skip

    openai = openai_stream(args.tokens)
    datas = [line[6:].decode() for line in openai.splitlines() if line.startswith(b"data: ")]

    def openai_floor() -> int:
        return sum(1 for d in datas if d == "[DONE]" or json.loads(d))

    def openai_parser() -> int:
        p = OpenAIStreamParser()
        return sum(len(p.feed_data(d)) for d in datas)

    a_http, a_session = asyncio.run(
        over_http(
            lambda url: OpenAIProvider("m", base_url=url, settings=settings), openai, "text/event-stream", args.repeat
        )
    )
    report(
        f"OpenAI SSE, {args.tokens:,} tokens ({len(openai) / 1e6:.2f} MB)",
        best_of(args.repeat, openai_floor),
        [("parser, from memory (deltas)", best_of(args.repeat, openai_parser)),
         ("OpenAIProvider over HTTP (deltas)", a_http),
         ("ChatSession over HTTP (events)", a_session)],
    )  # fmt: skip


if __name__ == "__main__":
    main()
