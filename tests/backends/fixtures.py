"""Fixtures for the backend tests: the replay server and the helpers to drive a session.

Test modules import the fixtures they use by name (`from backends.fixtures import replay`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streamchat import ChatSession, Event, Settings, tool
from streamchat.providers import Provider

from .replay import ReplayServer

__all__ = ["FAST", "lookup", "replay", "replay_server", "run_turn"]

FAST = Settings(backend_backoff=0.01, backend_stall_timeout=5.0, backend_connect_timeout=2.0)
"""Settings with short retry delays, so retry tests stay quick."""

TABLE = {"α": "first letter", "β": "second letter", "paris": "capital of France"}


@tool
def lookup(key: str) -> str:
    """Look a key up in a small table."""
    return TABLE.get(key, "unknown")


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


async def run_turn(provider: Provider, message: str = "hi", *, tools: list[Any] | None = None) -> list[Event]:
    """All events of one turn of a fresh session over `provider` (closed afterwards)."""
    session = ChatSession(provider, tools=tools or [])
    try:
        return [event async for event in session.stream(message)]
    finally:
        await session.aclose()
