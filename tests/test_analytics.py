"""The recorder: scripted turns with known timings on a fake clock give the expected figures."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from backends.helpers import FAST, run_turn
from backends.replay import ReplayServer, Reply
from backends.transcripts import ndjson, ollama_chunk, ollama_done
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from streamchat import ChatSession, OllamaProvider, ScriptedProvider, ToolCall
from streamchat.analytics import RELATIVE_ERROR, LogHistogram, Recorder, Stats, recorder, tracing
from streamchat.analytics.prometheus import PrometheusExporter
from streamchat.events import (
    DoneEvent,
    ErrorEvent,
    Metrics,
    TokenEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
    Usage,
)
from streamchat.tools import tool


class FakeClock:
    """Seconds since the epoch that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSession:
    """What the recorder reads of a session: its provider's name and model, its tools, its scope."""

    class provider:
        name = "scripted"
        model = "m1"

    tools: dict[str, Any] = {"search": None, "fetch": None}  # noqa: RUF012
    analytics_scope: str | None = None


def close_to(actual: float | None, expected: float) -> bool:
    return actual is not None and abs(actual - expected) <= expected * RELATIVE_ERROR + 1e-9


def play_turn(
    rec: Recorder,
    *,
    ttft_ms: float | None,
    duration_ms: float,
    reason: str = "stop",
    tokens: tuple[int, int] = (10, 20),
    tokens_per_s: float | None = 50.0,
    tools: tuple[tuple[str, str, float], ...] = (),
    scope: str | None = None,
    errors: tuple[str, ...] = (),
) -> None:
    """One turn's events, as `ChatSession.stream` would hand them to the recorder."""
    observer = rec.turn(FakeSession(), scope=scope)
    stamp = {"session_id": "s", "turn_id": "t"}
    seq = iter(range(1, 1000))
    observer.observe(TokenEvent(**stamp, seq=next(seq), content="hi"))
    for n, (name, status, ms) in enumerate(tools):
        observer.observe(ToolCallEvent(**stamp, seq=next(seq), call_id=f"c{n}", tool=name, args={}))
        observer.observe(
            ToolResultEvent(
                **stamp,
                seq=next(seq),
                call_id=f"c{n}",
                tool=name,
                status=status,  # type: ignore[arg-type]
                error=None if status == "ok" else f"{name} broke",
                duration_ms=ms,
            )
        )
    for code in errors:
        observer.observe(ErrorEvent(**stamp, seq=next(seq), message="failed", code=code))
    observer.observe(
        DoneEvent(
            **stamp,
            seq=next(seq),
            reason=reason,  # type: ignore[arg-type]
            text="hi",
            usage=Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1]),
            metrics=Metrics(ttft_ms=ttft_ms, duration_ms=duration_ms, tokens_per_s=tokens_per_s),
        )
    )
    observer.close()


def test_counts_percentiles_and_rates_of_scripted_turns() -> None:
    clock = FakeClock()
    rec = Recorder(clock=clock)
    for n in range(1, 101):  # TTFT 1 … 100 ms, duration 10 … 1000 ms, 1 in 10 failed
        play_turn(rec, ttft_ms=n, duration_ms=10 * n, reason="error" if n % 10 == 0 else "stop")
        clock.now += 1.0  # 100 turns over 100 s: all in the last 5 minutes
    window = rec.summary()["windows"]["5m"]
    assert window["turns"] == 100
    assert window["reasons"] == {"stop": 90, "error": 10}
    assert window["error_rate"] == pytest.approx(0.1)
    assert window["turns_per_min"] == pytest.approx(20.0)
    assert window["tokens_in"] == 1000 and window["tokens_out"] == 2000
    ttft = window["ttft_ms"]
    assert ttft["avg"] == pytest.approx(50.5)
    assert close_to(ttft["p50"], 50) and close_to(ttft["p95"], 95) and close_to(ttft["p99"], 99)
    assert ttft["max"] == 100
    assert close_to(window["duration_ms"]["p95"], 950)
    assert window["tokens_per_s"]["p50"] == pytest.approx(50.0, rel=RELATIVE_ERROR)


