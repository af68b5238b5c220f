"""`chat()` / `await achat()` for notebook cells, with a default session per kernel.

`chat()` never patches the kernel's loop: the turn runs on streamchat's private loop in
a worker thread (`streamchat._sync`) and its events come back through a thread-safe
queue to the calling thread, which renders them. Rendering on the cell's own thread
gives every widget update and every printed line the cell's parent header, so the
frontend (and nbclient/nbval) attach them to the right cell.
"""

from __future__ import annotations

import asyncio
import queue
import sys
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol, TypeAlias

from .. import _sync
from ..cli import TextRenderer
from ..errors import SessionBusyError, UsageError
from ..events import DoneEvent, Event
from ..providers import choose_provider
from ..providers.base import Provider
from ..result import ChatResult, ResultCollector
from ..session import ChatSession
from ..settings import Settings
from ..tools.definition import Tool
from .render import Coalescer

__all__ = ["DisplayMode", "achat", "chat", "default_session", "new_session"]

DisplayMode: TypeAlias = Literal["auto", "widget", "text"]
"""How a turn is shown: an ipywidgets `ChatView`, CLI-style plain text, or `auto`."""

_END = object()
_default: ChatSession | None = None
_default_config: tuple[Any, ...] | None = None


class _Renderer(Protocol):
    merges_progress: bool

    def handle(self, event: Event) -> None: ...
    def stopped(self) -> None: ...


class _CellRenderer(_Renderer, Protocol):
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


def _config(provider: Any, model: Any, tools: list[Any] | None, system: Any) -> tuple[Any, ...]:
    """What makes `chat(provider=…, …)` reuse the default session: the same arguments."""
    provider_key = provider if isinstance(provider, str | None) else id(provider)
    return (provider_key, model, None if tools is None else tuple(tools), system)


def new_session(
    provider: Provider | str | None = None,
    *,
    model: str | None = None,
    tools: Iterable[Tool | Callable[..., Any]] | None = None,
    system: str | None = None,
    **options: Any,
) -> ChatSession:
    """Start a new default session (forgetting the old conversation) and return it.

    With no provider named (here or in `STREAMCHAT_PROVIDER`), the backends are probed
    first; like every sync call, this waits for the answer.

    Example:
        >>> session = new_session("demo")
        >>> # chat("What time is it in Tokyo?")  # now uses `session`
    """
    tools = None if tools is None else list(tools)  # an iterator must not be consumed twice
    return _set_default(
        session_now(provider, model=model, tools=tools, system=system, **options), provider, model, tools, system
    )


def session_now(
    provider: Provider | str | None = None,
    *,
    model: str | None = None,
    tools: Iterable[Tool | Callable[..., Any]] | None = None,
    system: str | None = None,
    **options: Any,
) -> ChatSession:
    """A `ChatSession` whose backend is chosen now: a sync call, which waits for the probe on the private loop."""
    return _sync.run_sync(_session_chosen(provider, model, tools, system, options))


async def _session_chosen(
    provider: Provider | str | None, model: str | None, tools: Any, system: str | None, options: dict[str, Any]
) -> ChatSession:
    """A `ChatSession` made once its backend is chosen (awaited, so no loop ever waits for the probe)."""
    if not isinstance(provider, Provider):
        provider = (await choose_provider(provider, model=model, settings=options.get("settings"))).provider
        model = None  # the chosen provider has it
    return ChatSession(provider, model=model, tools=tools, system=system, **options)


async def _anew_session(
    provider: Provider | str | None, model: str | None, tools: list[Any] | None, system: str | None
) -> ChatSession:
    """`new_session` for `achat()`: the probe is awaited on the running loop, not waited for."""
    return _set_default(await _session_chosen(provider, model, tools, system, {}), provider, model, tools, system)


def _set_default(session: ChatSession, provider: Any, model: Any, tools: list[Any] | None, system: Any) -> ChatSession:
    global _default, _default_config
    _default, _default_config = session, _config(provider, model, tools, system)
    return session


def default_session() -> ChatSession:
    """The kernel's default session, created on first use from the settings."""
    return _default if _default is not None else new_session()


def _session_for(
    session: ChatSession | None, provider: Any, model: Any, tools: list[Any] | None, system: Any
) -> ChatSession | None:
    """`session`, or the default session these arguments ask for; None when a new default session is needed."""
    if session is not None:
        if (provider, model, tools, system) != (None, None, None, None):
            raise UsageError("pass either `session=` or provider/model/tools/system, not both")
        return session
    if (provider, model, tools, system) == (None, None, None, None) or _default_config == _config(
        provider, model, tools, system
    ):
        return _default
    return None


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


