"""`choose_provider`: explicit names, the automatic choice with nothing configured, the announcement
returned with the provider (and logged once); `ChatSession`'s choice inside and outside a running loop."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import pytest
from backends.replay import ReplayServer, Reply

from streamchat import (
    ChatSession,
    DemoProvider,
    LocalProvider,
    OllamaProvider,
    OpenAIProvider,
    ProviderChoice,
    Settings,
    UnknownProviderError,
    choose_provider,
)
from streamchat.providers import NO_BACKEND_ANNOUNCEMENT, AutoProvider


def nobody_listening() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def settings(**values: object) -> Settings:
    """Settings from these values only (the test process's environment left out)."""
    base = {"provider": None, "model": None, "openai_base_url": None, "openai_api_key": None, "local_model": None}
    return Settings(**{**base, **values})  # type: ignore[arg-type]


def tags(*names: str) -> Reply:
    body = {"models": [{"name": n, "model": n, "size": 2019393189} for n in names]}
    return Reply([json.dumps(body).encode()], content_type="application/json; charset=utf-8", chunked=False)


async def test_nothing_configured_and_no_ollama_means_the_demo_model_announced() -> None:
    choice = await choose_provider(settings=settings(ollama_host=nobody_listening()))
    assert isinstance(choice.provider, DemoProvider)
    assert choice.announcement == NO_BACKEND_ANNOUNCEMENT
    assert NO_BACKEND_ANNOUNCEMENT == "no LLM backend found: using the offline demo model; see README → Backends"


async def test_ollama_that_answers_is_chosen_with_a_model_it_has(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b", "llama3.1:8b"))
    choice = await choose_provider(settings=settings(ollama_host=replay.url))
    provider = choice.provider
    assert isinstance(provider, OllamaProvider)
    assert (provider.model, provider.base_url) == ("qwen3:0.6b", replay.url)
    assert choice.announcement == f"using ollama qwen3:0.6b at {replay.url}"
    assert [r.path for r in replay.requests] == ["/api/tags"]


async def test_another_provider_of_the_chosen_kind_needs_no_probe(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b"))
    choice = await choose_provider(settings=settings(ollama_host=replay.url))
    another = choice.new_provider()
    assert isinstance(another, OllamaProvider) and another is not choice.provider
    assert (another.model, another.base_url) == ("qwen3:0.6b", replay.url)
    assert [r.path for r in replay.requests] == ["/api/tags"]  # probed once


async def test_ollama_keeps_the_configured_model(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b"))
    provider = (await choose_provider(model="llama3.2", settings=settings(ollama_host=replay.url))).provider
    assert isinstance(provider, OllamaProvider) and provider.model == "llama3.2"


async def test_ollama_without_models_falls_through_and_says_so(replay: ReplayServer) -> None:
    replay.reset(tags())
    choice = await choose_provider(settings=settings(ollama_host=replay.url))
    assert isinstance(choice.provider, DemoProvider)
    assert (
        choice.announcement
        == f"{NO_BACKEND_ANNOUNCEMENT} (ollama at {replay.url} has no models: `ollama pull llama3.2`)"
    )


async def test_an_openai_compatible_server_is_next() -> None:
    choice = await choose_provider(
        settings=settings(ollama_host=nobody_listening(), openai_base_url="http://127.0.0.1:8000/v1")
    )
    assert isinstance(choice.provider, OpenAIProvider)
    assert choice.announcement == "using openai gpt-4o-mini at http://127.0.0.1:8000/v1"
    keyed = (
        await choose_provider(settings=settings(ollama_host=nobody_listening(), openai_api_key="sk-x", model="gpt-4.1"))
    ).provider
    assert (
        isinstance(keyed, OpenAIProvider) and keyed.base_url == "https://api.openai.com/v1" and keyed.model == "gpt-4.1"
    )


async def test_a_configured_local_model_is_next(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    choice = await choose_provider(settings=settings(ollama_host=nobody_listening(), local_model=str(gguf)))
    assert isinstance(choice.provider, LocalProvider)
    assert choice.announcement == "using local tiny.gguf (in-process llama.cpp)"


async def test_explicit_names_win_over_the_automatic_choice(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b"))
    assert isinstance((await choose_provider("demo", settings=settings(ollama_host=replay.url))).provider, DemoProvider)
    choice = await choose_provider(settings=settings(provider="OpenAI", ollama_host=replay.url))
    assert isinstance(choice.provider, OpenAIProvider)
    assert replay.requests == []  # an explicit choice does not probe
    assert choice.announcement == "using openai gpt-4o-mini at https://api.openai.com/v1"


async def test_concurrent_choices_each_get_their_own_announcement(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b"))
    probed, named = await asyncio.gather(
        choose_provider(settings=settings(ollama_host=replay.url)),
        choose_provider("openai", settings=settings(openai_base_url="http://127.0.0.1:8000/v1")),
    )
    assert probed.announcement == f"using ollama qwen3:0.6b at {replay.url}"
    assert named.announcement == "using openai gpt-4o-mini at http://127.0.0.1:8000/v1"


async def test_an_unknown_name_lists_what_is_available() -> None:
    with pytest.raises(UnknownProviderError) as caught:
        await choose_provider("llamafile", settings=settings(openai_base_url="http://127.0.0.1:8000/v1"))
    assert str(caught.value) == (
        "unknown provider 'llamafile': choose one of demo, local, ollama, openai; available providers: "
        "demo (offline, always available), local (set STREAMCHAT_LOCAL_MODEL to a GGUF file), "
        "ollama (at http://localhost:11434, OLLAMA_HOST), openai (http://127.0.0.1:8000/v1)"
    )


async def test_the_choice_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    host = nobody_listening()
    with caplog.at_level(logging.INFO, logger="streamchat.providers"):
        await choose_provider("ollama", settings=settings(ollama_host=host, model="announce-once"))
        await choose_provider("ollama", settings=settings(ollama_host=host, model="announce-once"))
    assert [r.getMessage() for r in caplog.records] == [f"using ollama announce-once at {host}"]


def test_a_session_made_without_a_running_loop_waits_for_the_choice(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b"))
    session = ChatSession(settings=settings(ollama_host=replay.url), tools=[])
    assert isinstance(session.provider, OllamaProvider) and session.provider.model == "qwen3:0.6b"
    assert [r.path for r in replay.requests] == ["/api/tags"]


async def test_a_session_made_inside_a_running_loop_does_not_wait_for_the_probe() -> None:
    with socket.socket() as silent:  # takes connections (into the kernel's backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        session = ChatSession(settings=settings(ollama_host=host, backend_probe_timeout=30.0))
        # a constructor that waited for the probe would have a chosen provider, not a pending one
        assert isinstance(session.provider, AutoProvider) and session.provider.chosen is None
        assert session.provider.describe() == "the automatic choice (probing the backends)"
    # closed: the held probe fails, and the first turn goes on with the demo model
    result = await session.send("What is 2 + 2?")
    assert result.text.startswith("2 + 2 = 4.")
    assert session.provider.describe() == DemoProvider().describe()
    choice = await session.provider.choice()
    assert isinstance(choice, ProviderChoice) and choice.announcement == NO_BACKEND_ANNOUNCEMENT
    await session.aclose()