def test_windows_roll_over() -> None:
    clock = FakeClock(3600 * 1000)
    rec = Recorder(clock=clock)
    play_turn(rec, ttft_ms=5, duration_ms=10)
    clock.now += 290  # still within 5 min (slots of 10 s)
    play_turn(rec, ttft_ms=7, duration_ms=10)
    assert rec.summary()["windows"]["5m"]["turns"] == 2
    clock.now += 20  # the first turn's slot left the 5-min window; the hour keeps both
    summary = rec.summary()
    assert summary["windows"]["5m"]["turns"] == 1 and summary["windows"]["1h"]["turns"] == 2
    series = summary["series"]
    assert len(series["t"]) == 60 and sum(series["turns_per_min"]) == 2
    assert close_to(series["ttft_p50_ms"][-2], 7) and close_to(series["ttft_p50_ms"][-6], 5)  # minutes 4 and 0 of 5
    clock.now += 3600
    assert rec.summary()["windows"]["1h"]["turns"] == 0
    assert all(len(w.slots) <= w.slots_kept for w in (rec._process.recent, rec._process.hour))


def test_per_tool_success_rates_durations_and_pauses() -> None:
    clock = FakeClock()
    rec = Recorder(clock=clock)
    play_turn(rec, ttft_ms=1, duration_ms=1, tools=(("search", "ok", 100), ("search", "ok", 300), ("fetch", "ok", 20)))
    play_turn(rec, ttft_ms=1, duration_ms=1, tools=(("search", "error", 50), ("fetch", "timeout", 5000)))
    play_turn(rec, ttft_ms=1, duration_ms=1, tools=(("made_up_by_the_model", "error", 1),))
    tools = {row["tool"]: row for row in rec.summary()["windows"]["1h"]["tools"]}
    assert set(tools) == {"search", "fetch", "_OTHER"}  # a name the session does not have is not a label
    search, fetch = tools["search"], tools["fetch"]
    assert (search["calls"], search["ok"], search["statuses"]) == (3, 2, {"ok": 2, "error": 1})
    assert search["success_rate"] == pytest.approx(2 / 3)
    assert search["duration_ms"]["avg"] == pytest.approx(150)
    assert close_to(search["duration_ms"]["p50"], 100) and close_to(search["duration_ms"]["p95"], 300)
    assert search["last_error"] == "error: search broke"
    assert fetch["success_rate"] == 0.5 and fetch["last_error"] == "timeout: fetch broke"
    histogram = rec.summary()["tool_histogram"]
    assert sum(histogram["total"]) == 6
    assert histogram["tools"]["fetch"][-1] == 0 and sum(histogram["tools"]["fetch"]) == 2

    # time paused: between the call's `paused` and `resumed` progress events, on the recorder's clock
    observer = rec.turn(FakeSession())
    stamp = {"session_id": "s", "turn_id": "t2", "call_id": "p", "tool": "search"}
    observer.observe(ToolProgressEvent(**stamp, seq=1, message="Paused", stage="paused"))
    clock.now += 2.5
    observer.observe(ToolProgressEvent(**stamp, seq=2, message="Resumed", stage="resumed"))
    observer.observe(ToolProgressEvent(**stamp, seq=3, message="Paused", stage="paused"))
    clock.now += 0.5
    observer.observe(ToolResultEvent(**stamp, seq=4, status="ok", duration_ms=3100))  # ended while paused
    tools = {row["tool"]: row for row in rec.summary()["windows"]["1h"]["tools"]}
    assert tools["search"]["paused_ms"] == pytest.approx(3000)


def test_scopes_are_kept_apart_and_bounded() -> None:
    rec = Recorder(clock=FakeClock(), max_scopes=2)
    play_turn(rec, ttft_ms=1, duration_ms=1, scope="alice")
    play_turn(rec, ttft_ms=1, duration_ms=1, scope="alice")
    play_turn(rec, ttft_ms=1, duration_ms=1, scope="bob")
    assert rec.summary("alice")["windows"]["5m"]["turns"] == 2
    assert rec.summary("bob")["windows"]["5m"]["turns"] == 1
    assert rec.summary()["windows"]["5m"]["turns"] == 3
    assert rec.summary("nobody")["windows"]["5m"]["turns"] == 0
    play_turn(rec, ttft_ms=1, duration_ms=1, scope="carol")  # past max_scopes: the least recent (alice) goes
    assert rec.summary("alice")["windows"]["5m"]["turns"] == 0
    assert rec.summary("bob")["windows"]["5m"]["turns"] == 1


