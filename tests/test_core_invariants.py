"""Property test: the event guarantees (docs/architecture.md) hold for any scripted conversation."""

from __future__ import annotations

import asyncio

from core_helpers import check_invariants, collect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat import ChatSession, Progress, ScriptedProvider, ToolCall, tool
from streamchat.providers.base import NoticeDelta, ThinkingDelta, UsageDelta


@tool
def echo(text: str) -> str:
    """Return the text."""
    return text


@tool
async def steps(n: int):
    """Yield n progress reports."""
    for i in range(n):
        yield Progress(f"step {i}", percent=100 * i / max(n, 1))
        await asyncio.sleep(0)
    yield n


@tool
def fail() -> str:
    """Always raises."""
    raise ValueError("no")


texts = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FFF), max_size=12)
tool_calls = st.one_of(
    st.builds(lambda t: ToolCall("echo", {"text": t}), texts),
    st.builds(lambda n: ToolCall("steps", {"n": n}), st.integers(0, 4)),
    st.just(ToolCall("fail")),
    st.just(ToolCall("missing", {"x": 1})),
    st.just(ToolCall("steps", {"n": "many"})),
)
items = st.one_of(
    texts,
    tool_calls,
    st.builds(lambda t: ThinkingDelta(text=t), texts),
    st.just(UsageDelta(prompt_tokens=3, completion_tokens=2)),
    st.just(NoticeDelta(message="skipped a malformed line")),
)
responses = st.lists(st.lists(items, max_size=8), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=responses, max_turns=st.integers(1, 4))
def test_every_turn_keeps_the_event_guarantees(script, max_turns):
    async def run():
        session = ChatSession(ScriptedProvider(script), tools=[echo, steps, fail], max_turns=max_turns)
        events = await collect(session, "go")
        check_invariants(events)
        done = events[-1]
        if len(script) < max_turns and all(any(isinstance(i, ToolCall) for i in r) for r in script):
            assert done.reason == "error"  # the script ran out while the model still wanted tools
        history = session.history
        assert history[0].content == "go"
        tool_ids = [c.call_id for m in history if m.role == "assistant" for c in m.tool_calls]
        assert tool_ids == [m.tool_call_id for m in history if m.role == "tool"]

    asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(script=responses, cancel_after=st.integers(1, 12))
def test_cancelling_at_any_point_keeps_the_event_guarantees(script, cancel_after):
    async def run():
        session = ChatSession(ScriptedProvider(script), tools=[echo, steps, fail], max_turns=4)
        events = []
        async for event in session.stream("go"):
            events.append(event)
            if len(events) == cancel_after:
                session.cancel()
        check_invariants(events)
        if events[-1].reason == "cancelled":
            assert any(m.interrupted for m in session.history)

    asyncio.run(run())
