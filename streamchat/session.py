"""`ChatSession`: one conversation — its history, tools and provider — and its turns.

`stream(message)` runs one turn of the agent loop (model → tools in parallel → model …;
the loop itself is in `streamchat.turn`) and yields its events. The session is the only
place that keeps history; every surface (notebook, widget, CLI, server) consumes
`stream()` and only renders events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypedDict, get_args

from ._text import check_message
from .analytics import recorder
from .errors import SessionBusyError, StreamChatError, UsageError
from .events import Event
from .messages import Message
from .providers import session_provider
from .providers.base import Provider
from .result import ChatResult, ResultCollector
from .settings import Settings
from .tools.builtin import BUILTIN_TOOLS
from .tools.definition import Tool
from .tools.runner import ToolThreads
from .tools.toolsets import Toolset, gather_tools, split_tools
from .turn import ToolAction, Turn, new_id

__all__ = ["ChatOptions", "ChatSession", "SessionKeywords", "SessionOptions", "ToolAction"]


class SessionOptions(TypedDict, total=False):
    """What a session is made with, besides its provider: `model`, `tools`, `system` (see `ChatSession`).

    `chat()`, `achat()`, `ChatWidget` and `new_session()` take these keywords.
    """

    model: str | None
    tools: Iterable[Tool | Toolset | Callable[..., Any]] | None
    system: str | None


class SessionKeywords(SessionOptions, total=False):
    """Every keyword of `ChatSession`: the `SessionOptions` and the limits, id, settings and history."""

    max_turns: int | None
    tool_timeout: float | None
    session_id: str | None
    settings: Settings | None
    history: Sequence[Message]


class ChatOptions(SessionOptions, total=False):
    """The keywords of `chat()` and `achat()` that choose their session: `provider` and the `SessionOptions`."""

    provider: Provider | str | None


class ChatSession:
    """One conversation: its history, its tools, its provider, one turn at a time.

    Example:
        >>> import asyncio
        >>> from streamchat import ChatSession, ScriptedProvider
        >>> session = ChatSession(ScriptedProvider([["Hello", " there"]]), tools=[])
        >>> asyncio.run(session.send("hi")).text
        'Hello there'
    """

    def __init__(
        self,
        provider: Provider | str | None = None,
        *,
        model: str | None = None,
        tools: Iterable[Tool | Toolset | Callable[..., Any]] | None = None,
        system: str | None = None,
        max_turns: int | None = None,
        tool_timeout: float | None = None,
        session_id: str | None = None,
        settings: Settings | None = None,
        history: Sequence[Message] = (),
    ) -> None:
        settings = settings or Settings()
        self.settings = settings
        """The settings this session was made with; tools that ask for `Settings` get them."""
        if isinstance(provider, Provider):
            if model is not None:
                raise UsageError("pass `model=` to the provider's constructor, not with a provider instance")
            self.provider = provider
        else:  # an automatic choice probes without blocking a running loop: see `providers.choice`
            self.provider = session_provider(provider, model=model, settings=settings)
        self._own_tools, toolsets = split_tools(BUILTIN_TOOLS if tools is None else tools)
        self.toolsets: list[Toolset] = toolsets
        """The toolsets (MCP servers) whose tools each turn lists; `aclose()` closes them."""
        self.tools: dict[str, Tool] = dict(self._own_tools)
        """The tools the model may call: the plain ones, and the toolsets' as the latest turn listed them."""
        self.system = system if system is not None else settings.system
        self.max_turns = max_turns if max_turns is not None else settings.max_turns
        if self.max_turns < 1:
            raise UsageError("max_turns must be at least 1")
        self.tool_timeout = tool_timeout if tool_timeout is not None else settings.tool_timeout
        self.tool_threads = ToolThreads.shared(settings.tool_threads)
        self.session_id = session_id or new_id()
        self._history: list[Message] = list(history)
        self._turn: Turn | None = None
        self.analytics_scope: str | None = None
        """Whose figures this session's turns count in besides the process's (the server sets its owner)."""

    # -- state ---------------------------------------------------------------------------

    @property
    def history(self) -> list[Message]:
        """A copy of the conversation so far (without the system prompt)."""
        return list(self._history)

    @property
    def busy(self) -> bool:
        """True while a turn is running."""
        return self._turn is not None

    def clear(self) -> None:
        """Forget the conversation. Refused while a turn runs: `cancel()` it first."""
        if self._turn is not None:
            raise SessionBusyError("a turn is running in this session: cancel it before clearing")
        self._history.clear()

    # -- control of the running turn (thread-safe) ------------------------------------------
    # Called from another thread, these wait (at most `streamchat.turn.CONTROL_TIMEOUT`
    # seconds) for the turn's loop to act and report what it did. A loop that does not
    # answer in time (blocked or stopped) gets the request withdrawn: nothing happens, and
    # the answer is False.

    def cancel(self) -> bool:
        """Stop the running turn; it ends with `done(reason="cancelled")`. False if there was none to stop."""
        turn = self._turn
        return turn is not None and turn.on_loop(turn.cancel)

    def control_tool(self, call_id: str, action: ToolAction) -> bool:
        """Cancel, pause or resume one tool call of the running turn; True if it acted.

        ``cancel`` ends the call with status `cancelled` while its siblings go on, ``pause``
        holds it at its next progress report, ``resume`` releases it. False when there is
        no such running call, or it is already in that state.

        Example:
            >>> session.control_tool("call_1", "pause")  # doctest: +SKIP
            True
        """
        if action not in get_args(ToolAction):
            raise UsageError(f"action must be one of {', '.join(get_args(ToolAction))}, not {action!r}")
        turn = self._turn
        return turn is not None and turn.on_loop(lambda: turn.control_tool(call_id, action))

    # -- turns ---------------------------------------------------------------------------

    async def stream(self, message: str, *, consume: Callable[[Event], bool] | None = None) -> AsyncIterator[Event]:
        """Send `message` and yield the turn's events as they happen; `done` comes last.

        Closing the stream early cancels the turn: wrap it in `contextlib.aclosing` and
        ``break``, or cancel the consuming task (a bare ``break`` leaves the closing to the
        event loop's async-generator finalizer, a moment later). The cancelled turn's
        partial answer is kept in history, marked as interrupted.

        `consume`, for a consumer that hands events on without awaiting (a server writing
        them to its clients), is called with each event that comes while this stream waits
        for one, at once, on the turn's task: an event it takes (returns True) is not yielded,
        and the consuming task is not woken for it. The events it declines are yielded, in
        order. If it raises, the stream raises that error.

        Example:
            >>> async def show(session):
            ...     async for event in session.stream("What is 2 + 2?"):
            ...         print(event.type)
        """
        if not isinstance(message, str) or not message.strip():
            raise UsageError("the message must be a non-empty string")
        check_message(message)
        if self._turn is not None:
            raise SessionBusyError("this session is already answering a message: wait for it or cancel it")
        turn = Turn(self, message, self._history)
        self._turn = turn
        turn.start()
        take, arrival = turn.sink.take, turn.sink.arrival
        observer = recorder().turn(self)  # the metrics of every surface come from here (streamchat.analytics)
        observe = observer.observe
        if consume is not None:

            def direct(event: Event) -> bool:
                if not consume(event):
                    return False
                observe(event)
                return True

            turn.sink.direct = direct
        try:
            while True:
                if (event := take()) is None:
                    await arrival()
                    continue
                observe(event)
                yield event
                if event.type == "done":
                    break
        finally:
            observer.close()
            await turn.close()
            self._turn = None

    async def send(self, message: str) -> ChatResult:
        """Send `message`, wait for the whole turn and return its `ChatResult`."""
        result = ResultCollector()
        async for event in self.stream(message):
            result.add(event)
        return result.build()

    async def refresh_tools(self) -> list[StreamChatError]:
        """List the toolsets' tools into `tools` (each turn does this first); returns why any were left out."""
        if not self.toolsets:
            return []
        self.tools, problems = await gather_tools(self._own_tools, self.toolsets)
        return problems

    async def aclose(self) -> None:
        """Cancel any running turn and close the provider's and the toolsets' connections."""
        self.cancel()
        await self.provider.aclose()
        for toolset in self.toolsets:
            await toolset.aclose()
