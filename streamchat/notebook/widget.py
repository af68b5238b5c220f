"""`ChatWidget`: an interactive chat UI in one cell (input, Send, Stop, Clear, tool controls).

Turns run as background tasks on the kernel's event loop, so every button keeps working
while an answer streams. Each widget has its own session: several in one notebook are
independent.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets

from ..errors import StreamChatError, UsageError
from ..providers.base import Provider
from ..result import ChatResult
from ..session import ChatSession
from ..tools.definition import Tool
from .chat import consume, session_now
from .view import ChatView

__all__ = ["ChatWidget"]


class ChatWidget(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """An interactive chat: type a message and press Enter (or Send); Stop, Clear, per-tool controls.

    Example:
        >>> ChatWidget(provider="demo")  # doctest: +SKIP
    """

    def __init__(
        self,
        provider: Provider | str | None = None,
        *,
        model: str | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | None = None,
        system: str | None = None,
        session: ChatSession | None = None,
    ) -> None:
        if session is not None and (provider, model, tools, system) != (None, None, None, None):
            raise UsageError("pass either `session=` or provider/model/tools/system, not both")
        self.session = session or session_now(provider, model=model, tools=tools, system=system)
        """The conversation this widget drives."""
        self.views: list[ChatView] = []
        """One `ChatView` per turn, oldest first."""
        self.task: asyncio.Task[ChatResult | None] | None = None
        """The running turn, if any."""
        self.label = widgets.HTML(f"<small>{html.escape(self.session.provider.describe())}</small>")
        self.conversation = widgets.VBox(_dom_classes=("streamchat-conversation",))
        self.input = widgets.Text(placeholder="Ask something and press Enter", continuous_update=False)
        self.input.layout.width = "60%"
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.clear_button = widgets.Button(description="Clear", icon="trash")
        self.notice = widgets.HTML(_dom_classes=("streamchat-notice",))
        self.input.observe(self._on_enter, names="value")
        self.send_button.on_click(lambda _: self._submit())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        bar = widgets.HBox([self.input, self.send_button, self.stop_button, self.clear_button])
        super().__init__([self.label, self.conversation, bar, self.notice], _dom_classes=("streamchat-widget",))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle: dict[str, Any] | None = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:  # what a frontend without widgets shows instead
            bundle["text/plain"] = "ChatWidget (an interactive widget: open this notebook in Jupyter to use it)"
        return bundle

    # -- actions ------------------------------------------------------------------------

    def send(self, message: str) -> asyncio.Task[ChatResult | None]:
        """Start a turn as a background task on the running loop and return the task."""
        if self.task is not None and not self.task.done():
            raise UsageError("an answer is still streaming: stop it or wait for it first")
        if not message.strip():
            raise UsageError("the message must be a non-empty string")
        # A background task outlives the request that started it, so blocks go into widgets.
        view = ChatView(message, controls=self.session.control_tool, blocks="widgets")
        self.views.append(view)
        self.conversation.children = (*self.conversation.children, view)
        self.stop_button.disabled = False
        self.notice.value = ""
        self.task = asyncio.get_running_loop().create_task(self._run(message, view), name="streamchat widget turn")
        return self.task

    async def ask(self, message: str) -> ChatResult | None:
        """Send `message` and wait for the turn; the `ChatResult` (None if it was refused)."""
        return await self.send(message)

    def stop(self) -> bool:
        """Stop the streaming answer (as the Stop button does)."""
        return self.session.cancel()

    def clear(self) -> None:
        """Forget the conversation and empty the view (refused while an answer streams)."""
        if self.session.busy:
            self.notice.value = "Stop the answer before clearing."
            return
        self.session.clear()
        self.views.clear()
        self.conversation.children = ()
        self.notice.value = ""

    # -- internals ----------------------------------------------------------------------

    def _submit(self) -> None:
        message = self.input.value.strip()
        if not message:
            return
        try:
            self.send(message)
        except UsageError as exc:
            self.notice.value = html.escape(exc.message)
            return
        self.input.value = ""

    def _on_enter(self, change: dict[str, Any]) -> None:
        if change["new"].strip():
            self._submit()

    async def _run(self, message: str, view: ChatView) -> ChatResult | None:
        try:
            return await consume(self.session, message, view)
        except StreamChatError as exc:
            view.stopped()
            self.notice.value = html.escape(exc.message)
            return None
        finally:
            self.stop_button.disabled = True
