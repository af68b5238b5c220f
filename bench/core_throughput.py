"""Throughput of the streaming core.

Prints events/s through `ChatSession.stream` with the scripted model at zero delay
(100k tokens), next to a bare async generator yielding the same tokens, their ratio,
and the peak memory (tracemalloc) of a 10k-token answer.

    python bench/core_throughput.py [--tokens 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator

from streamchat import ChatSession, ScriptedProvider


async def bare(tokens: list[str]) -> AsyncIterator[str]:
    for token in tokens:
        yield token


async def time_bare(tokens: list[str]) -> float:
    start = time.perf_counter()
    count = 0
    async for _ in bare(tokens):
        count += 1
    assert count == len(tokens)
    return time.perf_counter() - start


async def time_session(tokens: list[str]) -> tuple[float, int]:
    session = ChatSession(ScriptedProvider([tokens]), tools=[])
    start = time.perf_counter()
    events = 0
    event = None
    async for event in session.stream("go"):  # noqa: B007  (the last event is checked below)
        events += 1
    elapsed = time.perf_counter() - start
    assert event.type == "done" and len(event.text) == sum(map(len, tokens))
    return elapsed, events


async def peak_memory(tokens: list[str]) -> tuple[int, int]:
    session = ChatSession(ScriptedProvider([tokens]), tools=[])
    tracemalloc.start()
    tracemalloc.reset_peak()
    async for _ in session.stream("go"):
        pass
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    args = parser.parse_args()
    tokens = [f"tok{i % 997} " for i in range(args.tokens)]

    bare_best = min(asyncio.run(time_bare(tokens)) for _ in range(args.repeat))
    runs = [asyncio.run(time_session(tokens)) for _ in range(args.repeat)]
    session_best = min(elapsed for elapsed, _ in runs)
    events = runs[0][1]

    answer = [f"tok{i % 997} " for i in range(10_000)]
    peak, retained = asyncio.run(peak_memory(answer))
    answer_bytes = sum(len(t) for t in answer)

    print(f"tokens per turn:                 {args.tokens:,}")
    print(f"bare async generator:            {args.tokens / bare_best:>14,.0f} tokens/s  ({bare_best * 1000:.1f} ms)")
    print(
        f"ChatSession.stream (scripted):   {events / session_best:>14,.0f} events/s  ({session_best * 1000:.1f} ms, {events:,} events)"
    )
    print(f"ratio bare / ChatSession:        {(args.tokens / bare_best) / (events / session_best):>14.1f} x")
    print(f"overhead per event:              {(session_best - bare_best) / events * 1e6:>14.2f} µs")
    print(
        f"10k-token answer: peak memory    {peak / 1024:>14,.0f} KiB  ({peak / answer_bytes:.1f} x the answer's {answer_bytes:,} bytes; {retained / 1024:,.0f} KiB retained in history)"
    )


if __name__ == "__main__":
    main()
