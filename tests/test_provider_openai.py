"""OpenAIProvider against a real HTTP server replaying OpenAI-style SSE transcripts.

Tool-call argument fragments, parallel calls at indexes 0 and 1, reasoning deltas, the
usage chunk and `[DONE]`, each served cut at many byte offsets.
"""

from __future__ import annotations

import json

import pytest
from backends.helpers import FAST, lookup, run_turn
from backends.replay import ReplayServer, Reply, cut, cut_plans
from backends.transcripts import openai_chunk, openai_usage, sse, tool_fragment
from core_helpers import brief, check_invariants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat import OpenAIProvider

pytestmark = pytest.mark.usefixtures("http_transport")  # every test on each HTTP transport

STATUS = ("thinking", "status", "Thinking…")
SSE = "text/event-stream; charset=utf-8"

TEXT_AND_REASONING = sse(
    openai_chunk({"role": "assistant", "content": ""}),
    openai_chunk({"reasoning_content": "Grüße means "}),
    openai_chunk({"reasoning": "greetings 👋"}),
    openai_chunk({"content": "Grüße"}),
    openai_chunk({"content": ", 世界!"}),
    openai_chunk({}, finish_reason="stop"),
    openai_usage(12, 5),
)
TEXT_AND_REASONING_EVENTS = [
    STATUS,
    ("thinking", "reasoning", "Grüße means "),
    ("thinking", "reasoning", "greetings 👋"),
    ("token", "Grüße"),
    ("token", ", 世界!"),
    ("done", "stop", "Grüße, 世界!"),
]

PARALLEL_CALLS = sse(
    openai_chunk({"role": "assistant", "content": None}),
    openai_chunk({"tool_calls": [tool_fragment(0, call_id="call_a", name="lookup")]}),
    openai_chunk({"tool_calls": [tool_fragment(0, arguments='{"ke')]}),
    openai_chunk({"tool_calls": [tool_fragment(1, call_id="call_b", name="lookup", arguments='{"key": ')]}),
    openai_chunk({"tool_calls": [tool_fragment(0, arguments='y": "α"}')]}),
    openai_chunk({"tool_calls": [tool_fragment(1, arguments='"β"}')]}),
    openai_chunk({}, finish_reason="tool_calls"),
    openai_usage(50, 20),
)
ANSWER = sse(
    openai_chunk({"content": "α, then "}),
    openai_chunk({"content": "β."}),
    openai_chunk({}, finish_reason="stop"),
    openai_usage(80, 4),
)
PARALLEL_EVENTS = [
    STATUS,
    ("tool_call", "call_a", "lookup", {"key": "α"}),
    ("tool_call", "call_b", "lookup", {"key": "β"}),
    ("tool_result", "call_a", "ok", "first letter"),
    ("tool_result", "call_b", "ok", "second letter"),
    STATUS,
    ("token", "α, then "),
    ("token", "β."),
    ("done", "stop", "α, then β."),
]


def provider(server: ReplayServer, **options: object) -> OpenAIProvider:
    return OpenAIProvider("test-model", base_url=f"{server.url}/v1", api_key="sk-test", settings=FAST, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("plan", list(cut_plans(TEXT_AND_REASONING)))
async def test_text_reasoning_usage_and_done_survive_any_cut(replay: ReplayServer, plan: str) -> None:
    replay.reset(Reply(cut_plans(TEXT_AND_REASONING)[plan], content_type=SSE))
    events = await run_turn(provider(replay, temperature=0.2, max_tokens=64))
    check_invariants(events)
    assert brief(events) == TEXT_AND_REASONING_EVENTS
    assert (events[-1].usage.prompt_tokens, events[-1].usage.completion_tokens) == (12, 5)  # type: ignore[union-attr]
    request = replay.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json() == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 64,
    }


