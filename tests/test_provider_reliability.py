"""The shared HTTP reliability layer: retries, errors that say what to do, stalls, drops, cancellation.

Both HTTP providers run on it, so most tests run against each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
import threading
import time

import httpx
import pytest
from backends.helpers import FAST, run_turn
from backends.replay import ReplayServer, Reply
from backends.transcripts import ndjson, ollama_chunk, ollama_done, openai_chunk, openai_usage, sse
from core_helpers import brief, check_invariants

from streamchat import ChatSession, OllamaProvider, OpenAIProvider, Settings
from streamchat.messages import Message
from streamchat.providers import ModelRequest, TextDelta
from streamchat.providers._http import HttpProvider, retry_after_seconds

pytestmark = pytest.mark.usefixtures("http_transport")  # every test on each HTTP transport

STATUS = ("thinking", "status", "Thinking…")
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def make(kind: str, url: str, settings: Settings = FAST) -> HttpProvider:
    if kind == "ollama":
        return OllamaProvider("m1", base_url=url, settings=settings)
    return OpenAIProvider("m1", base_url=f"{url}/v1", api_key="sk-test", settings=settings)


def stream_of(kind: str, *texts: str) -> tuple[bytes, str]:
    """A complete response streaming `texts`, in `kind`'s format, and its content type."""
    if kind == "ollama":
        return ndjson(
            *(ollama_chunk(t) for t in texts), ollama_done(prompt_eval_count=3, eval_count=len(texts))
        ), NDJSON
    return sse(
        *(openai_chunk({"content": t}) for t in texts),
        openai_chunk({}, finish_reason="stop"),
        openai_usage(3, len(texts)),
    ), SSE


def first_piece(kind: str, text: str) -> bytes:
    """One token's worth of `kind`'s stream (no end)."""
    return ndjson(ollama_chunk(text)) if kind == "ollama" else sse(openai_chunk({"content": text}), done=False)


KINDS = ["ollama", "openai"]


