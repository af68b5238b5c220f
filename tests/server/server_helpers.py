"""Shared parts of the server extension tests: the scripted backend, tools, identities, stream readers.

The extension is configured with `make_provider`, which the server calls once: its
`SessionScripts` is the provider every session shares. It plays each session's calls
on a `ScriptedProvider` of that session's own (told apart by `ModelRequest.session_id`),
made when the session first calls the model, playing `SCRIPT.turns` as they were then.
`SCRIPT.providers` holds the shared provider first, then each session's `ScriptedProvider`,
so tests can read `requests` and `cancellations`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.web import RequestHandler
from traitlets import Dict

from streamchat import Event, Progress, ProgressReporter, ScriptedProvider, Settings, ToolCall, parse_event
from streamchat.providers.base import ModelRequest, Provider, ProviderDelta
from streamchat.providers.scripted import ScriptTurn

ALICE = "alice-token"
BOB = "bob-token"


# -- the scripted backend and tools the extension is configured with --------------------------


@dataclass
class Script:
    """What the next sessions play, and the providers made so far."""

    turns: list[ScriptTurn] = field(default_factory=lambda: [["Hello", " there"]])
    token_delay: float = 0.0
    providers: list[Provider] = field(default_factory=list)
    """The server's shared `SessionScripts`, then each session's `ScriptedProvider`."""


SCRIPT = Script()


class SessionScripts(Provider):
    """The provider the server shares between sessions: each session plays a script of its own.

    A session's `ScriptedProvider` lives as long as `SCRIPT.providers` holds it (a test may
    drop it from there; the session's next call then starts the current script afresh).
    """

    name = "scripted"

    def __init__(self) -> None:
        super().__init__("script")
        self._sessions: weakref.WeakValueDictionary[str | None, ScriptedProvider] = weakref.WeakValueDictionary()

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        player = self._sessions.get(request.session_id)
        # A request whose history holds only the user's messages is a session's first call:
        # a session deleted and re-created under the same id starts the current script afresh.
        fresh = all(message.role in ("system", "user") for message in request.messages)
        if player is None or (fresh and player.requests):
            player = ScriptedProvider(list(SCRIPT.turns), token_delay=SCRIPT.token_delay)
            self._sessions[request.session_id] = player
            SCRIPT.providers.append(player)
        async with contextlib.aclosing(player.stream(request)) as deltas:
            async for delta in deltas:
                yield delta


def session_providers() -> list[ScriptedProvider]:
    """Each session's scripted provider, in the order the sessions first called the model."""
    return [p for p in SCRIPT.providers if isinstance(p, ScriptedProvider)]


def make_provider(settings: Settings) -> SessionScripts:
    """`StreamChat.provider_factory` for the tests: the one provider the server shares."""
    provider = SessionScripts()
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
