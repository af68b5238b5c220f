"""`get_provider`: explicit names, the automatic choice with nothing configured, the one-time announcement."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from backends.replay import ReplayServer, Reply

from streamchat import (
    DemoProvider,
    LocalProvider,
    OllamaProvider,
    OpenAIProvider,
    Settings,
    UnknownProviderError,
    get_provider,
)
from streamchat.providers import NO_BACKEND_ANNOUNCEMENT, _probes, describe_choice


@pytest.fixture(autouse=True)
def forget_probes() -> None:
    """Each test sets up its own Ollama (or none) at the same URL: no answer remembered from another test."""
    _probes.clear()


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


def test_nothing_configured_and_no_ollama_means_the_demo_model_announced() -> None:
    provider = get_provider(settings=settings(ollama_host=nobody_listening()))
    assert isinstance(provider, DemoProvider)
    assert describe_choice() == NO_BACKEND_ANNOUNCEMENT
    assert NO_BACKEND_ANNOUNCEMENT == "no LLM backend found: using the offline demo model; see README → Backends"


def test_ollama_that_answers_is_chosen_with_a_model_it_has(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b", "llama3.1:8b"))
    provider = get_provider(settings=settings(ollama_host=replay.url))
    assert isinstance(provider, OllamaProvider)
    assert (provider.model, provider.base_url) == ("qwen3:0.6b", replay.url)
    assert describe_choice() == f"using ollama qwen3:0.6b at {replay.url}"
    assert [r.path for r in replay.requests] == ["/api/tags"]


def test_ollama_keeps_the_configured_model(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b"))
    provider = get_provider(model="llama3.2", settings=settings(ollama_host=replay.url))
    assert isinstance(provider, OllamaProvider) and provider.model == "llama3.2"


def test_ollama_without_models_falls_through_and_says_so(replay: ReplayServer) -> None:
    replay.reset(tags())
    provider = get_provider(settings=settings(ollama_host=replay.url))
    assert isinstance(provider, DemoProvider)
    assert (
        describe_choice() == f"{NO_BACKEND_ANNOUNCEMENT} (ollama at {replay.url} has no models: `ollama pull llama3.2`)"
    )


def test_an_openai_compatible_server_is_next() -> None:
    provider = get_provider(
        settings=settings(ollama_host=nobody_listening(), openai_base_url="http://127.0.0.1:8000/v1")
    )
    assert isinstance(provider, OpenAIProvider)
    assert describe_choice() == "using openai gpt-4o-mini at http://127.0.0.1:8000/v1"
    keyed = get_provider(settings=settings(ollama_host=nobody_listening(), openai_api_key="sk-x", model="gpt-4.1"))
    assert (
        isinstance(keyed, OpenAIProvider) and keyed.base_url == "https://api.openai.com/v1" and keyed.model == "gpt-4.1"
    )


def test_a_configured_local_model_is_next(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    provider = get_provider(settings=settings(ollama_host=nobody_listening(), local_model=str(gguf)))
    assert isinstance(provider, LocalProvider)
    assert describe_choice() == "using local tiny.gguf (in-process llama.cpp)"


def test_explicit_names_win_over_the_automatic_choice(replay: ReplayServer) -> None:
    replay.reset(tags("qwen3:0.6b"))
    assert isinstance(get_provider("demo", settings=settings(ollama_host=replay.url)), DemoProvider)
    assert isinstance(get_provider(settings=settings(provider="OpenAI", ollama_host=replay.url)), OpenAIProvider)
    assert replay.requests == []  # an explicit choice does not probe
    assert describe_choice() == "using openai gpt-4o-mini at https://api.openai.com/v1"


def test_an_unknown_name_lists_what_is_available() -> None:
    with pytest.raises(UnknownProviderError) as caught:
        get_provider("llamafile", settings=settings(openai_base_url="http://127.0.0.1:8000/v1"))
    assert str(caught.value) == (
        "unknown provider 'llamafile': choose one of demo, local, ollama, openai; available providers: "
        "demo (offline, always available), local (set STREAMCHAT_LOCAL_MODEL to a GGUF file), "
        "ollama (at http://localhost:11434, OLLAMA_HOST), openai (http://127.0.0.1:8000/v1)"
    )


def test_the_choice_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    host = nobody_listening()
    with caplog.at_level(logging.INFO, logger="streamchat.providers"):
        get_provider("ollama", settings=settings(ollama_host=host, model="announce-once"))
        get_provider("ollama", settings=settings(ollama_host=host, model="announce-once"))
    assert [r.getMessage() for r in caplog.records] == [f"using ollama announce-once at {host}"]
