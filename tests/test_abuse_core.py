"""Abuse tests of the core (issue 15): inputs an attacker or a prompt injection controls.

- the calculator refuses every payload that would make CPython compute for ever, before
  computing, and fuzzing finds no input that raises anything but `ToolError`;
- sync tools run in a bounded pool of their own, so stuck tools starve neither DNS
  lookups (the loop's default executor) nor other tools;
- the demo model's matching is linear in the message's length;
- text that cannot be encoded (lone surrogates) does not poison a session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import itertools
import json
import math
import threading
import time

import pytest
from backends.helpers import FAST
from backends.replay import ReplayServer, Reply
from backends.transcripts import openai_chunk, openai_usage, sse, tool_fragment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat import (
    ChatResult,
    ChatSession,
    DemoProvider,
    OpenAIProvider,
    ScriptedProvider,
    Settings,
    ToolCall,
    ToolError,
    UsageError,
    calculate,
    tool,
)
from streamchat.messages import Message
from streamchat.providers import demo
from streamchat.providers.base import ModelRequest
from streamchat.tools import BUILTIN_TOOLS
from streamchat.tools.calculator import MAX_ROUND_DIGITS, evaluate

SSE = "text/event-stream"

# -- the calculator --------------------------------------------------------------------------

PAYLOADS = [
    ("round(1, -10**1000)", f"round() takes from -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS} digits"),
    ("round(2**4000, -10**7)", "round() takes from"),
    ("round(1.5, 10**1000)", "round() takes from"),
    ("round(1, -(2**4095))", "round() takes from"),
    ("round(7, 0.5)", "round() takes a whole number of digits"),
    ("9**9**9", "the exponent 387420489 is too large"),
    ("2**(2**4000)", "the exponent (an integer of about 1205 digits) is too large"),
    ("(9**999)**999", "the result is too large"),
    ("(2**4000) * (2**4000)", "the result is too large"),
    ("(-3)**100000", "the result is too large"),
    ("2.0**100000", "the result is too large"),
    ("(10**1200) ** 0.5", "the result is too large"),
    ("10**1200 / 1e-300", "the result is too large"),
    ("1 << 10**9", "not allowed in a calculation: '1 << 10**9'"),
    ("2 ** 10 >> 1", "not allowed in a calculation"),
    ("factorial(10**6)", "not allowed in a calculation: 'factorial(10**6)'"),
    ("comb(10**6, 10**5)", "not allowed in a calculation"),
    ("perm(10**6)", "not allowed in a calculation"),
    ("pow(2, 10**9, 7)", "not allowed in a calculation"),
    ("int('9' * 5000)", "not allowed in a calculation"),
    ("str(10**1000)", "not allowed in a calculation"),
    ("'9' * 10**9", "only numbers are allowed, not '9'"),
    ("sqrt(2**4000)", "sqrt() cannot take (an integer of about 1205 digits): int too large to convert to float"),
    ("exp(10**1000)", "exp() cannot take (an integer of about 1001 digits)"),
    ("sin(10**400)", "sin() cannot take (an integer of about 401 digits)"),
    ("floor(1e309)", "floor() cannot take inf"),
    ("~" * 499 + "1", "not allowed in a calculation: '~~~~"),
    ("-" * 499 + "1", "the expression is nested too deeply"),
    ("+".join(["1"] * 250), "the expression is nested too deeply"),
    ("(" * 240 + "1" + ")" * 240, "not an arithmetic expression"),
    ("9" * 501, "the expression is longer than 500 characters"),
    ("[1] * 10**9", "not allowed in a calculation"),
    ("(1).__class__", "not allowed in a calculation"),
]


@pytest.mark.timeout(60)  # before the fix, round(1, -10**1000) never returns
def test_calculator_payloads_are_refused_before_any_big_computation():
    for expression, message in PAYLOADS:
        with pytest.raises(ToolError) as info:
            evaluate(expression)
        assert message in info.value.message, expression
    # The refusal path computes nothing big. The fastest of a few runs of each payload is
    # its cost without scheduling noise (the machine is shared); the slowest payload
    # must still be far under the 50 ms.
    slowest = 0.0
    for expression, _ in PAYLOADS:
        fastest = math.inf
        for _ in range(5):
            began = time.perf_counter()
            with pytest.raises(ToolError):
                evaluate(expression)
            fastest = min(fastest, time.perf_counter() - began)
        slowest = max(slowest, fastest)
    assert slowest < 0.050


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("sqrt(-1)", "sqrt() cannot take -1: math domain error"),
        ("log(0)", "log() cannot take 0: math domain error"),
        ("log(-1, 2)", "log() cannot take -1, 2: math domain error"),
        ("log(2, 1)", "log() cannot take 2, 1: float division by zero"),
        ("log(1, 1)", "log() cannot take 1, 1: float division by zero"),
        ("log10(0)", "log10() cannot take 0: math domain error"),
        ("exp(1000)", "exp() cannot take 1000: math range error"),
        ("abs(1, 2)", "abs() cannot take 1, 2"),
        ("round(1e309)", "round() cannot take inf: cannot convert float infinity to integer"),
    ],
)
def test_math_domain_errors_are_clean_tool_errors(expression, message):
    with pytest.raises(ToolError) as info:
        evaluate(expression)
    assert info.value.message == message or info.value.message.startswith(message)


async def test_a_calculator_payload_is_a_clean_tool_error_in_a_turn():
    session = ChatSession(
        ScriptedProvider([[ToolCall("calculate", {"expression": "round(1, -10**1000)"}, call_id="c")], ["Refused."]])
    )
    result = await session.send("round it")
    [call] = result.tool_calls
    assert (call.status, call.error) == (
        "error",
        f"round() takes from -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS} digits, not (an integer of about 1001 digits)",
    )
    assert result.text == "Refused."


# Fuzzing. Expressions are built from calculator-like pieces (so most parse) and from any
# text (so the parser's refusals are covered too). Every evaluation ends with a number or
# a ToolError; the bound on its time is generous (a normal evaluation takes well under a
# millisecond, a pathological one minutes), so scheduling noise cannot fail it.
FUZZ_TIME_BOUND = 2.0

_NAMES = ["sqrt", "exp", "log", "log10", "log2", "sin", "cos", "tan", "abs", "round", "floor", "ceil"]
_ATOMS = ["pi", "e", "tau", "nan", "inf", "1e309", "1e-320", "10**1000", "2**4096", "2**4095", "0", "1", "-1", "0.5"]
_OPERATORS = ["+", "-", "*", "/", "//", "%", "**", "^", "×", "÷", "<<", ">>", "&", "|", "@", "<", "=="]

leaves = st.one_of(
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(_ATOMS),
)


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(_OPERATORS), children).map(lambda t: f"({t[0]}){t[1]}({t[2]})"),
        st.tuples(st.sampled_from(["-", "+", "~", "not "]), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(
            st.sampled_from([*_NAMES, "factorial", "comb", "pow", "int", "str", "max"]),
            st.lists(children, max_size=3),
        ).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
    )


expressions = st.one_of(
    st.recursive(leaves, _extend, max_leaves=24),
    st.lists(st.sampled_from([*_NAMES, *_ATOMS, *_OPERATORS, "(", ")", ",", " ", "9", ".", "_", "j"])).map("".join),
    st.text(max_size=600),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=expressions)
def test_fuzzed_expressions_give_a_number_or_a_tool_error_in_bounded_time(expression):
    began = time.perf_counter()
    try:
        value = evaluate(expression)
    except ToolError as exc:
        assert exc.message and "Traceback" not in exc.message
    else:
        assert type(value) in (int, float)
        assert not isinstance(value, float) or math.isfinite(value)
    assert time.perf_counter() - began < FUZZ_TIME_BOUND


# -- sync tools in a bounded pool of their own ------------------------------------------------


class Gate:
    """Sync tools that block until released; `all_in` is set once `expected` of them run."""

    def __init__(self, expected: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.released = threading.Event()
        self.all_in = asyncio.Event()
        self.expected = expected
        self.entered = itertools.count(1)

        @tool(timeout=60)
        def hold(n: int) -> int:
            """Block until the test releases the gate."""
            if next(self.entered) == self.expected:
                self.loop.call_soon_threadsafe(self.all_in.set)
            self.released.wait(60)
            return n

        self.hold = hold


def openai_calculation(expression: str) -> list[Reply]:
    """A backend that asks for `calculate(expression)`, then answers "Done."."""
    call = tool_fragment(0, call_id="calc", name="calculate", arguments=json.dumps({"expression": expression}))
    return [
        Reply(
            [sse(openai_chunk({"tool_calls": [call]}, finish_reason="tool_calls"), openai_usage(9, 3))],
            content_type=SSE,
        ),
        Reply([sse(openai_chunk({"content": "Done."}, finish_reason="stop"), openai_usage(20, 2))], content_type=SSE),
    ]


async def test_six_stuck_sync_tools_leave_dns_other_tools_and_an_http_backend_working(replay: ReplayServer):
    # The loop's default executor as on the 2-core server (min(32, cores + 4) = 6
    # threads): before the fix, six stuck sync tools filled it, and getaddrinfo, which
    # asyncio runs there, waited for ever, so no backend could be reached.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(6))
    gate = Gate(expected=6)
    stuck = ChatSession(
        ScriptedProvider([[ToolCall("hold", {"n": n}) for n in range(6)], ["Released."]]),
        tools=[gate.hold],
        settings=Settings(tool_threads=8),
    )
    replay.reset(*openai_calculation("6 * 7"))
    # `localhost`, not 127.0.0.1: connecting needs a getaddrinfo in the default executor.
    backend = OpenAIProvider("test-model", base_url=f"http://localhost:{replay.port}/v1", settings=FAST)
    working = ChatSession(backend, tools=[calculate], settings=Settings(tool_threads=8))
    try:
        held = asyncio.create_task(stuck.send("hold six"))
        async with asyncio.timeout(20):
            await gate.all_in.wait()
        async with asyncio.timeout(20):
            result = await working.send("6 * 7?")
        assert result.text == "Done."
        [call] = result.tool_calls
        assert (call.tool, call.status, call.result["result"]) == ("calculate", "ok", 42)
        assert len(replay.requests) == 2
        assert not held.done()
    finally:
        gate.released.set()
        await working.aclose()
    released = await held
    assert released.text == "Released."
    assert [(c.status, c.result) for c in released.tool_calls] == [("ok", n) for n in range(6)]


async def test_a_call_waiting_for_a_free_tool_thread_times_out_cleanly_and_never_runs():
    gate = Gate(expected=2)
    ran: list[str] = []

    @tool
    def note(text: str) -> str:
        """Record that it ran."""
        ran.append(text)
        return text

    session = ChatSession(
        ScriptedProvider(
            [
                [
                    ToolCall("hold", {"n": 1}, call_id="h1"),
                    ToolCall("hold", {"n": 2}, call_id="h2"),
                    ToolCall("note", {"text": "first"}, call_id="n1"),
                    ToolCall("calculate", {"expression": "1 + 1"}, call_id="c1"),
                ],
                ["Timed out."],
                [ToolCall("note", {"text": "second"}, call_id="n2")],
                ["Ran."],
            ]
        ),
        tools=[gate.hold, note, calculate],
        tool_timeout=0.5,
        settings=Settings(tool_threads=2),
    )
    waited = "timed out after 0.5 s waiting for a free tool thread (all 2 were busy)"
    outcomes = {}
    try:
        async for event in session.stream("fill the pool"):
            if event.type == "tool_result":
                outcomes[event.call_id] = (event.status, event.error if event.status != "ok" else event.result)
                if set(outcomes) == {"n1", "c1"}:
                    gate.released.set()  # both waiting calls gave up: let the pool go
    finally:
        gate.released.set()
    assert outcomes == {"n1": ("timeout", waited), "c1": ("timeout", waited), "h1": ("ok", 1), "h2": ("ok", 2)}
    # The pool is free again; the call that timed out while waiting never ran.
    result = await session.send("again")
    assert [(c.status, c.result) for c in result.tool_calls] == [("ok", "second")]
    assert ran == ["second"]
    assert session.tool_threads.size == 2


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def test_sync_tools_see_the_callers_context_variables_as_with_to_thread():
    @tool
    def whose() -> str:
        """The request this call belongs to."""
        return REQUEST_ID.get()

    REQUEST_ID.set("r-42")
    session = ChatSession(ScriptedProvider([[ToolCall("whose")], ["ok"]]), tools=[whose])
    assert [c.result for c in (await session.send("whose?")).tool_calls] == ["r-42"]


# -- the demo model's matching ------------------------------------------------------------------

# Texts that made the demo's patterns rescan the rest of the message from every position
# (quadratic): long runs of spaces or parentheses, "time in"/"weather in" without an end.
ADVERSARIAL = {
    "spaces": " ",
    "parentheses": "(",
    "time in": "time in ",
    "time there": "weather in x! time ",
    "weather in": "weather in a" + " " * 40 + "# ",
    "arithmetic": "1+" + "(" * 40 + " " * 40,
    "closing parentheses": "1+1" + ")" * 200,
}


def adversarial(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


async def answer_seconds(message: str) -> float:
    """The fastest of a few runs of the demo model's whole answer to `message` (no token delay)."""
    request = ModelRequest(
        messages=(Message(role="user", content=message),), tools=tuple(t.definition for t in BUILTIN_TOOLS)
    )
    fastest = math.inf
    for _ in range(5):
        began = time.perf_counter()
        async for _ in DemoProvider(token_delay=0).stream(request):
            pass
        elapsed = time.perf_counter() - began
        fastest = min(fastest, elapsed)
        if elapsed > 1.0:
            break  # pathological: one run says enough
    return fastest


