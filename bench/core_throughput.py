"""Throughput of the streaming core.

Prints events/s through `ChatSession.stream` with the scripted model at zero delay
(100k tokens), next to a bare async generator yielding the same tokens, their ratio,
and the peak memory (tracemalloc) of a 10k-token answer.

Then the CPU time per token (`time.process_time`, which a shared machine disturbs less
than the wall clock) the core adds from a provider's `TextDelta` to the `Event` the
consumer receives, with the deltas made in advance (no provider cost):

- *no I/O*: the provider yields every delta at once (the turn's task runs ahead, up to
  the queue's high-water mark, and the consumer drains in bursts);
- *await per token*: the provider awaits once before each delta (``asyncio.sleep(0)``,
  as a model over the network does), so each token wakes the turn's task and then the
  consumer, as in the server. Printed next to the same provider read directly.

`--profile no-io|await` runs one turn of that kind under cProfile and prints its top
functions by own time and by total time.

    python bench/core_throughput.py [--tokens 100000] [--repeat 3] [--profile await]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Sequence

from streamchat import ChatSession, ScriptedProvider
from streamchat.providers.base import FinishDelta, ModelRequest, Provider, ProviderDelta, TextDelta


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


class DeltaModel(Provider):
    """Yields deltas made in advance; with `await_each`, awaits once before each (a network model's pace)."""

    name = "deltas"

    def __init__(self, deltas: Sequence[TextDelta], *, await_each: bool) -> None:
        super().__init__("bench")
        self.deltas = deltas
        self.await_each = await_each

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        if self.await_each:
            for delta in self.deltas:
                await asyncio.sleep(0)
                yield delta
        else:
            for delta in self.deltas:
                yield delta
        yield FinishDelta(reason="stop")


async def provider_alone(model: DeltaModel) -> int:
    """Read the provider directly: the cost without the core."""
    count = 0
    async for _ in model.stream(ModelRequest(messages=())):
        count += 1
    return count


async def through_session(model: DeltaModel) -> int:
    count = 0
    async for _ in ChatSession(model, tools=[]).stream("go"):
        count += 1
    return count


def cpu_per_token(make: Callable[[], Coroutine[object, object, int]], tokens: int, repeat: int) -> float:
    """Best CPU µs per token of `repeat` runs of `make()` (a coroutine factory) on a fresh loop."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        asyncio.run(make())
        best = min(best, time.process_time() - start)
    return best / tokens * 1e6


def profile(model: DeltaModel, top: int = 15) -> str:
    """One turn through `ChatSession.stream` under cProfile: the top functions by own and by total time."""
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(through_session(model))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    parser.add_argument("--profile", choices=["no-io", "await"], help="profile one turn of this kind and stop")
    args = parser.parse_args()
    tokens = [f"tok{i % 997} " for i in range(args.tokens)]
    deltas = [TextDelta(text=token) for token in tokens]

    if args.profile:
        print(profile(DeltaModel(deltas, await_each=args.profile == "await")))
        return

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

    print("CPU µs per token, deltas made in advance (process_time, best of --repeat):")
    for label, await_each in (("no I/O", False), ("await per token", True)):
        model = DeltaModel(deltas, await_each=await_each)
        alone = cpu_per_token(lambda model=model: provider_alone(model), args.tokens, args.repeat)
        core = cpu_per_token(lambda model=model: through_session(model), args.tokens, args.repeat)
        print(
            f"  {label + ':':<17} provider alone {alone:6.2f}   through ChatSession.stream {core:6.2f}   core adds {core - alone:6.2f}"
        )


if __name__ == "__main__":
    main()
