"""The agent loop: exact event sequences, history, errors, cancellation, busy sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from core_helpers import brief, check_invariants, collect

from streamchat import (
    BackendStreamError,
    ChatSession,
    Progress,
    ScriptedProvider,
    SessionBusyError,
    ToolCall,
    UsageError,
    tool,
)
from streamchat.providers.base import ThinkingDelta, UsageDelta
from streamchat.turn import QUEUE_HIGH_WATER

STATUS = ("thinking", "status", "Thinking…")


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def lookup(key: str):
    """Look a key up, reporting two stages."""
    yield Progress("Opening index...", stage="open", percent=0)
    yield Progress("Reading...", stage="read", percent=50)
    yield {"key": key, "value": key.upper(), "summary": key.upper()}


async def test_plain_answer_exact_sequence_and_history():
    provider = ScriptedProvider([["Hel", "lo", " world"]])
    session = ChatSession(provider, tools=[], session_id="s1")
    events = await collect(session, "hi")
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("token", "Hel"),
        ("token", "lo"),
        ("token", " world"),
        ("done", "stop", "Hello world"),
    ]
    assert [(m.role, m.content, m.interrupted) for m in session.history] == [
        ("user", "hi", False),
        ("assistant", "Hello world", False),
    ]
    assert all(e.session_id == "s1" for e in events)
    assert events[-1].metrics.model_calls == 1
    assert events[-1].metrics.ttft_ms is not None


async def test_tool_turn_exact_sequence_results_go_back_to_the_model():
    provider = ScriptedProvider(
        [
            [
                ThinkingDelta(text="I should add."),
                ToolCall("add", {"a": 2, "b": 3}),
                UsageDelta(prompt_tokens=5, completion_tokens=1),
            ],
            ["2 + 3 = ", "5", UsageDelta(prompt_tokens=9, completion_tokens=2)],
        ]
    )
    session = ChatSession(provider, tools=[add])
    events = await collect(session, "add 2 and 3")
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("thinking", "reasoning", "I should add."),
        ("tool_call", "call_1", "add", {"a": 2, "b": 3}),
        ("tool_result", "call_1", "ok", 5),
        STATUS,
        ("token", "2 + 3 = "),
        ("token", "5"),
        ("done", "stop", "2 + 3 = 5"),
    ]
    done = events[-1]
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (14, 3)
    assert [t.tool for t in done.metrics.tools] == ["add"]
    second = provider.requests[1]
    assert [(m.role, m.content) for m in second.messages] == [("user", "add 2 and 3"), ("assistant", ""), ("tool", "5")]
    assert second.messages[1].tool_calls[0].args == {"a": 2, "b": 3}
    assert second.messages[2].tool_call_id == "call_1"
    assert [t.name for t in second.tools] == ["add"]


async def test_parallel_tools_exact_sequence():
    provider = ScriptedProvider([[ToolCall("lookup", {"key": "a"}), ToolCall("add", {"a": 1, "b": 1})], ["done"]])
    events = await collect(ChatSession(provider, tools=[add, lookup]), "go")
    check_invariants(events)
    seq = brief(events)
    assert seq[:3] == [
        STATUS,
        ("tool_call", "call_1", "lookup", {"key": "a"}),
        ("tool_call", "call_2", "add", {"a": 1, "b": 1}),
    ]
    lookup_events = [e for e in seq if e[0].startswith("tool_") and e[1] == "call_1"]
    assert lookup_events == [
        ("tool_call", "call_1", "lookup", {"key": "a"}),
        ("tool_progress", "call_1", "Opening index...", "open", 0),
        ("tool_progress", "call_1", "Reading...", "read", 50),
        ("tool_result", "call_1", "ok", {"key": "a", "value": "A", "summary": "A"}),
    ]
    assert ("tool_result", "call_2", "ok", 2) in seq
    assert seq[-3:] == [STATUS, ("token", "done"), ("done", "stop", "done")]


async def test_system_prompt_and_history_are_sent():
    provider = ScriptedProvider(["one", "two"])
    session = ChatSession(provider, tools=[], system="Be brief.")
    await session.send("first")
    result = await session.send("second")
    assert result.text == "two"
    assert [(m.role, m.content) for m in provider.requests[1].messages] == [
        ("system", "Be brief."),
        ("user", "first"),
        ("assistant", "one"),
        ("user", "second"),
    ]
    session.clear()
    assert session.history == []


async def test_unknown_tool_invalid_arguments_and_raising_tool_reach_the_model():
    @tool
    def explode() -> str:
        """Always fails."""
        raise RuntimeError("kaboom")

    provider = ScriptedProvider([[ToolCall("nope", {}), ToolCall("add", {"a": "x"}), ToolCall("explode")], ["sorry"]])
    events = await collect(ChatSession(provider, tools=[add, explode]), "go")
    check_invariants(events)
    results = {e[1]: e[2:] for e in brief(events) if e[0] == "tool_result"}
    assert results == {
        "call_1": ("error", "unknown tool 'nope'"),
        "call_2": (
            "error",
            "invalid arguments: a: Input should be a valid integer, unable to parse string as an integer; b: Field required",
        ),
        "call_3": ("error", "RuntimeError: kaboom"),
    }
    tool_messages = [m.content for m in provider.requests[1].messages if m.role == "tool"]
    assert tool_messages[0] == "Error (error): unknown tool 'nope'"
    assert events[-1].reason == "stop"


async def test_invalid_json_arguments_from_the_backend_become_a_tool_error():
    from streamchat.providers.base import ToolCallPart

    provider = ScriptedProvider([[ToolCallPart(call_id="x", name="add", invalid_args='{"a": 1,')], ["ok"]])
    events = await collect(ChatSession(provider, tools=[add]), "go")
    assert ("tool_result", "x", "error", 'invalid arguments: {"a": 1,') in brief(events)


async def test_provider_failure_is_an_error_event_then_done_error():
    def failing(request):
        async def gen():
            yield "partial"
            raise BackendStreamError("the connection dropped", code="stream_broken")

        return gen()

    session = ChatSession(ScriptedProvider([failing]), tools=[])
    events = await collect(session, "hi")
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("token", "partial"),
        ("error", "stream_broken", "the connection dropped"),
        ("done", "error", "partial"),
    ]
    assert [(m.role, m.content, m.interrupted) for m in session.history] == [
        ("user", "hi", False),
        ("assistant", "partial", True),
    ]
    # The session stays usable.
    session.provider.turns.append("again")
    assert (await session.send("retry")).text == "again"


async def test_exhausted_script_is_a_clear_error():
    events = await collect(ChatSession(ScriptedProvider([]), tools=[]), "hi")
    assert brief(events)[1][0:2] == ("error", "script_exhausted")
    assert events[-1].reason == "error"


async def test_max_turns_runs_the_last_tools_then_stops():
    provider = ScriptedProvider([[ToolCall("add", {"a": 1, "b": 2})]] * 3)
    events = await collect(ChatSession(provider, tools=[add], max_turns=2), "loop")
    check_invariants(events)
    assert [e[0] for e in brief(events)] == [
        "thinking",
        "tool_call",
        "tool_result",
        "thinking",
        "tool_call",
        "tool_result",
        "done",
    ]
    assert events[-1].reason == "max_turns"
    assert len(provider.requests) == 2


async def test_length_finish_reason():
    from streamchat.providers.base import FinishDelta

    events = await collect(ChatSession(ScriptedProvider([["cut", FinishDelta(reason="length")]]), tools=[]), "hi")
    assert events[-1].reason == "length"


async def test_second_message_while_busy_is_refused():
    gate = asyncio.Event()

    async def slow(request):
        yield "a"
        await gate.wait()
        yield "b"

    session = ChatSession(ScriptedProvider([slow]), tools=[])
    stream = session.stream("one")
    first = await anext(stream)
    assert session.busy
    with pytest.raises(SessionBusyError):
        await anext(session.stream("two"))
    with pytest.raises(SessionBusyError):
        session.clear()
    gate.set()
    rest = [first] + [e async for e in stream]
    assert rest[-1].text == "ab"
    assert not session.busy


async def test_empty_message_is_a_usage_error():
    with pytest.raises(UsageError):
        await anext(ChatSession(ScriptedProvider([]), tools=[]).stream("   "))


async def test_cancel_during_tokens_keeps_the_partial_answer_marked_interrupted():
    forever = asyncio.Event()

    async def endless(request):
        yield "Once "
        yield "upon"
        await forever.wait()
        yield "never"

    provider = ScriptedProvider([endless])
    session = ChatSession(provider, tools=[])
    events = []
    async for event in session.stream("story"):
        events.append(event)
        if event.type == "token" and event.content == "upon":
            assert session.cancel()
    check_invariants(events)
    assert brief(events) == [STATUS, ("token", "Once "), ("token", "upon"), ("done", "cancelled", "Once upon")]
    assert provider.cancellations == 1
    assert [(m.role, m.content, m.interrupted) for m in session.history] == [
        ("user", "story", False),
        ("assistant", "Once upon", True),
    ]
    assert not session.cancel()  # nothing running any more


async def test_cancel_during_a_tool_cancels_it_and_records_results():
    seen: list[str] = []

    @tool
    async def wait_forever() -> str:
        """Never finishes on its own."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "unreachable"

    @tool
    async def announce(report: ProgressReporterT) -> str:
        """Reports, then waits."""
        await report("waiting", percent=10)
        await asyncio.Event().wait()
        return "unreachable"

    provider = ScriptedProvider([[ToolCall("wait_forever"), ToolCall("announce")]])
    session = ChatSession(provider, tools=[wait_forever, announce])
    events = []
    async for event in session.stream("go"):
        events.append(event)
        if event.type == "tool_progress" and event.message == "waiting":
            session.cancel()
    check_invariants(events)
    assert seen == ["cancelled"]
    results = [(e.call_id, e.status) for e in events if e.type == "tool_result"]
    assert sorted(results) == [("call_1", "cancelled"), ("call_2", "cancelled")]
    assert events[-1].reason == "cancelled"
    history = session.history
    assert history[1].role == "assistant" and history[1].interrupted
    assert [m.content for m in history if m.role == "tool"] == ["Error (cancelled): cancelled"] * 2


