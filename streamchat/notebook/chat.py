"""`chat()` / `await achat()` for notebook cells, with a default session per kernel.

`chat()` never patches the kernel's loop: the turn runs on streamchat's private loop in
a worker thread and is rendered on the cell's own thread, so every widget update and
every printed line carries the cell's parent header and the frontend (and nbclient/nbval)
attach them to the right cell. `achat()` runs the turn on the kernel's loop. Both go
through the one `TurnDriver` (`driver.py`, which has the concurrency model).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeAlias, Unpack

from .. import _sync
from ..cli import TextRenderer
from ..errors import SessionBusyError, UsageError
from ..events import DoneEvent, Event
from ..providers import choose_provider
from ..providers.base import Provider
from ..result import ChatResult
from ..session import ChatOptions, ChatSession, SessionKeywords, SessionOptions
from ..settings import Settings
from .driver import Renderer, TurnDriver

__all__ = ["DisplayMode", "achat", "chat", "default_session", "new_session"]

DisplayMode: TypeAlias = Literal["auto", "widget", "text"]
"""How a turn is shown: an ipywidgets `ChatView`, CLI-style plain text, or `auto`."""

_default: ChatSession | None = None
_default_config: tuple[Any, ...] | None = None


class _CellRenderer(Renderer, Protocol):
    """What `chat()` and `achat()` show a turn with; `finish` leaves it as a document (see `document.py`)."""

    def finish(self) -> None: ...


class _TextView:
    """The CLI's `TextRenderer` behind the renderer interface of `ChatView`."""

    merges_progress = False  # a log shows every progress line

    def __init__(self) -> None:
        self.renderer = TextRenderer(sys.stdout)
        self.done = False

    def handle(self, event: Event) -> None:
        self.done = self.done or isinstance(event, DoneEvent)
        self.renderer.render(event)

    def stopped(self) -> None:
        if not self.done:  # the turn was stopped before it began: no `done` event to render
            print("[stopped]")

    def finish(self) -> None:
        """Nothing to do: printed text is already a document."""


def _list_tools(options: SessionOptions) -> None:
    """Make `options["tools"]` a list: an iterator must not be consumed twice."""
    if (tools := options.get("tools")) is not None:
        options["tools"] = list(tools)


def _config(provider: Any, options: SessionOptions) -> tuple[Any, ...]:
    """What makes `chat(provider=…, …)` reuse the default session: the same arguments."""
    provider_key = provider if isinstance(provider, str | None) else id(provider)
    tools = options.get("tools")
    return (provider_key, options.get("model"), None if tools is None else tuple(tools), options.get("system"))


_NO_CONFIG = (None, None, None, None)


def new_session(provider: Provider | str | None = None, **options: Unpack[SessionKeywords]) -> ChatSession:
    """Start a new default session (forgetting the old conversation) and return it.

    Takes `ChatSession`'s arguments (`model`, `tools`, `system`, `max_turns`, …: see
    `SessionKeywords`). With no provider named (here or in `STREAMCHAT_PROVIDER`), the
    backends are probed first; like every sync call, this waits for the answer.

    Example:
        >>> session = new_session("demo")
        >>> # chat("What time is it in Tokyo?")  # now uses `session`
    """
    _list_tools(options)
    return _set_default(session_now(provider, **options), provider, options)


def session_now(provider: Provider | str | None = None, **options: Unpack[SessionKeywords]) -> ChatSession:
    """A `ChatSession` whose backend is chosen now: a sync call, which waits for the probe on the private loop."""
    return _sync.run_sync(_session_chosen(provider, options, options.get("settings")))


async def _session_chosen(
    provider: Provider | str | None, options: SessionOptions, settings: Settings | None = None
) -> ChatSession:
    """A `ChatSession` made once its backend is chosen (awaited, so no loop ever waits for the probe).

    `options` may hold every `SessionKeywords` item; `settings` is among them, named for the probe.
    """
    if not isinstance(provider, Provider):
        choice = await choose_provider(provider, model=options.get("model"), settings=settings)
        provider, options = choice.provider, {**options, "model": None}  # the chosen provider has the model
    return ChatSession(provider, **options)


async def _anew_session(provider: Provider | str | None, options: SessionOptions) -> ChatSession:
    """`new_session` for `achat()`: the probe is awaited on the running loop, not waited for."""
    return _set_default(await _session_chosen(provider, options), provider, options)


def _set_default(session: ChatSession, provider: Any, options: SessionOptions) -> ChatSession:
    global _default, _default_config
    _default, _default_config = session, _config(provider, options)
    return session


