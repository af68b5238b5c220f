"""`DemoProvider` (`provider="demo"`): a small rule-based stand-in for an LLM.

It recognises weather, time and arithmetic questions, calls the matching built-in tool
(several at once when a message asks for several), and streams an answer built from the
tool results. It is not a language model, it says so in every answer, and it is only
used when asked for or when no real backend is configured.

It runs on the event loop, so its matching must stay cheap for any message: it looks at
the first `MAX_EXAMINED` characters only, and every pattern runs in linear time (words
matched possessively, place names of a few words, no pattern that rescans the rest of
the text from every position).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from ..messages import Message
from .base import FinishDelta, ModelRequest, Provider, ProviderDelta, TextDelta, ToolCallPart, UsageDelta

__all__ = ["DEMO_NOTICE", "DemoProvider"]

DEMO_NOTICE = "(Answered by streamchat's offline demo model, not an LLM: see README → Backends to connect one.)"

MAX_EXAMINED = 4096
"""Characters of a message the demo model looks at; the rest is ignored."""

# A place: up to six words, taken possessively (so no word is rescanned), shortest first.
# A place ends at punctuation, at the end, or before "and" / "there".
_CITY_WORD = r"[^\s?.!,;]++"
_ZONE_WORD = r"[A-Za-z_/'-]++"
_WEATHER = re.compile(
    rf"\bweather\b(?:\s++(?:like\s++)?(?:in|for|at)\s++(?P<city>{_CITY_WORD}(?:\s++{_CITY_WORD}){{0,5}}?))?"
    r"\s*+(?:[?.!,;]|$|(?<= )and\b)",
    re.I,
)
_TIME = re.compile(
    rf"\btime\b(?:\s++is\s++it)?(?:\s++(?:in|at)\s++(?P<zone>{_ZONE_WORD}(?: ++{_ZONE_WORD}){{0,5}}?))?"
    r"\s*+(?:[?.!,;]|$|(?<= )(?:and|there)\b)",
    re.I,
)
_SENTENCE_END = re.compile(r"[?.!]")
_TIME_WORD = re.compile(r"\btime\b", re.I)
_THERE_WORD = re.compile(r"\bthere\b", re.I)
_MATH = re.compile(r"\d[\d\s.+\-*/×÷()%^]*")
_OPERATOR = re.compile(r"\d\s*+(?:\*\*|//|[+\-*/×÷%^])\s*+[-+(]*+\s*+\d")


class DemoProvider(Provider):
    """The offline demo model. `token_delay` spaces out the streamed words (seconds)."""

    name = "demo"

    def __init__(self, model: str | None = None, *, token_delay: float = 0.02) -> None:
        super().__init__(model or "offline-demo")
        self.token_delay = token_delay

    def describe(self) -> str:
        return "the offline demo model (rule-based, not an LLM)"

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        available = {t.name for t in request.tools}
        last = request.messages[-1] if request.messages else Message(role="user", content="")
        if last.role == "tool":
            text = self._answer_from_results(request.messages)
        else:
            calls = [c for c in self._plan(last.content) if c.name in available]
            if calls:
                for call in calls:
                    yield call
                yield FinishDelta(reason="tool_calls")
                return
            text = self._fallback(available)
        words = re.findall(r"\S+\s*|\s+", f"{text}\n\n{DEMO_NOTICE}")
        for word in words:
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield TextDelta(text=word)
        yield UsageDelta(
            prompt_tokens=sum(len(m.content.split()) for m in request.messages), completion_tokens=len(words)
        )
        yield FinishDelta(reason="stop")

    # -- understanding ----------------------------------------------------------------

    def _plan(self, text: str) -> list[ToolCallPart]:
        text = text[:MAX_EXAMINED]
        calls: list[ToolCallPart] = []
        city = None
        if (weather := _WEATHER.search(text)) is not None:
            city = (weather.group("city") or "").strip()
            if city:
                calls.append(self._call("get_weather", {"city": city}))
        if (time := _TIME.search(text)) is not None:
            zone = (time.group("zone") or "").strip()
            if city and _asks_time_there(text):
                zone = city
            calls.append(self._call("get_current_time", {"timezone": zone or "UTC"}))
        for expression in _expressions(text):
            if _OPERATOR.search(expression):
                calls.append(self._call("calculate", {"expression": _balanced(expression)}))
                break
        return calls

    @staticmethod
    def _call(name: str, args: dict[str, Any]) -> ToolCallPart:
        return ToolCallPart(call_id=f"demo_{uuid.uuid4().hex[:12]}", name=name, args=args)

    # -- answering ----------------------------------------------------------------------

    def _answer_from_results(self, messages: tuple[Message, ...]) -> str:
        results: list[Message] = []
        for message in reversed(messages):
            if message.role != "tool":
                break
            results.append(message)
        return " ".join(self._sentence(m) for m in reversed(results))

    @staticmethod
    def _sentence(message: Message) -> str:
        if message.content.startswith("Error ("):
            return f"The {message.tool} tool failed: {message.content.split(': ', 1)[-1]}"
        try:
            data = json.loads(message.content)
        except ValueError:
            data = message.content
        if not isinstance(data, dict):
            return f"{message.tool} returned {data}."
        if message.tool == "get_weather":
            extra = f", with wind at {data['wind_kmh']} km/h" if data.get("wind_kmh") is not None else ""
            return (
                f"The weather in {data.get('location')} is {data.get('temperature_c'):.0f}°C and "
                f"{str(data.get('conditions', '')).lower()}{extra}."
            )
        if message.tool == "get_current_time":
            return f"In {data.get('timezone')} it is {data.get('time')} on {data.get('weekday')}, {data.get('date')}."
        if message.tool == "calculate":
            return f"{data.get('expression')} = {data.get('result')}."
        return f"{message.tool} returned {data.get('summary', data)}."

    @staticmethod
    def _fallback(available: set[str]) -> str:
        if not available:
            return "I am the offline demo model and no tools are enabled, so all I can do is say hello. Hello!"
        examples = {
            "get_weather": '"What\'s the weather in Seoul?"',
            "get_current_time": '"What time is it in Tokyo?"',
            "calculate": '"What is 12 * (3 + 4)?"',
        }
        asks = ", ".join(v for k, v in examples.items() if k in available)
        return f"I am the offline demo model: I can answer questions such as {asks}."


def _asks_time_there(text: str) -> bool:
    """True if a sentence says "time" and, later, "there" (one sentence at a time: linear)."""
    for sentence in _SENTENCE_END.split(text):
        time = _TIME_WORD.search(sentence)
        if time is not None and _THERE_WORD.search(sentence, time.end()) is not None:
            return True
    return False


def _expressions(text: str) -> Iterator[str]:
    """Runs of arithmetic in `text`, each from its leading signs and parentheses.

    A run starts at a digit; its leading `-`, `+`, `(` and spaces are found by looking
    back from that digit (a pattern starting with them would rescan every run of
    parentheses or spaces from each of its positions).
    """
    previous_end = 0
    for match in _MATH.finditer(text):
        start = match.start()
        while start > previous_end and text[start - 1].isspace():
            start -= 1
        while start > previous_end and text[start - 1] in "-+(":
            start -= 1
        previous_end = match.end()
        yield text[start:previous_end].strip()


def _balanced(expression: str) -> str:
    """Trim a matched expression so its parentheses balance (a trailing ')' of prose)."""
    expression = expression.rstrip(" .")
    opened, closed = expression.count("("), expression.count(")")
    start, end = 0, len(expression)
    # Move indices rather than re-slicing and re-counting: linear in the expression's length.
    while closed > opened and end > start and expression[end - 1] == ")":
        end -= 1
        closed -= 1
        while end > start and expression[end - 1].isspace():
            end -= 1
    while opened > closed and start < end and expression[start] == "(":
        start += 1
        opened -= 1
        while start < end and expression[start].isspace():
            start += 1
    return expression[start:end]