def test_active_turns_streams_and_listeners() -> None:
    rec = Recorder(clock=FakeClock())
    changes: list[int] = []
    unsubscribe = rec.subscribe(lambda: changes.append(rec.version))
    observer = rec.turn(FakeSession(), scope="alice")
    assert rec.summary("alice")["active_turns"] == 1 and rec.summary()["active_turns"] == 1
    observer.close()  # ended without `done` (its stream was dropped)
    assert rec.summary()["active_turns"] == 0
    with rec.open_stream("sse", "alice"):
        assert rec.summary("alice")["open_streams"] == {"sse": 1, "websocket": 0}
    assert rec.summary()["open_streams"] == {"sse": 0, "websocket": 0}
    assert changes == sorted(changes) and len(changes) == 4
    unsubscribe()
    play_turn(rec, ttft_ms=1, duration_ms=1)
    assert len(changes) == 4


async def test_the_session_feeds_the_process_recorder() -> None:
    @tool
    def slow_search(query: str) -> str:
        """Search."""
        return f"found {query}"

    provider = ScriptedProvider([[ToolCall("slow_search", {"query": "x"})], ["The ", "answer"]])
    session = ChatSession(provider, tools=[slow_search])
    session.analytics_scope = "test-session-feeds"
    result = await session.send("go")
    summary = recorder().summary("test-session-feeds")
    window = summary["windows"]["5m"]
    assert window["turns"] == 1 and window["reasons"] == {"stop": 1}
    assert window["ttft_ms"]["max"] == pytest.approx(result.metrics.ttft_ms)
    assert window["duration_ms"]["max"] == pytest.approx(result.metrics.duration_ms)
    [row] = window["tools"]
    assert (row["tool"], row["calls"], row["success_rate"]) == ("slow_search", 1, 1.0)
    assert row["duration_ms"]["max"] == pytest.approx(result.metrics.tools[0].duration_ms)
    assert summary["active_turns"] == 0


@given(st.lists(st.floats(min_value=0.01, max_value=1e7), min_size=1, max_size=300), st.sampled_from([0.5, 0.95, 0.99]))
def test_histogram_quantiles_are_within_the_stated_error(values: list[float], q: float) -> None:
    histogram = LogHistogram()
    for value in values:
        histogram.add(value)
    exact = sorted(values)[max(math.ceil(q * len(values)) - 1, 0)]  # nearest rank
    estimate = histogram.quantile(q)
    assert estimate is not None and abs(estimate - exact) <= exact * RELATIVE_ERROR * (1 + 1e-9)


def test_histograms_merge_by_addition_and_round_trip() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1.5) for _ in range(2000)]
    whole, first, second = LogHistogram(), LogHistogram(), LogHistogram()
    for n, value in enumerate(values):
        whole.add(value)
        (first if n % 2 else second).add(value)
    first.merge(LogHistogram.from_dict(second.to_dict()))
    assert first.buckets == whole.buckets and first.count == whole.count == 2000
    assert first.quantile(0.99) == whole.quantile(0.99)
    assert len(whole.buckets) < 400  # bounded by the range of the values, not their number