async def test_leaving_the_stream_early_cancels_the_turn():
    forever = asyncio.Event()

    async def endless(request):
        yield "x"
        await forever.wait()

    provider = ScriptedProvider([endless, endless])
    session = ChatSession(provider, tools=[])
    async with contextlib.aclosing(session.stream("hi")) as stream:
        async for event in stream:
            if event.type == "token":
                break
    assert provider.cancellations == 1
    assert not session.busy
    assert session.history[-1].interrupted

    # A plain `break` leaves closing to the event loop's async-generator finalizer.
    async for event in session.stream("again"):
        if event.type == "token":
            break
    for _ in range(100):
        if not session.busy:
            break
        await asyncio.sleep(0)
    assert not session.busy and provider.cancellations == 2


async def test_a_slow_consumer_holds_the_turn_back_at_the_high_water_mark():
    """The turn stops once `QUEUE_HIGH_WATER` events wait for the consumer, and goes on when it has read half."""
    produced = 0

    async def fast_model(request):
        nonlocal produced
        for i in range(1000):
            produced += 1
            yield f"t{i} "

    session = ChatSession(ScriptedProvider([fast_model]), tools=[])
    behind = []  # per token read: deltas the model has produced that the consumer has not read yet
    async with contextlib.aclosing(session.stream("go")) as stream:
        async for event in stream:
            for _ in range(3):  # a slow consumer: the turn runs as far as it is let
                await asyncio.sleep(0)
            if event.type == "token":
                behind.append(produced - (event.seq - 1))  # seq 1 is the "Thinking…" status
    assert event.type == "done" and len(behind) == 1000
    steady = behind[:700]  # before the model's last deltas
    assert max(steady) == QUEUE_HIGH_WATER
    assert min(steady) == QUEUE_HIGH_WATER // 2 + 1
    assert behind[-1] == 0