def _check_turn(session: ChatSession, message: str) -> None:
    """Refuse a turn the session would refuse, before a view is shown for it."""
    if not isinstance(message, str) or not message.strip():
        raise UsageError("the message must be a non-empty string")
    if session.busy:
        raise SessionBusyError("this session is already answering a message: wait for it or stop it")


def _renderer(session: ChatSession, mode: Literal["widget", "text"], *, stoppable: bool) -> _CellRenderer:
    if mode == "text":
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
    provider: Provider | str | None = None,
    model: str | None = None,
    tools: Iterable[Tool | Callable[..., Any]] | None = None,
    system: str | None = None,
    session: ChatSession | None = None,
    display: DisplayMode | None = None,
) -> ChatResult:
    """Send `message`, show the turn live in the cell, and return its `ChatResult`.

    Follow-up calls share the kernel's default session (`new_session()` starts another);
    `session=` uses yours. In a Jupyter kernel the turn shows as a `ChatView` widget,
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
    tools = None if tools is None else list(tools)  # an iterator must not be consumed twice
    chosen = _session_for(session, provider, model, tools, system) or new_session(
        provider, model=model, tools=tools, system=system
    )
    _check_turn(chosen, message)
    view = _renderer(chosen, _display_mode(display), stoppable=False)
    events: queue.Queue[object] = queue.Queue()

    async def pump() -> None:
        async for event in chosen.stream(message):
            events.put(event)

    future = _sync.submit(pump())
    future.add_done_callback(lambda _: events.put(_END))  # also when cancelled before it ran
    result = ResultCollector()
    coalescer = Coalescer(merge_progress=view.merges_progress)
    interrupted = False
    while True:
        try:
            due = coalescer.due_in()
            try:
                item = events.get(timeout=0.2 if due is None else due)
            except queue.Empty:
                _show(view, result, coalescer.flush())
                continue
            if item is _END:
                _show(view, result, coalescer.flush())
                break
            _show(view, result, coalescer.push(item))  # type: ignore[arg-type]
        except KeyboardInterrupt:
            if interrupted:  # a second Ctrl-C: stop waiting for a clean end
                future.cancel()
                raise
            interrupted = True
            if not chosen.cancel():  # the turn had not started yet
                future.cancel()
    if interrupted:
        view.stopped()
        view.finish()
        raise KeyboardInterrupt
    view.finish()
    future.result()  # re-raises a refused turn (busy session, empty message) here
    return result.build()


async def achat(
    message: str,
    *,
    provider: Provider | str | None = None,
    model: str | None = None,
    tools: Iterable[Tool | Callable[..., Any]] | None = None,
    system: str | None = None,
    session: ChatSession | None = None,
    display: DisplayMode | None = None,
) -> ChatResult:
    """Like `chat()`, on the running loop: ``await achat("…")``. The view's Stop button works.

    Example:
        >>> result = await achat("What time is it in Tokyo?")  # doctest: +SKIP
    """
    tools = None if tools is None else list(tools)  # an iterator must not be consumed twice
    chosen = _session_for(session, provider, model, tools, system) or await _anew_session(
        provider, model, tools, system
    )
    _check_turn(chosen, message)
    view = _renderer(chosen, _display_mode(display), stoppable=True)
    try:
        return await consume(chosen, message, view)
    finally:
        view.finish()


async def consume(session: ChatSession, message: str, view: _Renderer) -> ChatResult:
    """Stream one turn of `session` into `view` on the running loop, coalescing tokens."""
    events: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        async for event in session.stream(message):
            events.put_nowait(event)

    task = asyncio.get_running_loop().create_task(pump())
    task.add_done_callback(lambda _: events.put_nowait(_END))
    result = ResultCollector()
    coalescer = Coalescer(merge_progress=view.merges_progress)
    try:
        while True:
            try:
                item = await asyncio.wait_for(events.get(), timeout=coalescer.due_in())
            except TimeoutError:
                _show(view, result, coalescer.flush())
                continue
            if item is _END:
                _show(view, result, coalescer.flush())
                break
            _show(view, result, coalescer.push(item))  # type: ignore[arg-type]
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        view.stopped()
        raise
    await task  # re-raises a refused turn (busy session, empty message)
    return result.build()


def _show(view: _Renderer, result: ResultCollector, events: list[Event]) -> None:
    for event in events:
        result.add(event)
        view.handle(event)
