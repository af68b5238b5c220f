"""`ChatWidget`: an interactive chat UI in one cell (input, Send, Stop, Clear, tool controls).

Each widget has its own session: several in one notebook are independent.

Concurrency model. Comm handlers (Enter in the box, the buttons, a tool card's controls)
may run on any thread: JupyterLab ≥ 4.6 sends widget messages over kernel subshells, and
ipykernel then handles a comm's messages on the thread of the subshell it last answered
from, so a text box's update and a click on Send can be handled at the same moment on
two threads (`tests/lab/test_lab_harness.py` shows it). So:

- The widget has one home loop: the event loop running where it was made (in a
  notebook, the kernel's loop), or streamchat's private loop (`streamchat._sync`) when
  none was running. Its turns run there as tasks, one at a time, and every change to
  the widget's own state (views, input, notice, Stop button) is made there.
- A handler only reads the input and hands the work to the home loop
  (`call_soon_threadsafe`). Taking a submission is a check-and-set under a lock, held
  until the turn has ended: a submission is taken exactly once, and one made while a
  turn is taken is refused with a notice that the end of that turn removes.
- Stop and the per-tool Pause/Resume/Cancel go through the session's thread-safe
  controls, which act on the turn that is running; a control of a call that belongs to
  an earlier turn finds no such call and does nothing.
- Only Enter (the box's ``submit`` message) and Send submit; leaving the box sends
  nothing. The box syncs its value as the user types (`continuous_update`), so the text
  reaches the kernel before the Enter or the click that sends it.

Answers survive saving. A widget's output needs the kernel that made it: reopened later, it
reads "Error displaying widget: model not found". So the cell that displays the widget is
its home (`CellOutput`: its request's parent header, recorded in `_repr_mimebundle_`), and
every ended turn is sent there as a static document too (`Transcript`, `turn_document`:
HTML, Markdown and plain text, with a `display_id` that Clear blanks). The frontend files
it under that cell, which it keeps open after the cell finished, so the saved notebook has
every turn as plain content that nbconvert and a Git forge show. In JupyterLab and Notebook
7, a small `<style>` in the documents (`TRANSCRIPT_STYLE`) hides them while the live widget
is in the same output area, and hides the widget's dead output ("model not found", or a
disconnected copy from saved widget state) once it is not. Finished Markdown blocks of the live view go
to the home cell the same way (`ChatView`'s `output`), captured by an `Output` widget.
A widget never displayed by itself (only inside another container) has no home: its turns
leave no document and its view keeps whole answers in one `HTML` widget.
"""

from __future__ import annotations

import asyncio
import html
import threading
from collections.abc import Callable
from typing import Any, Unpack

import ipywidgets as widgets

from .. import _sync
from ..errors import StreamChatError, UsageError
from ..providers.base import Provider
from ..result import ChatResult
from ..session import ChatSession, SessionOptions
from .cell import Transcript
from .chat import check_one_source, consume, session_now
from .document import turn_document
from .view import ChatView

__all__ = ["ChatWidget"]

