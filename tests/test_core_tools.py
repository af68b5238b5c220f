"""Tools: schemas from hints and docstrings, the four shapes, concurrency, cancel, pause, timeout."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading

import pytest
from core_helpers import brief, check_invariants, collect

from streamchat import ChatSession, Progress, ProgressReporter, ScriptedProvider, ToolCall, ToolDefinitionError, tool
from streamchat.tools import toolset


def test_schema_comes_from_type_hints_and_docstring():
    @tool
    def search(query: str, limit: int = 5, exact: bool = False) -> list[str]:
        """Search the notes.

        Args:
            query: Words to look for.
            limit: Most results to return.
            exact: Match whole words only.
        """
        return []

    definition = search.definition
    assert definition.name == "search"
    assert definition.description == "Search the notes."
    assert definition.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Words to look for."},
            "limit": {"type": "integer", "default": 5, "description": "Most results to return."},
            "exact": {"type": "boolean", "default": False, "description": "Match whole words only."},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    assert search("x") == []  # a Tool still calls like the function


def test_reporter_parameter_is_not_in_the_schema_and_options_apply():
    @tool(name="fetch_page", description="Fetch a page.", timeout=3)
    async def fetch(url: str, report: ProgressReporter) -> str:
        return url

    assert fetch.name == "fetch_page" and fetch.timeout == 3 and fetch.kind == "async"
    assert list(fetch.parameters["properties"]) == ["url"]
    assert fetch.reporter_param == "report"


def test_bad_tool_definitions_are_refused_clearly():
    def no_hint(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(ToolDefinitionError, match="parameter 'x' needs a type hint"):
        tool(no_hint)

    def star(*args: int) -> None: ...

    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        tool(star)

    def a(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match="two tools are named 'a'"):
        toolset([a, tool(a)])


def test_tool_kinds():
    def s() -> None: ...
    async def c() -> None: ...
    def g():  # type: ignore[no-untyped-def]
        yield 1

    async def ag():  # type: ignore[no-untyped-def]
        yield 1

    assert [tool(f).kind for f in (s, c, g, ag)] == ["sync", "async", "generator", "async_generator"]


async def test_two_calls_run_concurrently_shown_by_events():
    a_started, b_started = asyncio.Event(), asyncio.Event()

    @tool
    async def first():
        """Waits for its sibling to have started."""
        yield Progress("first started")
        a_started.set()
        await b_started.wait()  # would never return if calls ran one after the other
        yield "first done"

    @tool
    async def second():
        """Waits for its sibling to have started."""
        yield Progress("second started")
        b_started.set()
        await a_started.wait()
        yield "second done"

    provider = ScriptedProvider([[ToolCall("first"), ToolCall("second")], ["ok"]])
    events = await collect(ChatSession(provider, tools=[first, second]), "go")
    check_invariants(events)
    kinds = [(e[0], e[1]) for e in brief(events) if e[0].startswith("tool_")]
    first_result = kinds.index(("tool_result", "call_1"))
    second_result = kinds.index(("tool_result", "call_2"))
    assert kinds.index(("tool_progress", "call_1")) < min(first_result, second_result)
    assert kinds.index(("tool_progress", "call_2")) < min(first_result, second_result)


async def test_a_blocking_sync_tool_does_not_stall_the_loop():
    released = threading.Event()

    @tool
    def blocking() -> bool:
        """Blocks its thread until the async sibling releases it."""
        return released.wait(timeout=30)

    @tool
    async def releaser() -> str:
        """Runs on the loop while the sync tool blocks."""
        await asyncio.sleep(0)
        released.set()
        return "released"

    provider = ScriptedProvider([[ToolCall("blocking"), ToolCall("releaser")], ["ok"]])
    events = await collect(ChatSession(provider, tools=[blocking, releaser]), "go")
    results = {e.call_id: e.result for e in events if e.type == "tool_result"}
    assert results == {"call_1": True, "call_2": "released"}


async def test_sync_generator_and_sync_reporter_stream_progress():
    @tool
    def steps(n: int):
        """Counts in a worker thread."""
        for i in range(n):
            yield Progress(f"step {i + 1}", percent=100 * (i + 1) / n)
        yield n

    @tool
    def reporting(report: ProgressReporter) -> str:
        """Reports from a worker thread."""
        report("halfway", stage="mid", percent=50)
        return "finished"

    provider = ScriptedProvider([[ToolCall("steps", {"n": 2}), ToolCall("reporting")], ["ok"]])
    events = await collect(ChatSession(provider, tools=[steps, reporting]), "go")
    check_invariants(events)
    per_call = {}
    for e in brief(events):
        if e[0] in ("tool_progress", "tool_result"):
            per_call.setdefault(e[1], []).append(e[2:])
    assert per_call["call_1"] == [("step 1", None, 50.0), ("step 2", None, 100.0), ("ok", 2)]
    assert per_call["call_2"] == [("halfway", "mid", 50.0), ("ok", "finished")]


async def test_cancel_tool_stops_one_call_while_its_sibling_finishes():
    hung_cancelled = asyncio.Event()
    may_finish = asyncio.Event()

    @tool
    async def hang(report: ProgressReporter) -> str:
        """Hangs until cancelled."""
        await report("hanging")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            hung_cancelled.set()
            raise
        return "unreachable"

    @tool
    async def sibling(report: ProgressReporter) -> str:
        """Finishes once allowed."""
        await report("waiting")
        await may_finish.wait()
        return "sibling ok"

    provider = ScriptedProvider([[ToolCall("hang"), ToolCall("sibling")], ["ok"]])
    session = ChatSession(provider, tools=[hang, sibling])
    events = []
    reported = set()
    async for event in session.stream("go"):
        events.append(event)
        if event.type == "tool_progress":
            reported.add(event.call_id)
            if reported == {"call_1", "call_2"}:
                assert session.cancel_tool("call_1")
        if event.type == "tool_result" and event.call_id == "call_1":
            may_finish.set()
    check_invariants(events)
    assert hung_cancelled.is_set()
    results = [(e.call_id, e.status) for e in events if e.type == "tool_result"]
    assert results == [("call_1", "cancelled"), ("call_2", "ok")]
    assert events[-1].reason == "stop"
    assert not session.cancel_tool("call_1")  # already over


async def test_pause_holds_a_generator_at_its_next_progress_and_resume_releases_it():
    progressed: list[str] = []
    go_on = asyncio.Event()

    @tool
    async def stages():
        """Three stages."""
        yield Progress("stage 1", percent=33)
        await go_on.wait()
        progressed.append("after 1")
        yield Progress("stage 2", percent=66)
        progressed.append("after 2")
        yield "all done"

    session = ChatSession(ScriptedProvider([[ToolCall("stages")], ["ok"]]), tools=[stages])
    events = []
    async for event in session.stream("go"):
        events.append(event)
        if event.type == "tool_progress" and event.message == "stage 1":
            assert session.pause_tool("call_1")
            assert not session.pause_tool("call_1")  # already paused
            go_on.set()
        if event.type == "tool_progress" and event.message == "stage 2":
            for _ in range(50):  # give the tool every chance to run on if pause did not hold it
                await asyncio.sleep(0)
            assert progressed == ["after 1"]
            assert session.resume_tool("call_1")
    check_invariants(events)
    assert progressed == ["after 1", "after 2"]
    assert [e[2:4] for e in brief(events) if e[0] == "tool_progress"] == [
        ("stage 1", None),
        ("Paused", "paused"),
        ("stage 2", None),
        ("Resumed", "resumed"),
    ]


async def test_pause_holds_a_sync_tool_at_its_next_report():
    go_on = threading.Event()
    passed = threading.Event()

    @tool
    def worker(report: ProgressReporter) -> str:
        """Reports twice from a thread."""
        report("one")  # a pause that lands while this report is delivered holds the thread here…
        go_on.wait(timeout=30)
        report("two")  # …otherwise here
        passed.set()
        return "done"

    session = ChatSession(ScriptedProvider([[ToolCall("worker")], ["ok"]]), tools=[worker])
    async for event in session.stream("go"):
        if event.type == "tool_progress" and event.message == "one":
            session.pause_tool("call_1")
            go_on.set()
        if event.type == "tool_progress" and event.message == "Paused":
            assert not await asyncio.to_thread(passed.wait, 0.2)
            session.resume_tool("call_1")
    assert passed.is_set()


async def test_timeout_cancels_the_tool_and_reports_timeout():
    cancelled = asyncio.Event()

    @tool(timeout=0.05)
    async def slow() -> str:
        """Takes too long."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    events = await collect(ChatSession(ScriptedProvider([[ToolCall("slow")], ["ok"]]), tools=[slow]), "go")
    assert ("tool_result", "call_1", "timeout", "timed out after 0.05 s") in brief(events)
    assert cancelled.is_set()


