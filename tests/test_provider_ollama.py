"""OllamaProvider against a real HTTP server replaying `/api/chat` NDJSON transcripts.

Every transcript is served with its bytes cut at many different points (inside lines,
inside multi-byte UTF-8 characters, one byte at a time) and must give the exact same
events through `ChatSession.stream`.
"""

from __future__ import annotations

import pytest
from backends.helpers import FAST, lookup, run_turn
from backends.replay import ReplayServer, Reply, cut, cut_plans
from backends.transcripts import ndjson, ollama_chunk, ollama_done
from core_helpers import brief, check_invariants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat import DoneEvent, OllamaProvider

pytestmark = pytest.mark.usefixtures("http_transport")  # every test on each HTTP transport

STATUS = ("thinking", "status", "Thinking…")

TEXT_AND_THINKING = ndjson(
    ollama_chunk(thinking="The user wants "),
    ollama_chunk(thinking="a greeting… ✓"),
    ollama_chunk("Héllo"),
    ollama_chunk(" wörld 🌍, "),
    ollama_chunk("世界!"),
    ollama_done(),
)
TEXT_AND_THINKING_EVENTS = [
    STATUS,
    ("thinking", "reasoning", "The user wants "),
    ("thinking", "reasoning", "a greeting… ✓"),
    ("token", "Héllo"),
    ("token", " wörld 🌍, "),
    ("token", "世界!"),
    ("done", "stop", "Héllo wörld 🌍, 世界!"),
]


def provider(server: ReplayServer, **options: object) -> OllamaProvider:
    return OllamaProvider("qwen3", base_url=server.url, settings=FAST, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("plan", list(cut_plans(TEXT_AND_THINKING)))
async def test_text_thinking_and_metrics_survive_any_cut(replay: ReplayServer, plan: str) -> None:
    replay.reset(Reply(cut_plans(TEXT_AND_THINKING)[plan]))
    events = await run_turn(provider(replay, think=True, temperature=0))
    check_invariants(events)
    assert brief(events) == TEXT_AND_THINKING_EVENTS
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (26, 282)
    assert done.metrics.backend_duration_ms == pytest.approx(4883.583458)
    assert done.metrics.backend_tokens_per_s == pytest.approx(282 / 4.535599)
    body = replay.requests[0].json()
    assert replay.requests[0].path == "/api/chat"
    assert body == {
        "model": "qwen3",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "think": True,
        "options": {"temperature": 0},
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=st.lists(st.integers(min_value=1, max_value=len(TEXT_AND_THINKING) - 1), max_size=40))
async def test_random_cuts_give_the_same_events(replay: ReplayServer, points: list[int]) -> None:
    replay.reset(Reply(cut(TEXT_AND_THINKING, points)))
    assert brief(await run_turn(provider(replay))) == TEXT_AND_THINKING_EVENTS


TOOL_ON_RUNNING_CHUNK = ndjson(
    ollama_chunk(tool_calls=[{"id": "call_7", "function": {"index": 0, "name": "lookup", "arguments": {"key": "α"}}}]),
    ollama_done(prompt_eval_count=40, eval_count=12),
)
TOOL_ON_DONE_CHUNK = ndjson(
    ollama_chunk(""),
    ollama_done(
        tool_calls=[
            {"function": {"name": "lookup", "arguments": {"key": "α"}}},
            {"function": {"name": "lookup", "arguments": {"key": "β"}}},
        ],
        prompt_eval_count=40,
        eval_count=12,
    ),
)
ANSWER = ndjson(
    ollama_chunk("α is the "), ollama_chunk("first letter."), ollama_done(prompt_eval_count=60, eval_count=6)
)


@pytest.mark.parametrize("plan", ["whole", "every-byte", "inside-utf8"])
async def test_tool_call_on_a_running_chunk_runs_the_tool_and_answers(replay: ReplayServer, plan: str) -> None:
    replay.reset(Reply(cut_plans(TOOL_ON_RUNNING_CHUNK)[plan]), Reply(cut_plans(ANSWER)[plan]))
    events = await run_turn(provider(replay), "what is α?", tools=[lookup])
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("tool_call", "call_7", "lookup", {"key": "α"}),
        ("tool_result", "call_7", "ok", "first letter"),
        STATUS,
        ("token", "α is the "),
        ("token", "first letter."),
        ("done", "stop", "α is the first letter."),
    ]
    assert (events[-1].usage.prompt_tokens, events[-1].usage.completion_tokens) == (100, 18)  # type: ignore[union-attr]
    first, second = (r.json() for r in replay.requests)
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a key up in a small table.",
                "parameters": lookup.definition.parameters,
            },
        }
    ]
    assert second["messages"] == [
        {"role": "user", "content": "what is α?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_7", "function": {"name": "lookup", "arguments": {"key": "α"}}}],
        },
        {"role": "tool", "content": "first letter", "tool_name": "lookup"},
    ]


async def test_tool_calls_on_the_done_chunk_are_run(replay: ReplayServer) -> None:
    replay.reset(Reply(cut_plans(TOOL_ON_DONE_CHUNK)["every-7"]), Reply([ANSWER]))
    events = await run_turn(provider(replay), "α and β?", tools=[lookup])
    check_invariants(events)
    calls = [e for e in events if e.type == "tool_call"]
    ids = [c.call_id for c in calls]  # type: ignore[union-attr]
    assert len(set(ids)) == 2 and all(i.startswith("ollama_") for i in ids)
    assert brief(events) == [
        STATUS,
        ("tool_call", ids[0], "lookup", {"key": "α"}),
        ("tool_call", ids[1], "lookup", {"key": "β"}),
        ("tool_result", ids[0], "ok", "first letter"),
        ("tool_result", ids[1], "ok", "second letter"),
        STATUS,
        ("token", "α is the "),
        ("token", "first letter."),
        ("done", "stop", "α is the first letter."),
    ]