BUSY = "an answer is still streaming: stop it or wait for it first"
"""The notice (and `UsageError` message) for a message sent while a turn is taken."""
CLEAR_REFUSED = "Stop the answer before clearing."


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ChatWidget(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """An interactive chat: type a message and press Enter (or Send); Stop, Clear, per-tool controls.

    Its session is `session=`, or a new one made with `provider` and the `SessionOptions`
    (`model=`, `tools=`, `system=`).

    Example:
        >>> ChatWidget(provider="demo")  # doctest: +SKIP
    """

    def __init__(
        self,
        provider: Provider | str | None = None,
        *,
        session: ChatSession | None = None,
        **options: Unpack[SessionOptions],
    ) -> None:
        check_one_source(session, provider, options)
        self.session = session or session_now(provider, **options)
        """The conversation this widget drives."""
        self.views: list[ChatView] = []
        """One `ChatView` per turn, oldest first."""
        self.task: asyncio.Task[ChatResult | None] | None = None
        """The latest turn's task (done once the turn has ended)."""
        self.loop = _running_loop() or _sync.private_loop()
        """The home loop: where this widget's turns run and its state changes (see the module docstring)."""
        self._lock = threading.Lock()
        self._taken = False  # a submission is taken: its turn is about to start or running
        self._turn_notice = ""  # a notice about the running turn, removed when it ends
        self.transcript = Transcript()
        """The cells this widget was displayed in, and the turn documents it left there."""
        self.label = widgets.HTML(f"<small>{html.escape(self.session.provider.describe())}</small>")
        self.conversation = widgets.VBox(_dom_classes=("streamchat-conversation",))
        self.input = widgets.Text(placeholder="Ask something and press Enter", _dom_classes=("streamchat-input",))
        self.input.layout.width = "60%"
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.clear_button = widgets.Button(description="Clear", icon="trash")
        self.notice = widgets.HTML(_dom_classes=("streamchat-notice",))
        self.input.on_msg(self._on_input_message)
        self.send_button.on_click(lambda _: self._submit())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self._at_home(self.clear))
        bar = widgets.HBox([self.input, self.send_button, self.stop_button, self.clear_button])
        super().__init__([self.label, self.conversation, bar, self.notice], _dom_classes=("streamchat-widget",))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle: dict[str, Any] | None = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:  # what a frontend without widgets shows instead
            bundle["text/plain"] = "ChatWidget (an interactive widget: open this notebook in Jupyter to use it)"
            self.transcript.displayed()  # this cell is a home (see the module docstring)
        return bundle

    # -- actions ------------------------------------------------------------------------

    def send(self, message: str) -> asyncio.Task[ChatResult | None]:
        """Start a turn as a task on the widget's home loop and return it; call it on that loop.

        Raises `UsageError` for an empty message, or while another turn is taken.
        """
        if not isinstance(message, str) or not message.strip():
            raise UsageError("the message must be a non-empty string")
        if not self._at_home_now():
            raise UsageError("call send() on the event loop the widget was made on (in a notebook: from a cell)")
        if not self._take():
            raise UsageError(BUSY)
        return self._start(message, from_input=False)

    async def ask(self, message: str) -> ChatResult | None:
        """Send `message` and wait for the turn; the `ChatResult` (None if it was refused)."""
        return await self.send(message)

    def stop(self) -> bool:
        """Stop the streaming answer (as the Stop button does); False if none was running. Thread-safe."""
        return self.session.cancel()

    def clear(self) -> None:
        """Forget the conversation and empty the view (refused while an answer streams)."""
        if not self._at_home_now():
            raise UsageError("call clear() on the event loop the widget was made on (in a notebook: from a cell)")
        with self._lock:
            busy = self._taken or self.session.busy
        if busy:
            self._notify(CLEAR_REFUSED, until_turn_ends=True)
            return
        self.session.clear()
        self.views.clear()
        self.conversation.children = ()
        self._notify("")
        self.transcript.clear()  # the saved notebook forgets the conversation too

    # -- internals: any thread ----------------------------------------------------------

    def _on_input_message(self, _: object, content: dict[str, Any], buffers: object) -> None:
        if content.get("event") == "submit":  # Enter in the box
            self._submit()

    def _submit(self) -> None:
        """Enter or Send: take the submission once, then start it (or refuse it) on the home loop."""
        message = str(self.input.value).strip()
        if not message:
            return
        if self._take():
            self._at_home(self._start, message, from_input=True)
        else:
            self._at_home(self._refuse)

    def _take(self) -> bool:
        with self._lock:
            if self._taken:
                return False
            self._taken = True
            return True

    def _at_home_now(self) -> bool:
        return _running_loop() is self.loop

    def _at_home(self, action: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run `action` on the home loop: now if this is it, else as soon as it gets to it."""
        if self._at_home_now():
            action(*args, **kwargs)
        else:
            self.loop.call_soon_threadsafe(lambda: action(*args, **kwargs))

    # -- internals: on the home loop ----------------------------------------------------

    def _start(self, message: str, *, from_input: bool) -> asyncio.Task[ChatResult | None]:
        try:
            # Finished blocks go to the home cell, whichever request is being handled now.
            view = ChatView(message, controls=self.session.control_tool, output=self.transcript.home)
            self.views.append(view)
            self.conversation.children = (*self.conversation.children, view)
            if from_input and str(self.input.value).strip() == message:
                self.input.value = ""
            self.stop_button.disabled = False
            self._notify("")
            self.task = self.loop.create_task(self._run(message, view), name="streamchat widget turn")
        except BaseException:
            self._release()
            raise
        return self.task

    def _refuse(self) -> None:
        # Handed over from another thread: the turn may have ended meanwhile.
        if self._taken:
            self._notify(BUSY, until_turn_ends=True)

    def _notify(self, text: str, *, until_turn_ends: bool = False) -> None:
        self.notice.value = html.escape(text)
        self._turn_notice = self.notice.value if until_turn_ends else ""

    def _release(self) -> None:
        if self._turn_notice and self.notice.value == self._turn_notice:
            self._notify("")
        self.stop_button.disabled = True
        with self._lock:
            self._taken = False

    async def _run(self, message: str, view: ChatView) -> ChatResult | None:
        error = ""
        try:
            return await consume(self.session, message, view)
        except StreamChatError as exc:  # refused by the session (busy elsewhere) or failed before streaming
            view.stopped()
            error = exc.message
            return None
        finally:
            self.transcript.leave(turn_document(view))
            self._release()
            if error:
                self._notify(error)