async def test_session_tool_timeout_applies_to_tools_without_their_own():
    @tool
    async def slow() -> str:
        """Takes too long."""
        await asyncio.Event().wait()
        return "late"

    session = ChatSession(ScriptedProvider([[ToolCall("slow")], ["ok"]]), tools=[slow], tool_timeout=0.05)
    events = await collect(session, "go")
    assert [e.status for e in events if e.type == "tool_result"] == ["timeout"]


async def test_paused_time_does_not_count_against_the_timeout():
    go_on = asyncio.Event()

    @tool(timeout=0.3)
    async def short():
        """Quick, but paused for longer than its timeout."""
        yield Progress("started")
        await go_on.wait()
        yield Progress("held here while paused")
        yield "finished"

    session = ChatSession(ScriptedProvider([[ToolCall("short")], ["ok"]]), tools=[short])
    statuses = []
    async for event in session.stream("go"):
        if event.type == "tool_progress" and event.message == "started":
            session.pause_tool("call_1")
            go_on.set()
        if event.type == "tool_progress" and event.message == "held here while paused":
            await asyncio.sleep(0.5)
            session.resume_tool("call_1")
        if event.type == "tool_result":
            statuses.append(event.status)
    assert statuses == ["ok"]


async def test_a_sync_generator_that_fails_after_its_call_was_cancelled_leaves_no_unretrieved_error():
    started = threading.Event()
    release = threading.Event()

    @tool
    def stubborn():
        """Blocks in its thread, then fails: its call was cancelled meanwhile."""
        started.set()
        release.wait(timeout=30)
        raise RuntimeError("too late")
        yield  # a generator

    loop = asyncio.get_running_loop()
    one_thread = concurrent.futures.ThreadPoolExecutor(1)  # so that a later job runs after the tool's
    waiter = concurrent.futures.ThreadPoolExecutor(1)
    loop.set_default_executor(one_thread)
    reported = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        session = ChatSession(ScriptedProvider([[ToolCall("stubborn")], ["ok"]]), tools=[stubborn])
        events = []
        async for event in session.stream("go"):
            events.append(event)
            if event.type == "tool_call":
                await asyncio.wrap_future(waiter.submit(started.wait, 30))
                assert session.cancel_tool(event.call_id)
        assert [(e.type, getattr(e, "status", None)) for e in events if e.type == "tool_result"] == [
            ("tool_result", "cancelled")
        ]
        release.set()
        await loop.run_in_executor(None, lambda: None)  # the tool's step has failed by now
        gc.collect()  # an unretrieved error is reported when its future is collected
    finally:
        loop.set_exception_handler(None)
        one_thread.shutdown()
        waiter.shutdown()
    assert [context["message"] for context in reported] == []