@pytest.mark.parametrize("plan", list(cut_plans(PARALLEL_CALLS)))
async def test_parallel_tool_calls_assembled_from_fragments(replay: ReplayServer, plan: str) -> None:
    replay.reset(Reply(cut_plans(PARALLEL_CALLS)[plan], content_type=SSE), Reply([ANSWER], content_type=SSE))
    events = await run_turn(provider(replay), "α and β?", tools=[lookup])
    check_invariants(events)
    assert brief(events) == PARALLEL_EVENTS
    assert (events[-1].usage.prompt_tokens, events[-1].usage.completion_tokens) == (130, 24)  # type: ignore[union-attr]
    first, second = (r.json() for r in replay.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup"]
    assert second["messages"] == [
        {"role": "user", "content": "α and β?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"key": "α"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": '{"key": "β"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "first letter"},
        {"role": "tool", "tool_call_id": "call_b", "content": "second letter"},
    ]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=st.lists(st.integers(min_value=1, max_value=len(PARALLEL_CALLS) - 1), max_size=60))
async def test_random_cuts_of_tool_fragments_give_the_same_events(replay: ReplayServer, points: list[int]) -> None:
    replay.reset(Reply(cut(PARALLEL_CALLS, points), content_type=SSE), Reply([ANSWER], content_type=SSE))
    assert brief(await run_turn(provider(replay), "α and β?", tools=[lookup])) == PARALLEL_EVENTS


async def test_incomplete_arguments_become_a_tool_error_the_model_sees(replay: ReplayServer) -> None:
    broken = sse(
        openai_chunk({"tool_calls": [tool_fragment(0, call_id="call_a", name="lookup", arguments='{"key": "α"')]}),
        openai_chunk({}, finish_reason="tool_calls"),
    )
    replay.reset(Reply([broken], content_type=SSE), Reply([ANSWER], content_type=SSE))
    events = await run_turn(provider(replay), "α?", tools=[lookup])
    check_invariants(events)
    result = next(e for e in events if e.type == "tool_result")
    assert (result.status, result.error) == (  # type: ignore[union-attr]
        "error",
        "invalid arguments: not valid JSON (Expecting ',' delimiter: line 1 column 12 (char 11)): '{\"key\": \"α\"'",
    )
    assert replay.requests[1].json()["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": "Error (error): " + result.error,  # type: ignore[union-attr]
    }


@pytest.mark.parametrize("plan", ["whole", "every-byte"])
async def test_error_object_in_a_chunk_becomes_an_error_event(replay: ReplayServer, plan: str) -> None:
    data = sse(
        openai_chunk({"content": "Hi"}), {"error": {"message": "model overloaded", "type": "server_error"}}, done=False
    )
    replay.reset(Reply(cut_plans(data)[plan], content_type=SSE))
    events = await run_turn(provider(replay))
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("token", "Hi"),
        ("error", "backend_stream_error", "the server reported an error: model overloaded"),
        ("done", "error", "Hi"),
    ]
    assert len(replay.requests) == 1


async def test_malformed_event_is_reported_and_the_stream_goes_on(replay: ReplayServer) -> None:
    data = sse(
        openai_chunk({"content": "a"}),
        "{oops",
        openai_chunk({"content": "b"}),
        openai_chunk({}, finish_reason="length"),
    )
    replay.reset(Reply([data], content_type=SSE))
    assert brief(await run_turn(provider(replay))) == [
        STATUS,
        ("token", "a"),
        ("error", "malformed_chunk", "the server sent an event that is not JSON; skipped it: '{oops'"),
        ("token", "b"),
        ("done", "length", "ab"),
    ]


async def test_a_whole_json_completion_is_handled_as_one_chunk(replay: ReplayServer) -> None:
    completion = {
        "id": "chatcmpl-527",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_x",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"key":"paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 257, "completion_tokens": 63, "total_tokens": 320},
    }
    final = {
        **completion,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris is the capital of France."},
                "finish_reason": "stop",
            }
        ],
    }
    replay.reset(
        Reply([json.dumps(completion).encode()], content_type="application/json", chunked=False),
        Reply([json.dumps(final).encode()], content_type="application/json", chunked=False),
    )
    events = await run_turn(provider(replay), "paris?", tools=[lookup])
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("tool_call", "call_x", "lookup", {"key": "paris"}),
        ("tool_result", "call_x", "ok", "capital of France"),
        STATUS,
        ("token", "Paris is the capital of France."),
        ("done", "stop", "Paris is the capital of France."),
    ]


async def test_ollama_v1_style_rejection_of_tools_retries_without_them(replay: ReplayServer) -> None:
    rejected = (
        b'{"error":{"message":"stablelm2:latest does not support tools","type":"api_error","param":null,"code":null}}'
    )
    replay.reset(Reply([rejected], status=400, content_type="application/json"), Reply([ANSWER], content_type=SSE))
    events = await run_turn(provider(replay, tool_choice="auto"), "α?", tools=[lookup])
    assert brief(events)[:2] == [
        STATUS,
        ("thinking", "status", "test-model does not support tools: answering without them"),
    ]
    assert brief(events)[-1] == ("done", "stop", "α, then β.")
    assert replay.requests[0].json()["tool_choice"] == "auto"
    assert "tools" not in replay.requests[1].json() and "tool_choice" not in replay.requests[1].json()


async def test_a_stream_that_ends_without_finishing_is_an_error_not_a_short_answer(replay: ReplayServer) -> None:
    data = sse(openai_chunk({"content": "Once upon"}), done=False)
    replay.reset(Reply([data], content_type=SSE))
    assert brief(await run_turn(provider(replay))) == [
        STATUS,
        ("token", "Once upon"),
        ("error", "backend_stream_error", "the stream ended before the model finished: the answer is incomplete"),
        ("done", "error", "Once upon"),
    ]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, b'{"error":{"code":500,"message":"tools param requires --jinja flag","type":"server_error"}}'),
        (
            400,
            b'{"object":"error","message":"\\"auto\\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set","type":"BadRequestError","param":null,"code":400}',
        ),
    ],
    ids=["llama.cpp", "vllm"],
)
async def test_servers_that_cannot_take_tools_are_asked_without_them(
    replay: ReplayServer, status: int, error: bytes
) -> None:
    replay.reset(Reply([error], status=status, content_type="application/json"), Reply([ANSWER], content_type=SSE))
    events = await run_turn(provider(replay), "α?", tools=[lookup])
    assert brief(events)[1] == ("thinking", "status", "test-model does not support tools: answering without them")
    assert brief(events)[-1] == ("done", "stop", "α, then β.")
    assert len(replay.requests) == 2 and "tools" not in replay.requests[1].json()
