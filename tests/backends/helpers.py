"""Helpers of the backend tests: quick-retry settings, a small tool, and one turn of a fresh session.

The replay server and the llama.cpp server are fixtures, in `tests/conftest.py`.
"""

from __future__ import annotations

from typing import Any

from streamchat import ChatSession, Event, Settings, tool
from streamchat.providers import Provider

__all__ = ["FAST", "lookup", "run_turn"]

FAST = Settings(backend_backoff=0.01, backend_stall_timeout=5.0, backend_connect_timeout=2.0)
"""Settings with short retry delays, so retry tests stay quick."""

TABLE = {"α": "first letter", "β": "second letter", "paris": "capital of France"}


@tool
def lookup(key: str) -> str:
    """Look a key up in a small table."""
    return TABLE.get(key, "unknown")


async def run_turn(provider: Provider, message: str = "hi", *, tools: list[Any] | None = None) -> list[Event]:
    """All events of one turn of a fresh session over `provider` (closed afterwards)."""
    session = ChatSession(provider, tools=tools or [])
    try:
        return [event async for event in session.stream(message)]
    finally:
        await session.aclose()