@pytest.mark.parametrize("kind", KINDS)
async def test_two_503s_then_success_give_one_clean_answer(replay: ReplayServer, kind: str) -> None:
    body, content_type = stream_of(kind, "Bonjour", " à tous")
    unavailable = Reply([b'{"error":"server busy"}'], status=503, content_type="application/json")
    replay.reset(
        unavailable,
        Reply(unavailable.pieces, status=503, headers={"Retry-After": "0"}),
        Reply([body], content_type=content_type),
    )
    events = await run_turn(make(kind, replay.url))
    check_invariants(events)
    assert brief(events) == [STATUS, ("token", "Bonjour"), ("token", " à tous"), ("done", "stop", "Bonjour à tous")]
    assert len(replay.requests) == 3
    assert replay.requests[0].body == replay.requests[2].body


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_dropped_before_any_event_is_retried(replay: ReplayServer, kind: str) -> None:
    body, content_type = stream_of(kind, "ok")
    replay.reset(Reply([], content_type=content_type, ending="drop"), Reply([body], content_type=content_type))
    events = await run_turn(make(kind, replay.url))
    assert brief(events) == [STATUS, ("token", "ok"), ("done", "stop", "ok")]
    assert len(replay.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_dropped_after_the_first_token_is_an_error_without_duplicates(
    replay: ReplayServer, kind: str
) -> None:
    body, content_type = stream_of(kind, "Hel", "lo")
    replay.reset(
        Reply([first_piece(kind, "Hel")], content_type=content_type, ending="drop"),
        Reply([body], content_type=content_type),
    )
    events = await run_turn(make(kind, replay.url))
    check_invariants(events)
    reduced = brief(events)
    assert reduced[:2] == [STATUS, ("token", "Hel")]
    assert reduced[2][:2] == ("error", "backend_stream_error")
    assert reduced[2][2].startswith(f"the connection to {kind} at ")
    assert reduced[3:] == [("done", "error", "Hel")]
    assert len(replay.requests) == 1  # never re-run: that would send "Hel" twice


async def test_401_is_not_retried_and_says_why(replay: ReplayServer) -> None:
    error = b'{"error":{"message":"Incorrect API key provided: sk-test.","type":"invalid_request_error","code":"invalid_api_key"}}'
    replay.reset(Reply([error], status=401, content_type="application/json"))
    events = await run_turn(make("openai", replay.url))
    assert brief(events) == [
        STATUS,
        (
            "error",
            "http_401",
            f"{replay.url}/v1 refused the API key (401: Incorrect API key provided: sk-test.): set OPENAI_API_KEY or pass api_key=",
        ),
        ("done", "error", ""),
    ]
    assert events[1].retryable is False  # type: ignore[union-attr]
    assert len(replay.requests) == 1


async def test_404_names_the_model_and_how_to_list_models(replay: ReplayServer) -> None:
    replay.reset(Reply([b'{"detail":"Not Found"}'], status=404, content_type="application/json"))
    events = await run_turn(make("openai", replay.url))
    assert brief(events)[1] == (
        "error",
        "http_404",
        f"{replay.url}/v1 has no model 'm1' or no /chat/completions endpoint (404: Not Found): "
        f"check the model name (GET {replay.url}/v1/models lists them) and that the base URL ends in /v1",
    )
    assert len(replay.requests) == 1


async def test_a_retry_after_longer_than_a_minute_fails_at_once(replay: ReplayServer) -> None:
    replay.reset(Reply([b"slow down"], status=429, content_type="text/plain", headers={"Retry-After": "3600"}))
    events = await run_turn(make("ollama", replay.url))
    assert brief(events)[1] == ("error", "http_429", f"ollama at {replay.url} answered 429: slow down")
    assert events[1].retryable is True  # type: ignore[union-attr]
    assert len(replay.requests) == 1


async def test_retries_give_up_after_the_configured_count(replay: ReplayServer) -> None:
    failing = Reply([b"oops"], status=500, content_type="text/plain")
    replay.reset(failing, failing, failing, failing)
    events = await run_turn(make("ollama", replay.url, FAST.model_copy(update={"backend_retries": 1})))
    assert brief(events)[1] == ("error", "http_500", f"ollama at {replay.url} answered 500: oops (after 2 attempts)")
    assert len(replay.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_that_stalls_ends_the_turn_at_the_stall_timeout(replay: ReplayServer, kind: str) -> None:
    replay.reset(Reply([first_piece(kind, "Hel")], content_type=NDJSON if kind == "ollama" else SSE, ending="stall"))
    settings = FAST.model_copy(update={"backend_stall_timeout": 0.3})
    events = await run_turn(make(kind, replay.url, settings))
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("token", "Hel"),
        (
            "error",
            "backend_timeout",
            f"{kind} at {make(kind, replay.url).base_url} stopped sending for 0.3 s: ended the turn",
        ),
        ("done", "error", "Hel"),
    ]
    assert await asyncio.to_thread(replay.wait_for_disconnects, 1)  # the stalled response was closed


@pytest.mark.parametrize("kind", KINDS)
async def test_leaving_the_stream_closes_the_http_response(replay: ReplayServer, kind: str) -> None:
    texts = [f"w{i} " for i in range(200)]
    body, content_type = stream_of(kind, *texts)
    pieces = [body[i : i + 40] for i in range(0, len(body), 40)]
    replay.reset(Reply(pieces, content_type=content_type, pause=0.02))  # 4 s if nobody stops it
    provider = make(kind, replay.url)
    request = ModelRequest(messages=(Message(role="user", content="count"),))
    async with contextlib.aclosing(provider.stream(request)) as deltas:
        first = await anext(deltas)
    assert first == TextDelta(text="w0 ")
    assert await asyncio.to_thread(replay.wait_for_disconnects, 1)
    await provider.aclose()


async def test_an_unreachable_backend_says_what_is_available() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = FAST.model_copy(update={"local_model": "/models/tiny.gguf"})
    events = await run_turn(OllamaProvider("m1", base_url=f"http://127.0.0.1:{port}", settings=settings))
    error = events[1]
    assert error.type == "error" and error.code == "backend_unreachable" and error.retryable  # type: ignore[union-attr]
    message = error.message  # type: ignore[union-attr]
    assert message.startswith(f"cannot reach ollama at http://127.0.0.1:{port} (")
    assert message.endswith(
        "start it with `ollama serve`, set OLLAMA_HOST, or choose another provider; available providers: "
        "demo (offline, always available), local (STREAMCHAT_LOCAL_MODEL=/models/tiny.gguf), "
        "ollama (at http://localhost:11434, OLLAMA_HOST), openai (set OPENAI_BASE_URL or OPENAI_API_KEY) (after 3 attempts)"
    )


async def test_the_pooled_client_follows_the_event_loop(replay: ReplayServer) -> None:
    """A session driven from streamchat's private loop, then from the caller's, keeps working.

    The client made on the first loop is closed there (its connections belong to it), and a
    new client serves the second loop.
    """
    provider = make("ollama", replay.url)
    request = ModelRequest(messages=(Message(role="user", content="x"),))

    async def words() -> list[str]:
        return [d.text async for d in provider.stream(request) if isinstance(d, TextDelta)]

    other = asyncio.new_event_loop()
    worker = threading.Thread(target=other.run_forever, daemon=True)
    worker.start()
    try:
        body, content_type = stream_of("ollama", "one")
        replay.reset(
            Reply([body], content_type=content_type), Reply([stream_of("ollama", "two")[0]], content_type=content_type)
        )
        assert asyncio.run_coroutine_threadsafe(words(), other).result(30) == ["one"]
        first_client = asyncio.run_coroutine_threadsafe(_current_client(provider), other).result(30)
        assert await words() == ["two"]
        assert provider.client() is not first_client
        # the retired client was closed on its own loop
        assert asyncio.run_coroutine_threadsafe(_is_closed(first_client), other).result(30)
    finally:
        await provider.aclose()
        other.call_soon_threadsafe(other.stop)
        worker.join(30)
        other.close()


async def _current_client(provider: HttpProvider) -> httpx.AsyncClient:
    return provider.client()


async def _is_closed(client: httpx.AsyncClient) -> bool:
    await asyncio.sleep(0)  # let the scheduled close run first (the loop runs callbacks in order)
    return client.is_closed


async def test_aclose_closes_the_pooled_client(replay: ReplayServer) -> None:
    body, content_type = stream_of("openai", "x")
    replay.reset(Reply([body], content_type=content_type))
    provider = make("openai", replay.url)
    await run_turn(provider)
    client = provider.client()
    await provider.aclose()
    assert client.is_closed
    await provider.aclose()  # twice is fine


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after_seconds(later) or 0) <= 30
    assert retry_after_seconds(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_a_session_turn_closes_the_http_response(replay: ReplayServer, kind: str) -> None:
    body, content_type = stream_of(kind, *(f"w{i} " for i in range(200)))
    replay.reset(Reply([body[i : i + 40] for i in range(0, len(body), 40)], content_type=content_type, pause=0.02))
    session = ChatSession(make(kind, replay.url), tools=[])
    async with contextlib.aclosing(session.stream("count")) as events:
        async for event in events:
            if event.type == "token":
                assert session.cancel()
    assert await asyncio.to_thread(replay.wait_for_disconnects, 1)
    assert session.history[-1].interrupted and session.history[-1].content.startswith("w0 ")
    await session.aclose()


BOUNDED = FAST.model_copy(update={"backend_max_line_bytes": 64 * 1024, "backend_max_response_bytes": 256 * 1024})
"""Settings with small bounds on what one backend response may hold."""


@pytest.mark.parametrize(
    ("kind", "endless"),
    [
        ("ollama", b'{"message": {"content": "' + b"x" * 100_000),  # one line that never ends
        ("openai", b'data: {"choices": [{"delta": {"content": "' + b"x" * 100_000),
        ("openai", (b"data: " + b"x" * 100 + b"\n") * 2000),  # ever more data lines, no blank line
    ],
    ids=["ollama-line", "openai-line", "openai-event"],
)
async def test_a_line_or_event_over_the_bound_ends_the_turn(replay: ReplayServer, kind: str, endless: bytes) -> None:
    pieces = [first_piece(kind, "Hel"), *(endless[i : i + 8192] for i in range(0, len(endless), 8192))]
    replay.reset(Reply(pieces, content_type=NDJSON if kind == "ollama" else SSE, ending="stall"))
    provider = make(kind, replay.url, BOUNDED)
    events = await run_turn(provider)
    check_invariants(events)
    what = "an event" if b"\n" in endless else "a line"
    assert brief(events) == [
        STATUS,
        ("token", "Hel"),
        (
            "error",
            "backend_stream_error",
            f"{kind} at {provider.base_url} sent {what} of more than 65536 bytes: ended the turn "
            "(the bound is the setting backend_max_line_bytes)",
        ),
        ("done", "error", "Hel"),
    ]
    assert await asyncio.to_thread(replay.wait_for_disconnects, 1)  # the response was closed, not read on


@pytest.mark.parametrize("kind", KINDS)
async def test_a_response_over_the_bound_ends_the_turn(replay: ReplayServer, kind: str) -> None:
    texts = [f"{i:04d}" + "y" * 200 for i in range(2000)]  # about 600 kB in all, in short lines
    body, content_type = stream_of(kind, *texts)
    replay.reset(Reply([body[i : i + 8192] for i in range(0, len(body), 8192)], content_type=content_type))
    provider = make(kind, replay.url, BOUNDED)
    events = await run_turn(provider)
    check_invariants(events)
    tokens = [event.content for event in events if event.type == "token"]  # type: ignore[union-attr]
    assert 0 < len(tokens) < len(texts) and tokens == texts[: len(tokens)]
    assert brief(events)[-2:] == [
        (
            "error",
            "backend_stream_error",
            f"{kind} at {provider.base_url} sent more than 262144 bytes in one response: ended the turn "
            "(the bound is the setting backend_max_response_bytes)",
        ),
        ("done", "error", "".join(tokens)),
    ]


async def test_a_huge_error_body_is_read_only_in_part(replay: ReplayServer) -> None:
    huge = b'{"error": "' + b"z" * 2_000_000 + b'"}'
    replay.reset(Reply([huge[i : i + 65536] for i in range(0, len(huge), 65536)], status=400, ending="stall"))
    provider = make("ollama", replay.url, BOUNDED)
    events = await run_turn(provider)
    error = events[1]
    assert error.type == "error" and error.code == "http_400"  # type: ignore[union-attr]
    assert error.message.startswith(f"ollama at {provider.base_url} rejected the request (400: ")  # type: ignore[union-attr]
    assert await asyncio.to_thread(replay.wait_for_disconnects, 1)