def default_session() -> ChatSession:
    """The kernel's default session, created on first use from the settings."""
    return _default if _default is not None else new_session()


def check_one_source(session: ChatSession | None, provider: Any, options: SessionOptions) -> None:
    """Refuse `session=` together with the arguments of a session to make."""
    if session is not None and _config(provider, options) != _NO_CONFIG:
        raise UsageError("pass either `session=` or provider/model/tools/system, not both")


def _session_for(
    session: ChatSession | None, options: ChatOptions
) -> tuple[ChatSession | None, Provider | str | None, SessionOptions]:
    """`session`, or the default session `options` ask for (None when a new one is needed), the provider and the rest."""
    provider = options.pop("provider", None)
    rest: SessionOptions = options  # what is left: the `SessionOptions`
    _list_tools(rest)
    check_one_source(session, provider, rest)
    if session is not None:
        return session, provider, rest
    config = _config(provider, rest)
    return (_default if config in (_NO_CONFIG, _default_config) else None), provider, rest


def _display_mode(display: DisplayMode | None) -> Literal["widget", "text"]:
    mode = display or Settings().display.strip().lower() or "auto"
    if mode not in ("auto", "widget", "text"):
        raise UsageError(f"display must be 'auto', 'widget' or 'text', not {mode!r} (check STREAMCHAT_DISPLAY)")
    if mode != "auto":
        return mode  # type: ignore[return-value]
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:
        return "text"
    shell: Callable[[], Any] = get_ipython  # typed through Any: IPython 8 is untyped, IPython 9 typed
    return "widget" if getattr(shell(), "kernel", None) is not None else "text"


def _turn_view(session: ChatSession, message: str, display: DisplayMode | None, *, stoppable: bool) -> _CellRenderer:
    """Refuse a turn the session would refuse, then make the view that shows it."""
    if not isinstance(message, str) or not message.strip():
        raise UsageError("the message must be a non-empty string")
    if session.busy:
        raise SessionBusyError("this session is already answering a message: wait for it or stop it")
    if _display_mode(display) == "text":
        return _TextView()
    from .document import LiveDisplay
    from .view import ChatView

    view = ChatView(
        label=session.provider.describe(),
        controls=session.control_tool if stoppable else None,
        on_stop=session.cancel if stoppable else None,
    )
    return LiveDisplay(view)


def chat(
    message: str,
    *,
    session: ChatSession | None = None,
    display: DisplayMode | None = None,
    **options: Unpack[ChatOptions],
) -> ChatResult:
    """Send `message`, show the turn live in the cell, and return its `ChatResult`.

    Follow-up calls share the kernel's default session (`new_session()` starts another);
    `provider=`, `model=`, `tools=` and `system=` (`ChatOptions`) ask for a default session
    made with them, `session=` uses yours. In a Jupyter kernel the turn shows as a `ChatView` widget,
    elsewhere as plain text (`display=` or `STREAMCHAT_DISPLAY` choose). The kernel's
    interrupt button stops the turn: the view shows "stopped", the partial answer stays
    in history marked interrupted, and `KeyboardInterrupt` is raised as usual. When the
    turn ends, the live view is replaced by the same turn as static content, so a saved
    notebook keeps it (`streamchat.notebook.document`).

    Example:
        >>> result = chat("What is 12 * (3 + 4)?", provider="demo")  # doctest: +SKIP
        >>> result.text  # doctest: +SKIP
        '12 * (3 + 4) = 84 ...'
    """
    chosen, provider, rest = _session_for(session, options)
    chosen = chosen or new_session(provider, **rest)
    view = _turn_view(chosen, message, display, stoppable=False)
    try:
        return TurnDriver(chosen, message, view).run()
    finally:
        view.finish()  # also after "stopped": the interrupted turn stays as a document


async def achat(
    message: str,
    *,
    session: ChatSession | None = None,
    display: DisplayMode | None = None,
    **options: Unpack[ChatOptions],
) -> ChatResult:
    """Like `chat()`, on the running loop: ``await achat("…")``. The view's Stop button works.

    Example:
        >>> result = await achat("What time is it in Tokyo?")  # doctest: +SKIP
    """
    chosen, provider, rest = _session_for(session, options)
    chosen = chosen or await _anew_session(provider, rest)
    view = _turn_view(chosen, message, display, stoppable=True)
    try:
        return await consume(chosen, message, view)
    finally:
        view.finish()


async def consume(session: ChatSession, message: str, view: Renderer) -> ChatResult:
    """Stream one turn of `session` into `view` on the running loop, coalescing tokens (see `TurnDriver`)."""
    return await TurnDriver(session, message, view).arun()
