"""`MetricsBuilder`: tokens per second over the time the model streamed, and only when that time means something."""

from __future__ import annotations

import pytest

from streamchat import ChatSession, ScriptedProvider, ToolCall, tool
from streamchat.events import DoneEvent
from streamchat.turn import MetricsBuilder


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tokens_per_second_is_measured_from_first_to_last_token_of_each_model_call() -> None:
    clock = Clock()
    metrics = MetricsBuilder(clock)
    metrics.model_call()
    clock.now += 0.5  # time to first token
    for _ in range(11):
        metrics.token()
        clock.now += 0.1
    clock.now += 30.0  # a long tool call between the model calls: not generation time
    metrics.model_call()
    for _ in range(10):
        metrics.token()
        clock.now += 0.1
    built = metrics.build()
    assert built.ttft_ms == pytest.approx(500)
    # 21 tokens streamed over 1.0 s + 0.9 s (first to last token of each call)
    assert built.tokens_per_s == pytest.approx(21 / 1.9)
    assert built.duration_ms == pytest.approx((0.5 + 2.1 + 30.0) * 1000)


def test_tokens_arriving_at_once_give_no_rate() -> None:
    clock = Clock()
    metrics = MetricsBuilder(clock)
    metrics.model_call()
    metrics.token()
    clock.now += 0.0000124  # "The text has ", "six words." from a scripted model: not a speed
    metrics.token()
    assert metrics.build().tokens_per_s is None
    assert metrics.build().ttft_ms == 0


def test_a_rate_needs_at_least_the_minimum_streaming_span() -> None:
    clock = Clock()
    metrics = MetricsBuilder(clock)
    metrics.model_call()
    metrics.token()
    clock.now += MetricsBuilder.MIN_RATE_SPAN_S
    metrics.token()
    assert metrics.build().tokens_per_s == pytest.approx(2 / MetricsBuilder.MIN_RATE_SPAN_S)


@tool
def count(text: str) -> int:
    """Count words.

    Args:
        text: The text.
    """
    return len(text.split())


async def test_an_instant_scripted_turn_reports_no_tokens_per_second_and_a_paced_one_does() -> None:
    instant = ChatSession(
        ScriptedProvider([[ToolCall("count", {"text": "a b"})], ["The text has ", "2 words."]]), tools=[count]
    )
    [done] = [e async for e in instant.stream("How many?") if isinstance(e, DoneEvent)]
    assert done.metrics.ttft_ms is not None and done.metrics.tokens_per_s is None

    paced = ChatSession(ScriptedProvider([[f"w{i} " for i in range(8)]], token_delay=0.02), tools=[])
    [done] = [e async for e in paced.stream("Talk") if isinstance(e, DoneEvent)]
    assert done.metrics.tokens_per_s is not None
    assert 0 < done.metrics.tokens_per_s <= 8 / 0.14  # 8 tokens, at least 7 × 20 ms apart