async def test_consume_takes_the_events_that_come_while_the_stream_waits_and_the_order_is_kept():
    """`stream(consume=…)`: what it takes is not yielded; consumed and yielded events together are the turn's, in order."""
    provider = ScriptedProvider([[ToolCall("lookup", {"key": "k"})], ["Hel", "lo"]], token_delay=0.001)
    plain = await collect(ChatSession(provider, tools=[lookup], session_id="s"), "go")

    provider = ScriptedProvider([[ToolCall("lookup", {"key": "k"})], ["Hel", "lo"]], token_delay=0.001)
    session = ChatSession(provider, tools=[lookup], session_id="s")
    seen: list[tuple[str, object]] = []

    def consume(event):
        if event.type in ("token", "tool_progress"):
            seen.append(("consumed", event))
            return True
        return False

    async with contextlib.aclosing(session.stream("go", consume=consume)) as stream:
        async for event in stream:
            seen.append(("yielded", event))
    assert brief([event for _, event in seen]) == brief(plain)
    assert [event.seq for _, event in seen] == list(range(1, len(plain) + 1))
    assert {event.type for how, event in seen if how == "consumed"} == {"token", "tool_progress"}
    assert {event.type for how, event in seen if how == "yielded"} == {"thinking", "tool_call", "tool_result", "done"}
    assert seen[-1][1].type == "done" and seen[-1][1].text == "Hello"


