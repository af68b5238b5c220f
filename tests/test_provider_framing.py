"""The framing of streamed bodies (`streamchat.providers._framing`) and the exactness of the fast JSON path.

Every cut of a body into chunks gives the lines and events of the whole body; values read
through orjson are the ones `json.loads` gives, big integers included.
"""

from __future__ import annotations

import itertools
import json
import re

from hypothesis import given
from hypothesis import strategies as st

from streamchat.providers._framing import LineSplitter, SseDecoder, loads
from streamchat.providers.base import TextDelta, ToolCallPart, UsageDelta
from streamchat.providers.ollama import OllamaStreamParser
from streamchat.providers.openai import OpenAIStreamParser

PIECES = [b"a", b"\n", b"\r", b"\r\n", b"data: x", b"data:y", b"data", b": c", b"\n\n", b"\xe4\xb8\x96", b" ", b"id: 1"]
bodies = st.lists(st.sampled_from(PIECES), max_size=16).map(b"".join)


def cuts(body: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(p % (len(body) + 1) for p in points), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def too_long() -> Exception:
    return ValueError("too long")


@given(body=bodies, points=st.lists(st.integers(min_value=0, max_value=200), max_size=6), sse=st.booleans())
def test_lines_are_those_of_the_whole_body_however_it_is_cut(body: bytes, points: list[int], sse: bool) -> None:
    whole = re.split(rb"\r\n?|\n" if sse else rb"\n", body)
    last = whole.pop()
    splitter = LineSplitter(1 << 20, too_long, sse=sse)
    lines = [line for chunk in cuts(body, points) for line in splitter.feed(chunk)]
    assert lines == whole
    assert splitter.end() == (last if last.strip() else None)


@given(body=bodies, points=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_events_are_those_of_the_whole_body_however_it_is_cut(body: bytes, points: list[int]) -> None:
    expected, data = [], []
    lines = re.split(rb"\r\n?|\n", body)
    lines.pop()  # an event left without its blank line is dropped
    for line in lines:
        if not line:
            if data:
                expected.append(b"\n".join(data).decode("utf-8", "replace"))
            data = []
            continue
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    decoder = SseDecoder(1 << 20, lambda what: ValueError(what))
    assert [event for chunk in cuts(body, points) for event in decoder.feed(chunk)] == expected


def test_a_line_too_long_stops_after_the_lines_before_it() -> None:
    splitter = LineSplitter(4, too_long)
    assert splitter.feed(b"ab\ncdefgh\nij\n") == [b"ab"]
    assert isinstance(splitter.error, ValueError)
    assert splitter.feed(b"more\n") == []
    unfinished = LineSplitter(4, too_long)
    assert unfinished.feed(b"abc") == [] and unfinished.error is None
    assert unfinished.feed(b"de") == [] and isinstance(unfinished.error, ValueError)


def test_loads_gives_json_loads_values_where_orjson_refuses() -> None:
    for text in [b'"\\ud800"', b"NaN", b"1e400", b"\xef\xbb\xbf{}", '"\ud800"']:
        assert repr(loads(text)) == repr(json.loads(text))


def test_numbers_a_parser_uses_are_read_exactly() -> None:
    big = 2**70 + 1  # orjson alone would read it as a float
    ollama = OllamaStreamParser()
    line = json.dumps({"message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {"n": big}}}]}, "done": False})  # fmt: skip
    (call,) = ollama.feed_line(line.encode())
    assert isinstance(call, ToolCallPart) and call.args == {"n": big} and type(call.args["n"]) is int
    done = ollama.feed_line(json.dumps({"done": True, "prompt_eval_count": big, "eval_count": 3}).encode())
    assert isinstance(done[0], UsageDelta) and done[0].prompt_tokens == big
    openai = OpenAIStreamParser()
    usage = openai.feed_data(json.dumps({"choices": [], "usage": {"prompt_tokens": big, "completion_tokens": 1}}))
    assert usage == [UsageDelta(prompt_tokens=big, completion_tokens=1)]


def test_a_token_line_takes_the_fast_path_and_gives_the_same_delta() -> None:
    line = b'{"message":{"role":"assistant","content":" w\xc3\xb6rld"},"done":false}\n'
    assert OllamaStreamParser().feed_fast(line) == OllamaStreamParser().feed_line(line) == [TextDelta(text=" wörld")]
    assert OllamaStreamParser().feed_fast(b'{"done":true}\n') is None  # numbers used: the exact path