async def test_arguments_sent_as_invalid_json_text_become_a_tool_error_the_model_sees(replay: ReplayServer) -> None:
    bad = ndjson(ollama_done(tool_calls=[{"function": {"name": "lookup", "arguments": '{"key": '}}]))
    replay.reset(Reply([bad]), Reply([ANSWER]))
    events = await run_turn(provider(replay), "α?", tools=[lookup])
    result = next(e for e in events if e.type == "tool_result")
    assert result.status == "error"  # type: ignore[union-attr]
    assert result.error.startswith("invalid arguments: not valid JSON")  # type: ignore[union-attr]
    tool_message = replay.requests[1].json()["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"].startswith("Error (error): invalid arguments")


@pytest.mark.parametrize("plan", ["whole", "every-byte"])
async def test_error_line_mid_stream_becomes_an_error_event(replay: ReplayServer, plan: str) -> None:
    data = ndjson(
        ollama_chunk("Hel"), ollama_chunk("lo"), {"error": "an error was encountered while running the model"}
    )
    replay.reset(Reply(cut_plans(data)[plan]))
    events = await run_turn(provider(replay))
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("token", "Hel"),
        ("token", "lo"),
        ("error", "backend_stream_error", "ollama reported an error: an error was encountered while running the model"),
        ("done", "error", "Hello"),
    ]
    assert len(replay.requests) == 1


async def test_blank_and_malformed_lines_are_reported_not_fatal(replay: ReplayServer) -> None:
    data = ndjson(ollama_chunk("a"), "", "{not json", "[1, 2]", ollama_chunk("b"), ollama_done())
    replay.reset(Reply(cut(data, range(3, len(data), 3))))
    events = await run_turn(provider(replay))
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("token", "a"),
        ("error", "malformed_chunk", "ollama sent a blank line; skipped it"),
        ("error", "malformed_chunk", "ollama sent a line that is not JSON; skipped it: '{not json'"),
        ("error", "malformed_chunk", "ollama sent a line that is not an object; skipped it: [1, 2]"),
        ("token", "b"),
        ("done", "stop", "ab"),
    ]


async def test_unicode_line_separators_inside_a_json_string_do_not_end_the_line(replay: ReplayServer) -> None:
    text = "one\u2028two\u2029three\x85four"  # JSON allows these raw in a string; only "\\n" ends an NDJSON line
    data = ndjson(ollama_chunk(text), ollama_done())
    assert "\u2028".encode() in data
    replay.reset(Reply([data]))
    events = await run_turn(provider(replay))
    assert brief(events) == [STATUS, ("token", text), ("done", "stop", text)]


async def test_length_limit_ends_the_turn_with_reason_length(replay: ReplayServer) -> None:
    replay.reset(Reply([ndjson(ollama_chunk("To be"), ollama_done("length"))]))
    events = await run_turn(provider(replay))
    assert brief(events)[-1] == ("done", "length", "To be")


async def test_a_non_streamed_json_body_is_one_chunk(replay: ReplayServer) -> None:
    body = ndjson(ollama_done()).replace(b'"content": ""', b'"content": "Hello! How are you today?"').strip()
    replay.reset(Reply([body], content_type="application/json; charset=utf-8", chunked=False))
    events = await run_turn(provider(replay))
    assert brief(events) == [
        STATUS,
        ("token", "Hello! How are you today?"),
        ("done", "stop", "Hello! How are you today?"),
    ]


async def test_missing_model_says_to_pull_it_and_is_not_retried(replay: ReplayServer) -> None:
    replay.reset(
        Reply(
            [b'{"error":"model \\"qwen3\\" not found, try pulling it first"}'],
            status=404,
            content_type="application/json",
        )
    )
    events = await run_turn(provider(replay))
    assert brief(events) == [
        STATUS,
        ("error", "http_404", f"model 'qwen3' is not available in ollama at {replay.url}: run `ollama pull qwen3`"),
        ("done", "error", ""),
    ]
    assert len(replay.requests) == 1


async def test_a_model_without_tools_is_asked_again_without_them(replay: ReplayServer) -> None:
    rejected = Reply(
        [b'{"error":"registry.ollama.ai/library/qwen3:latest does not support tools"}'],
        status=400,
        content_type="application/json; charset=utf-8",
    )
    replay.reset(rejected, Reply([ANSWER]), Reply([ANSWER]))
    ollama = provider(replay)
    events = await run_turn(ollama, "α?", tools=[lookup])
    notice = ("thinking", "status", "qwen3 does not support tools: answering without them")
    assert brief(events) == [
        STATUS,
        notice,
        ("token", "α is the "),
        ("token", "first letter."),
        ("done", "stop", "α is the first letter."),
    ]
    assert "tools" in replay.requests[0].json() and "tools" not in replay.requests[1].json()
    # the provider remembers: the next turn does not offer tools again, and says so
    events = await run_turn(ollama, "β?", tools=[lookup])
    assert brief(events)[:2] == [STATUS, notice] and "tools" not in replay.requests[2].json()
    assert len(replay.requests) == 3


def test_ollama_host_without_scheme_or_port_gets_the_defaults() -> None:
    assert OllamaProvider("m", base_url="127.0.0.1").base_url == "http://127.0.0.1:11434"
    assert OllamaProvider("m", base_url="example.test:8080").base_url == "http://example.test:8080"
    assert OllamaProvider("m", base_url="https://ollama.example.test/").base_url == "https://ollama.example.test"