def test_prometheus_exporter_values() -> None:
    registry = CollectorRegistry()
    rec = Recorder(clock=FakeClock(), exporters=[PrometheusExporter(registry)])
    play_turn(rec, ttft_ms=250, duration_ms=1500, tools=(("search", "ok", 40), ("search", "timeout", 2000)))
    play_turn(rec, ttft_ms=None, duration_ms=500, reason="error", errors=("backend_unreachable",))
    value = registry.get_sample_value
    model = {"gen_ai_operation_name": "invoke_agent", "gen_ai_provider_name": "scripted", "gen_ai_request_model": "m1"}
    assert value("gen_ai_client_operation_duration_seconds_count", {**model, "error_type": ""}) == 1
    assert value("gen_ai_client_operation_duration_seconds_sum", {**model, "error_type": "error"}) == 0.5
    assert value("gen_ai_client_operation_time_to_first_chunk_seconds_sum", model) == 0.25
    assert value("gen_ai_client_token_usage_sum", {**model, "gen_ai_token_type": "input"}) == 20
    assert value("gen_ai_client_token_usage_sum", {**model, "gen_ai_token_type": "output"}) == 40
    tool = "gen_ai_execute_tool_duration_seconds"
    assert value(f"{tool}_sum", {"gen_ai_tool_name": "search", "error_type": ""}) == 0.04
    assert value(f"{tool}_count", {"gen_ai_tool_name": "search", "error_type": "timeout"}) == 1
    assert value("streamchat_turns_total", {"reason": "error"}) == 1
    assert value("streamchat_errors_total", {"error_type": "backend_unreachable"}) == 1
    assert value("streamchat_active_turns") == 0


async def test_opentelemetry_spans_of_a_turn() -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    rec = Recorder(tracer=tracing.tracer(provider))
    session = ChatSession(ScriptedProvider([[ToolCall("calculate", {"expression": "6 * 7"})], ["42"]]))
    observer = rec.turn(session)
    async for event in session.stream("go"):
        observer.observe(event)
    observer.close()
    finished = {span.name: span for span in spans.get_finished_spans()}
    chat = f"chat {session.provider.model or session.provider.name}"
    assert sorted(finished) == [chat, "execute_tool calculate", "invoke_agent streamchat"]
    agent = finished["invoke_agent streamchat"]
    tool_span = finished["execute_tool calculate"]
    assert tool_span.parent is not None and tool_span.parent.span_id == agent.context.span_id
    assert tool_span.attributes is not None and tool_span.attributes["gen_ai.tool.name"] == "calculate"
    assert agent.attributes is not None and agent.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    chats = [span for span in spans.get_finished_spans() if span.name == chat]
    assert len(chats) == 2 and all(span.parent.span_id == agent.context.span_id for span in chats)  # type: ignore[union-attr]


def test_no_tracing_without_a_configured_provider() -> None:
    make_spans = tracing.tracer()
    assert make_spans is not None  # opentelemetry-api is installed here, but no provider is set
    assert make_spans(Recorder().turn(FakeSession()).info) is None


async def test_provider_retries_are_counted(replay: ReplayServer) -> None:
    from prometheus_client import REGISTRY

    labels = {"gen_ai_provider_name": "ollama"}
    before = REGISTRY.get_sample_value("streamchat_retries_total", labels) or 0.0
    before_summary = recorder().summary()["retries"]
    unavailable = Reply([b'{"error":"server busy"}'], status=503, content_type="application/json")
    done = ndjson(ollama_chunk("ok"), ollama_done(prompt_eval_count=1, eval_count=1))
    replay.reset(unavailable, unavailable, Reply([done], content_type="application/x-ndjson"))
    events = await run_turn(OllamaProvider("m1", base_url=replay.url, settings=FAST))
    assert events[-1].type == "done" and events[-1].text == "ok"
    assert REGISTRY.get_sample_value("streamchat_retries_total", labels) == before + 2
    assert recorder().summary()["retries"] == before_summary + 2


def test_the_state_of_two_processes_merges_into_the_figures_of_one() -> None:
    """What the Redis store will do: each process's slot state, serialised and added up, equals one recorder's."""
    clock = FakeClock()
    one, first, second = Recorder(clock=clock), Recorder(clock=clock), Recorder(clock=clock)
    for n in range(1, 61):
        tools = (("search", "ok" if n % 4 else "error", float(n)),)
        for rec in (one, first if n % 2 else second):
            play_turn(rec, ttft_ms=n * 3.0, duration_ms=n * 10.0, tools=tools, reason="error" if n % 7 == 0 else "stop")
        clock.now += 2
    merged = Stats()
    for rec in (first, second):
        merged.merge(Stats.from_dict(json.loads(json.dumps(rec._process.hour.merged(clock.now).to_dict()))))
    assert merged.summary(3600) == one._process.hour.merged(clock.now).summary(3600)
