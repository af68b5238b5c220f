"""Shared parts of the server extension tests: the scripted backend, tools, identities, stream readers.

The extension is configured with `make_provider`: each new session gets a
`ScriptedProvider` playing `SCRIPT.turns`, and every provider made is kept in
`SCRIPT.providers` so tests can read `requests` and `cancellations`. The extension
imports this module by name (``server_helpers:make_provider``), so it is a plain module
next to the tests, not part of `conftest.py`; the fixtures are in `conftest.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.web import RequestHandler
from traitlets import Dict

from streamchat import Event, Progress, ProgressReporter, ScriptedProvider, Settings, ToolCall, parse_event
from streamchat.providers.scripted import ScriptTurn

ALICE = "alice-token"
BOB = "bob-token"


# -- the scripted backend and tools the extension is configured with --------------------------


@dataclass
class Script:
    """What the next sessions' providers play, and the providers made so far."""

    turns: list[ScriptTurn] = field(default_factory=lambda: [["Hello", " there"]])
    token_delay: float = 0.0
    providers: list[ScriptedProvider] = field(default_factory=list)


SCRIPT = Script()


def session_providers() -> list[ScriptedProvider]:
    """The providers made for sessions (the first one made is the extension's health provider)."""
    return SCRIPT.providers[1:]


def make_provider(settings: Settings) -> ScriptedProvider:
    """`StreamChat.provider_factory` for the tests: a fresh scripted provider per session."""
    provider = ScriptedProvider(list(SCRIPT.turns), token_delay=SCRIPT.token_delay)
    SCRIPT.providers.append(provider)
    return provider


async def count_to(n: int) -> AsyncIterator[Any]:
    """Count to n, reporting progress at each step.

    Args:
        n: How far to count.
    """
    for i in range(1, n + 1):
        yield Progress(f"step {i} of {n}", stage="count", percent=100 * i / n)
    yield {"summary": f"counted to {n}", "n": n}


@dataclass
class Gate:
    """Holds `wait_here` calls until the test opens it; records what happened to them."""

    opened: asyncio.Event | None = None
    started: asyncio.Event | None = None
    cancelled_event: asyncio.Event | None = None
    cancelled: list[str] = field(default_factory=list)

    def reset(self) -> None:
        """Fresh events on the running loop."""
        self.opened, self.started, self.cancelled_event = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.cancelled = []


GATE = Gate()


async def wait_here(label: str, report: ProgressReporter) -> str:
    """Wait until the test opens the gate (records a CancelledError).

    Args:
        label: A name for this call.
    """
    assert GATE.opened is not None and GATE.started is not None
    await report(f"{label} waiting", percent=10)
    GATE.started.set()
    try:
        await GATE.opened.wait()
    except asyncio.CancelledError:
        GATE.cancelled.append(label)
        assert GATE.cancelled_event is not None
        GATE.cancelled_event.set()
        raise
    await report(f"{label} released", percent=100)
    return f"{label} done"


TOOLS = ["server_helpers:count_to", "server_helpers:wait_here", "streamchat.tools.builtin:calculate"]
PARALLEL_SCRIPT: list[ScriptTurn] = [
    ["Let me ", "count.", ToolCall("count_to", {"n": 3}, call_id="a"), ToolCall("count_to", {"n": 2}, call_id="b")],
    ["Counted: ", "**3** and\n", "2."],
]
"""A turn with text, two parallel tool calls with progress, then a final answer."""


# -- identities ---------------------------------------------------------------------------------


class TokenUsersIdentityProvider(IdentityProvider):
    """Maps extra tokens to named users (``Authorization: token alice-token`` is alice)."""

    users = Dict({ALICE: "alice", BOB: "bob"}, config=True, help="token → user name")

    async def get_user_token(self, handler: RequestHandler) -> User | None:
        """The user named by the request's token, else the default token check."""
        name = self.users.get(self.get_token(handler) or "")
        if name is not None:
            return User(username=name, name=name)
        return await super().get_user_token(handler)


def server_config(**streamchat: Any) -> dict[str, Any]:
    """A ServerApp config that loads streamchat with the test backend, tools and identities."""
    settings: dict[str, Any] = {
        "provider_factory": "server_helpers:make_provider",
        "tools": TOOLS,
        "heartbeat_interval": 15.0,
        "disconnect_grace": 0.2,
    }
    settings.update(streamchat)
    return {
        "ServerApp": {
            "jpserver_extensions": {"streamchat": True},
            "identity_provider_class": "server_helpers.TokenUsersIdentityProvider",
        },
        "StreamChat": settings,
    }


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"token {token}"}


# -- reading streams ------------------------------------------------------------------------------


@dataclass
class Frame:
    """One SSE event as received: its id, event name and parsed event."""

    id: str
    name: str
    event: Event


async def sse_events(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    stop: Callable[[Frame], bool] | None = None,
    **kwargs: Any,
) -> list[Frame]:
    """Read an SSE response until it ends (or until `stop` says so, then drop the connection)."""
    frames = []
    async with aconnect_sse(client, method, url, **kwargs) as source:
        assert source.response.status_code == 200, source.response.status_code
        async for sse in source.aiter_sse():
            frame = Frame(sse.id, sse.event, parse_event(sse.data))
            frames.append(frame)
            if stop is not None and stop(frame):
                break
    return frames


def comparable(event: Event) -> dict[str, Any]:
    """An event without what differs by nature between runs (ids, timings)."""
    body = event.model_dump(mode="json", exclude={"session_id", "turn_id"})
    if body["type"] == "tool_result":
        body.pop("duration_ms")
    if body["type"] == "done":
        body.pop("metrics")
    return body


async def receive(ws: Any) -> dict[str, Any]:
    """The next WebSocket message, parsed (fails after 10 s instead of hanging)."""
    message = await asyncio.wait_for(ws.read_message(), timeout=10)
    assert message is not None, "the socket closed"
    parsed: dict[str, Any] = json.loads(message)
    return parsed


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a JSON error response."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    error: dict[str, Any] = body["error"]
    return error