@pytest.mark.parametrize("unit", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
async def test_a_64_kib_adversarial_message_answers_fast_and_linearly(unit):
    small = await answer_seconds(adversarial(unit, 8 * 1024))
    large = await answer_seconds(adversarial(unit, 64 * 1024))
    assert large < 0.050
    assert large <= 8 * small  # 8 times the text, at most 8 times the time


@pytest.mark.parametrize("unit", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
async def test_the_demo_patterns_are_linear_even_without_the_cap(unit, monkeypatch):
    # Looking at the first MAX_EXAMINED characters only bounds the work; the patterns
    # must not depend on it. Linear matching of 64 KiB takes milliseconds, quadratic
    # matching seconds: the bound is generous.
    monkeypatch.setattr(demo, "MAX_EXAMINED", 1 << 20)
    assert await answer_seconds(adversarial(unit, 64 * 1024)) < 1.0


async def test_the_demo_model_still_understands_its_questions():
    provider = DemoProvider(token_delay=0)
    plans = {
        "What's the weather in Seoul, and what time is it there?": [
            ("get_weather", {"city": "Seoul"}),
            ("get_current_time", {"timezone": "Seoul"}),
        ],
        "What's the weather like in New York?": [("get_weather", {"city": "New York"})],
        "time in Europe/Paris and weather for Rio de Janeiro!": [
            ("get_weather", {"city": "Rio de Janeiro"}),
            ("get_current_time", {"timezone": "Europe/Paris"}),
        ],
        "What time is it in Port-au-Prince?": [("get_current_time", {"timezone": "Port-au-Prince"})],
        "what time is it": [("get_current_time", {"timezone": "UTC"})],
        "What is 12 * (3 + 4)?": [("calculate", {"expression": "12 * (3 + 4)"})],
        "Compute -(2 + 3) * 4).": [("calculate", {"expression": "-(2 + 3) * 4"})],
        "and ((1 + 2)": [("calculate", {"expression": "(1 + 2)"})],
        "Tell me a joke": [],
    }
    for text, expected in plans.items():
        assert [(c.name, c.args) for c in provider._plan(text)] == expected, text


# -- text that cannot be encoded ------------------------------------------------------------------

LONE = "\ud800"
REPLACED = "\ufffd"


def utf8_json(value: object) -> bytes:
    """`value` as UTF-8 JSON, as a backend request or a server answer encodes it (fails on a lone surrogate)."""
    return json.dumps(value, ensure_ascii=False).encode()


@tool
def broken_text(query: str) -> dict[str, object]:
    """Answer with text that holds lone surrogates, as a buggy tool might."""
    return {"echo": query, f"key{LONE}": [f"a{LONE}b", ("\udc00",)], "emoji": "\ud83d\ude00"}


async def test_a_message_that_cannot_be_encoded_is_refused_and_the_session_goes_on():
    provider = ScriptedProvider(["Fine."])
    session = ChatSession(provider, tools=[])
    with pytest.raises(UsageError, match=r"surrogate code point U\+D800 at character 3 .* send UTF-8 text"):
        await session.send(f"hi {LONE} there")
    assert (session.busy, session.history, provider.requests) == (False, [], [])
    assert (await session.send("hi there")).text == "Fine."


async def test_lone_surrogates_from_a_backend_or_a_tool_do_not_poison_a_scripted_session():
    provider = ScriptedProvider(
        [
            [f"thinking{LONE}", ToolCall("broken_text", {"query": f"q{LONE}"}, call_id=f"c{LONE}")],
            [f"x{LONE}y"],
            ["Still here."],
        ]
    )
    session = ChatSession(provider, tools=[broken_text])
    first = await session.send("go")
    assert first.reason == "stop" and first.text == f"thinking{REPLACED}x{REPLACED}y"
    [call] = first.tool_calls
    assert (call.call_id, call.args, call.status) == (f"c{REPLACED}", {"query": f"q{REPLACED}"}, "ok")
    assert call.result == {
        "echo": f"q{REPLACED}",
        f"key{REPLACED}": [f"a{REPLACED}b", (REPLACED,)],
        "emoji": "\U0001f600",  # a well-formed pair becomes its character
    }
    ChatResult.model_validate_json(first.model_dump_json())  # what `POST chat` answers
    utf8_json([m.model_dump(mode="json") for m in session.history])
    second = await session.send("again")
    assert (second.reason, second.text) == ("stop", "Still here.")
    utf8_json([m.model_dump(mode="json") for m in provider.requests[-1].messages])


async def test_lone_surrogates_do_not_poison_an_openai_session(replay: ReplayServer):
    # A backend's JSON may escape a lone surrogate; json.loads turns "\ud800" into one.
    ask = tool_fragment(0, call_id="t1", name="broken_text", arguments=json.dumps({"query": f"q{LONE}"}))
    replay.reset(
        Reply([sse(openai_chunk({"tool_calls": [ask]}, finish_reason="tool_calls"))], content_type=SSE),
        Reply([sse(json.dumps(openai_chunk({"content": f"x{LONE}y"}, finish_reason="stop")))], content_type=SSE),
        Reply([sse(openai_chunk({"content": "Still here."}, finish_reason="stop"))], content_type=SSE),
    )
    session = ChatSession(OpenAIProvider("test-model", base_url=f"{replay.url}/v1", settings=FAST), tools=[broken_text])
    try:
        with pytest.raises(UsageError, match="surrogate code point U\\+D800"):
            await session.send(f"hi {LONE}")
        assert replay.requests == []
        first = await session.send("go")
        assert (first.reason, first.text, first.errors) == ("stop", f"x{REPLACED}y", ())
        assert first.tool_calls[0].args == {"query": f"q{REPLACED}"}
        second = await session.send("again")
        assert (second.reason, second.text, second.errors) == ("stop", "Still here.", ())
    finally:
        await session.aclose()
    # Every request was valid UTF-8 JSON; the repaired text went to the backend.
    bodies = [request.body.decode("utf-8") for request in replay.requests]
    assert len(bodies) == 3
    last = json.loads(bodies[-1])["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "user"]
    assert json.loads(last[1]["tool_calls"][0]["function"]["arguments"]) == {"query": f"q{REPLACED}"}
    assert json.loads(last[2]["content"])[f"key{REPLACED}"] == [f"a{REPLACED}b", [REPLACED]]
    assert last[3]["content"] == f"x{REPLACED}y"