async def test_consume_is_not_called_while_the_consumer_is_busy():
    """Events that come while the consuming task is away (not waiting for the next one) are queued and yielded."""

    async def model(request):
        await asyncio.sleep(0.01)  # the stream waits
        for text in ("a", "b", "c"):  # b and c right after a: the stream's task has not run yet
            yield text
        await asyncio.sleep(0.2)  # the stream waits again
        yield "d"

    session = ChatSession(ScriptedProvider([model]), tools=[])
    seen: list[tuple[str, int]] = []

    def consume(event):
        seen.append(("offered", event.seq))
        return event.type == "token" and event.content != "a"

    async with contextlib.aclosing(session.stream("go", consume=consume)) as stream:
        async for event in stream:
            seen.append(("yielded", event.seq))
            if event.type == "token":
                await asyncio.sleep(0.02)  # away
    assert seen == [
        ("offered", 1),  # the status: declined
        ("yielded", 1),
        ("offered", 2),  # "a": declined
        ("yielded", 2),
        ("yielded", 3),  # "b" and "c": queued behind "a"
        ("yielded", 4),
        ("offered", 5),  # "d": taken
        ("offered", 6),  # done: declined
        ("yielded", 6),
    ]


async def test_an_error_in_consume_ends_the_stream_with_it_and_the_turn_is_cancelled():
    session = ChatSession(ScriptedProvider([["a", "b", "c"]], token_delay=0.001), tools=[])
    calls = []

    def consume(event):
        if event.type != "token":
            return False
        calls.append(event.seq)
        raise ValueError("the client's write failed")

    with pytest.raises(ValueError, match="the client's write failed"):
        async with contextlib.aclosing(session.stream("go", consume=consume)) as stream:
            async for _ in stream:
                pass
    assert calls == [2]  # called once, then no more
    assert session.history[-1].interrupted and session.history[-1].content == "a"


async def test_send_returns_a_chat_result():
    provider = ScriptedProvider([[ToolCall("add", {"a": 20, "b": 22})], ["42"]])
    result = await ChatSession(provider, tools=[add]).send("sum")
    assert result.text == "42" and result.reason == "stop"
    assert [(c.tool, c.status, c.result) for c in result.tool_calls] == [("add", "ok", 42)]
    assert "text='42'" in repr(result) and "add:ok" in repr(result)
    json.loads(result.model_dump_json())


# A forward-referenced annotation, resolved through the module globals by get_type_hints.
from streamchat import ProgressReporter as ProgressReporterT  # noqa: E402


async def test_cancelling_twice_still_cancels_the_tools_cleanly():
    cleaned: list[str] = []

    @tool
    async def slow_cleanup(report: ProgressReporterT) -> str:
        """Takes a moment to clean up when cancelled."""
        await report("working")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # e.g. closing a connection
            cleaned.append("done")
            raise
        return "unreachable"

    session = ChatSession(ScriptedProvider([[ToolCall("slow_cleanup")]]), tools=[slow_cleanup])
    events = []
    async for event in session.stream("go"):
        events.append(event)
        if event.type == "tool_progress":
            assert session.cancel()
            assert not session.cancel()
    check_invariants(events)
    assert cleaned == ["done"]
    assert [(e.status, e.error) for e in events if e.type == "tool_result"] == [("cancelled", "cancelled")]
