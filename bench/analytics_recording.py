"""Cost of recording metrics (streamchat.analytics), per event.

Prints the time `TurnObserver.observe` takes per event of realistic turns (1,000 tokens,
two tool calls, `done`), with the process's recorder as a session uses it (its windows,
per-scope windows and the Prometheus exporter), then per event type; and the end-to-end
cost in `ChatSession.stream` (as in bench/core_throughput.py) with the recorder versus a
recorder that does nothing.

    python bench/analytics_recording.py [--turns 200] [--tokens 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from streamchat import ChatSession, ScriptedProvider, session
from streamchat.analytics import recorder
from streamchat.events import (
    DoneEvent,
    Event,
    Metrics,
    ThinkingEvent,
    TokenEvent,
    ToolCallEvent,
    ToolResultEvent,
    ToolTiming,
    Usage,
)


def turn_events(tokens: int) -> list[Event]:
    """One turn's events: status, tokens, two tool calls and their results, more tokens, done."""
    stamp: dict[str, Any] = {"session_id": "s", "turn_id": "t"}
    seq = iter(range(1, 10**7))
    events: list[Event] = [ThinkingEvent(**stamp, seq=next(seq), text="Thinking…", kind="status")]
    events += [TokenEvent(**stamp, seq=next(seq), content="tok ") for _ in range(tokens // 2)]
    for call in ("a", "b"):
        events.append(ToolCallEvent(**stamp, seq=next(seq), call_id=call, tool="calculate", args={}))
    for call in ("a", "b"):
        events.append(
            ToolResultEvent(**stamp, seq=next(seq), call_id=call, tool="calculate", status="ok", duration_ms=12.5)
        )
    events.append(ThinkingEvent(**stamp, seq=next(seq), text="Thinking…", kind="status"))
    events += [TokenEvent(**stamp, seq=next(seq), content="tok ") for _ in range(tokens - tokens // 2)]
    timings = tuple(ToolTiming(call_id=c, tool="calculate", status="ok", duration_ms=12.5) for c in "ab")
    metrics = Metrics(ttft_ms=120.0, tokens_per_s=55.0, duration_ms=2500.0, model_calls=2, tools=timings)
    usage = Usage(prompt_tokens=300, completion_tokens=tokens)
    events.append(DoneEvent(**stamp, seq=next(seq), reason="stop", text="", usage=usage, metrics=metrics))
    return events


def observe_cost(events: list[Event], turns: int) -> float:
    """Seconds to observe `turns` turns of `events` (a new observer per turn, as `ChatSession.stream` makes)."""
    rec = ChatSession(ScriptedProvider([]), tools=None)
    rec.analytics_scope = "bench"
    start = time.perf_counter()
    for _ in range(turns):
        observer = recorder().turn(rec)
        observe = observer.observe
        for event in events:
            observe(event)
        observer.close()
    return time.perf_counter() - start


def per_type_cost(event: Event, repeat: int = 20_000) -> float:
    """Microseconds to observe one event of this type (a `done` or `tool_result` is recorded each time)."""
    observer = recorder().turn(ChatSession(ScriptedProvider([]), tools=None))
    start = time.perf_counter()
    for _ in range(repeat):
        observer.observe(event)
    elapsed = time.perf_counter() - start
    observer.close()
    return elapsed / repeat * 1e6


class _Silent:
    """A recorder whose observers do nothing: the baseline for the end-to-end cost."""

    class _Observer:
        def observe(self, event: Event) -> None:
            pass

        def close(self) -> None:
            pass

    def turn(self, chat: ChatSession) -> _Silent._Observer:
        return self._Observer()


async def stream_seconds(tokens: list[str]) -> tuple[float, int]:
    chat = ChatSession(ScriptedProvider([tokens]), tools=[])
    start = time.perf_counter()
    count = 0
    async for _ in chat.stream("go"):
        count += 1
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per turn")
    parser.add_argument("--stream-tokens", type=int, default=100_000, help="tokens of the end-to-end turn")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each; the best is reported")
    parser.add_argument(
        "--shared", action="store_true", help="note changed slots, as a server on the Redis store does (Recorder.share)"
    )
    args = parser.parse_args()
    if args.shared:
        recorder().share()

    events = turn_events(args.tokens)
    best = min(observe_cost(events, args.turns) for _ in range(args.repeat))
    per_event = best / (args.turns * len(events)) * 1e6
    print(f"events per turn:                 {len(events):,} ({args.tokens:,} tokens, 2 tool calls, done)")
    print(f"recording, mean per event:       {per_event:>8.3f} µs   (budget 2 µs)")
    print(f"recording, per turn:             {best / args.turns * 1e6:>8.1f} µs")
    kinds = {
        "token": events[1],
        "tool_call": next(e for e in events if e.type == "tool_call"),
        "tool_result": next(e for e in events if e.type == "tool_result"),
        "done": events[-1],
    }
    for name, event in kinds.items():
        print(f"  one {name + ' event:':<28}{per_type_cost(event):>8.3f} µs")

    tokens = [f"tok{i % 997} " for i in range(args.stream_tokens)]
    real, silent_recorder = session.recorder, _Silent()
    recorded_runs, silent_runs = [], []
    for _ in range(args.repeat):  # interleaved, so that a busy machine slows both alike
        recorded_runs.append(asyncio.run(stream_seconds(tokens)))
        session.recorder = lambda: silent_recorder  # type: ignore[assignment,return-value]
        try:
            silent_runs.append(asyncio.run(stream_seconds(tokens)))
        finally:
            session.recorder = real
    recorded, silent = min(recorded_runs), min(silent_runs)
    extra = (recorded[0] - silent[0]) / recorded[1] * 1e6
    print(f"ChatSession.stream, recording:   {recorded[1] / recorded[0]:>12,.0f} events/s")
    print(f"ChatSession.stream, no recorder: {silent[1] / silent[0]:>12,.0f} events/s")
    print(f"end-to-end cost per event:       {extra:>8.3f} µs")


if __name__ == "__main__":
    main()
