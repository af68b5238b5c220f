"""The HTTP transport the providers read their backends with, and its failures, on each transport.

`backend_http_transport` chooses aiohttp's (httpx-aiohttp, when installed) or httpx's own;
whichever runs, a broken connection, a response that is not HTTP and a backend that never
answers end the turn with the same errors. The rest of the providers' behaviour is tested on
both transports by `test_provider_reliability.py`, `test_provider_ollama.py` and
`test_provider_openai.py` (the `http_transport` fixture).
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from backends.helpers import FAST, run_turn
from backends.replay import ReplayServer, Reply
from backends.transcripts import ndjson, ollama_chunk, ollama_done
from core_helpers import brief, check_invariants
from httpx_aiohttp import HttpxAiohttpClient

from streamchat import ConfigurationError, OllamaProvider, OpenAIProvider, Settings
from streamchat.messages import Message
from streamchat.providers import ModelRequest, TextDelta, _transport
from streamchat.providers._transport import choose_transport

STATUS = ("thinking", "status", "Thinking…")
REQUEST = ModelRequest(messages=(Message(role="user", content="hi"),))

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def test_auto_takes_aiohttp_when_it_is_installed_and_httpx_without(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _transport.aiohttp_installed()  # the dev extra installs it
    assert choose_transport("auto") == "aiohttp"
    assert choose_transport(" AUTO ") == choose_transport("") == "aiohttp"
    monkeypatch.setattr(_transport, "aiohttp_installed", lambda: False)
    assert choose_transport("auto") == "httpx"


def test_a_transport_named_is_the_one_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_transport("httpx") == "httpx"
    assert choose_transport("aiohttp") == "aiohttp"
    monkeypatch.setattr(_transport, "aiohttp_installed", lambda: False)
    with pytest.raises(ConfigurationError) as missing:
        choose_transport("aiohttp")
    assert str(missing.value) == (
        "backend_http_transport is aiohttp but httpx-aiohttp is not installed: "
        "pip install httpx-aiohttp, or set it to auto or httpx"
    )


def test_an_unknown_transport_says_which_there_are() -> None:
    with pytest.raises(ConfigurationError) as unknown:
        OllamaProvider("m1", settings=Settings(backend_http_transport="curl"))
    assert str(unknown.value) == (
        "backend_http_transport is 'curl': set it to one of auto, aiohttp, httpx (auto takes aiohttp when it is installed)"
    )


async def test_each_provider_reads_with_the_transport_its_settings_name(monkeypatch: pytest.MonkeyPatch) -> None:
    on_httpx = OllamaProvider("m1", settings=Settings(backend_http_transport="httpx"))
    on_aiohttp = OpenAIProvider("m1", base_url="http://127.0.0.1:1/v1", settings=Settings())
    monkeypatch.setenv("STREAMCHAT_BACKEND_HTTP_TRANSPORT", "httpx")
    from_env = OpenAIProvider("m1", base_url="http://127.0.0.1:1/v1")
    try:
        assert (on_httpx.http_transport, on_aiohttp.http_transport, from_env.http_transport) == (
            "httpx",
            "aiohttp",
            "httpx",
        )
        assert type(on_httpx.client()) is httpx.AsyncClient
        assert type(from_env.client()) is httpx.AsyncClient
        assert isinstance(on_aiohttp.client(), HttpxAiohttpClient)
    finally:
        for provider in (on_httpx, on_aiohttp, from_env):
            await provider.aclose()


# -- failures, on each transport -----------------------------------------------------------------


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Starts a TCP server on 127.0.0.1 that answers every connection with `handler`; gives its base URL."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)


@pytest.mark.usefixtures("http_transport")
async def test_a_backend_that_hangs_up_without_answering_is_retried_then_a_stream_error(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    attempts = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await _read_request(reader)
        writer.close()

    url = await raw_server(hang_up)
    events = await run_turn(OllamaProvider("m1", base_url=url, settings=FAST))
    check_invariants(events)
    reduced = brief(events)
    assert reduced[0] == STATUS and reduced[2] == ("done", "error", "")
    code, message = reduced[1][1:]
    assert code == "backend_stream_error"
    assert message.startswith(f"the connection to ollama at {url} broke: ")
    assert message.endswith(" (after 3 attempts)")
    assert events[1].retryable  # type: ignore[union-attr]
    assert attempts == 3


@pytest.mark.usefixtures("http_transport")
async def test_an_answer_that_is_not_http_is_a_stream_error(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    url = await raw_server(babble)
    events = await run_turn(OllamaProvider("m1", base_url=url, settings=FAST.model_copy(update={"backend_retries": 0})))
    check_invariants(events)
    reduced = brief(events)
    assert reduced[0] == STATUS and reduced[2] == ("done", "error", "")
    assert reduced[1][1] == "backend_stream_error"
    assert reduced[1][2].startswith(f"the connection to ollama at {url} broke: ")


@pytest.mark.usefixtures("http_transport")
async def test_a_backend_that_never_answers_ends_the_turn_at_the_read_timeout(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.read()  # until the client goes away
        writer.close()

    url = await raw_server(silent)
    settings = FAST.model_copy(update={"backend_retries": 0, "backend_read_timeout": 0.3})
    events = await run_turn(OpenAIProvider("m1", base_url=f"{url}/v1", api_key="sk-test", settings=settings))
    check_invariants(events)
    assert brief(events) == [
        STATUS,
        ("error", "backend_timeout", f"openai at {url}/v1 did not answer within 0.3 s"),
        ("done", "error", ""),
    ]


# -- a provider dropped without aclose() ---------------------------------------------------------


def _unclosed_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage() or "Unclosed" in str(r.msg)]


async def test_an_aiohttp_provider_dropped_unclosed_while_its_loop_runs_closes_its_connections(
    replay: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Rather than aiohttp's "Unclosed client session" error (httpx's own transport leaves the socket to the collector)."""
    body = ndjson(ollama_chunk("ok"), ollama_done())
    replay.reset(Reply([body]))
    provider = OllamaProvider("m1", base_url=replay.url, settings=FAST)
    assert provider.http_transport == "aiohttp"
    assert [d async for d in provider.stream(REQUEST) if isinstance(d, TextDelta)] == [TextDelta(text="ok")]
    del provider
    gc.collect()
    assert await asyncio.to_thread(replay.wait_for_closed_connections, 1)  # closed, not left to the collector
    gc.collect()
    assert _unclosed_reports(caplog) == []


@pytest.mark.usefixtures("http_transport")
def test_a_provider_left_on_an_ended_loop_goes_quietly(replay: ReplayServer, caplog: pytest.LogCaptureFixture) -> None:
    """Its client is retired when the next loop uses it, then dropped: nothing is reported, as with httpx's own."""
    replay.reset(
        Reply([ndjson(ollama_chunk("one"), ollama_done())]), Reply([ndjson(ollama_chunk("two"), ollama_done())])
    )
    provider = OllamaProvider("m1", base_url=replay.url, settings=FAST)

    async def words(provider: OllamaProvider) -> list[str]:
        return [d.text async for d in provider.stream(REQUEST) if isinstance(d, TextDelta)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # its sockets were left with the loop, on either transport
        assert asyncio.run(words(provider)) == ["one"]
        assert asyncio.run(words(provider)) == ["two"]  # a new loop: the first one's client is dropped
        del provider
        gc.collect()
    assert _unclosed_reports(caplog) == []
