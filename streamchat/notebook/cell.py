"""`CellOutput`: a cell's output area as the kernel addresses it, for display data sent at any time.

A Jupyter frontend files each iopub message under the request named by its parent header.
JupyterLab (and Notebook 7) keep a cell's request open after it finished, until the cell is
run again or cleared, so display data sent later with that cell's parent header still lands
in that cell; an ipywidgets `Output` widget whose `msg_id` is that request's id captures it
instead. `chat()` and `achat()` send with the running cell's header; `ChatWidget` sends with
the header of the cell that displayed it (its home), whichever request is running meanwhile
— a comm message handled on a subshell thread, or another cell. nbclient (nbconvert,
nbval) only reads a cell's messages while it runs, so what comes later is not in its outputs.

Messages go through the kernel's display publisher's session and socket (ipykernel's
iopub socket is thread-safe), with the parent header given explicitly: the publisher's own
`publish()` uses the header of the request being handled.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["TRANSCRIPT_STYLE", "CellOutput", "Transcript"]

Send = Callable[[str, dict[str, Any], dict[str, Any]], None]
"""Sends one iopub message: (msg_type, content, parent header)."""

_capturing: dict[str, Any] = {}  # a request's msg_id → the `Output` widget now capturing its display data
_capturing_lock = threading.Lock()


def _shell() -> Any:
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return None
    current: Callable[[], Any] = get_ipython  # typed through Any: IPython 8 is untyped, IPython 9 typed
    return current()


class CellOutput:
    """Where display data goes: the output area of the request with this parent header (nowhere without a kernel)."""

    def __init__(self, parent: dict[str, Any] | None = None, send: Send | None = None) -> None:
        self.parent: dict[str, Any] = dict(parent or {})
        """The parent header the messages carry (the cell's `execute_request` header)."""
        self._send = send

    @classmethod
    def current(cls) -> CellOutput:
        """The output area of the request the kernel is handling now (in a cell: that cell's)."""
        shell = _shell()
        kernel = getattr(shell, "kernel", None)
        if kernel is None:
            return cls()
        parent = dict(kernel.get_parent().get("header", {}))
        publisher = shell.display_pub

        def send(msg_type: str, content: dict[str, Any], header: dict[str, Any]) -> None:
            sys.stdout.flush()  # what the cell printed before comes first, as `display()` does
            sys.stderr.flush()
            publisher.session.send(publisher.pub_socket, msg_type, content, parent=header, ident=publisher.topic)

        return cls(parent, send if parent.get("msg_id") else None)

    @property
    def msg_id(self) -> str:
        """The id of the request these outputs belong to ("" when there is none)."""
        return str(self.parent.get("msg_id", ""))

    @property
    def connected(self) -> bool:
        """True when there is a frontend to send to (a kernel and a request)."""
        return self._send is not None

    def display(self, data: dict[str, str], *, display_id: str | None = None, update: bool = False) -> None:
        """Send `data` as display data (or, with `update`, replace the outputs shown with `display_id`)."""
        if self._send is None:
            return
        content = {"data": data, "metadata": {}, "transient": {"display_id": display_id} if display_id else {}}
        self._send("update_display_data" if update else "display_data", content, self.parent)

    def capture_into(self, output: Any, data: dict[str, str]) -> None:
        """Send `data` so that the ipywidgets `Output` widget `output` captures it (see the module docstring).

        One widget at a time captures a request's display data: the frontend gives a message
        to the last hook registered only. So another widget capturing this request stops first.
        """
        if self._send is None:
            return
        with _capturing_lock:
            holder = _capturing.get(self.msg_id)
            if holder is not output:
                if holder is not None and holder.msg_id == self.msg_id:
                    holder.msg_id = ""
                _capturing[self.msg_id] = output
                output.msg_id = self.msg_id
        self.display(data)

    def release(self, output: Any) -> None:
        """Stop `output` capturing: what the request shows next goes to the cell again."""
        with _capturing_lock:
            if _capturing.get(self.msg_id) is output:
                del _capturing[self.msg_id]
        if output.msg_id:
            output.msg_id = ""


TRANSCRIPT_STYLE = (
    "<style>"
    # While the live widget is in this output area, the documents left there are hidden...
    ".jp-OutputArea:has(:is(.streamchat-widget,.streamchat-view):not(.jupyter-widgets-disconnected))"
    " .jp-OutputArea-child:has(.streamchat-transcript){display:none}"
    # ...and once it is gone, what stands in its place is: "model not found", or a disconnected copy...
    ".jp-OutputArea:has(.streamchat-transcript) .jp-OutputArea-child:has(> .jp-OutputArea-output.jupyter-widgets),"
    ".jp-OutputArea:has(.streamchat-transcript)"
    " .jp-OutputArea-child:has(:is(.streamchat-widget,.streamchat-view).jupyter-widgets-disconnected),"
    # ...or "Loading widget..." (the widget renderer, a panel, with text but no view in it).
    ".jp-OutputArea:has(.streamchat-transcript) .jp-OutputArea-output.lm-Panel:not(:has(*))"
    "{display:none}"
    "</style>"
)
"""Shipped in each document a live widget leaves: shows the documents or the widget, whichever is alive."""
_EMPTY = {"text/html": '<div class="streamchat-transcript"></div>', "text/plain": ""}


class Transcript:
    """The cells a live widget was displayed in (its homes), and the turn documents it left there.

    A widget's output needs the kernel that made it: reopened later it reads "Error
    displaying widget: model not found". So each ended turn is also sent to every home as
    a static document (HTML, Markdown, plain text) with a `display_id`. It stays in the
    saved notebook, where nbconvert and a Git forge show it; in JupyterLab and Notebook 7
    `TRANSCRIPT_STYLE` shows either the live widget or the documents, never both.
    """

    def __init__(self) -> None:
        self.homes: list[CellOutput] = []
        """Where the widget was displayed, oldest first (each cell once)."""
        self.display_ids: list[str] = []
        """The documents left, oldest first."""

    def displayed(self) -> None:
        """Record the cell displaying the widget now (call from `_repr_mimebundle_`)."""
        home = CellOutput.current()
        if home.connected and all(h.msg_id != home.msg_id for h in self.homes):
            self.homes.append(home)

    @property
    def home(self) -> CellOutput:
        """The cell that displayed the widget last (nowhere if it was never displayed by itself)."""
        return self.homes[-1] if self.homes else CellOutput()

    def leave(self, document: dict[str, str]) -> None:
        """Send a turn's document (`turn_document`) to every home, shown once the widget is gone."""
        if not self.homes:
            return
        display_id = f"streamchat-{uuid.uuid4().hex}"
        self.display_ids.append(display_id)
        page = f'<div class="streamchat-transcript">{TRANSCRIPT_STYLE}{document["text/html"]}</div>'
        for home in self.homes:
            home.display({**document, "text/html": page}, display_id=display_id)

    def clear(self) -> None:
        """Blank every document left (in the page, and so in the saved notebook)."""
        for display_id in self.display_ids:
            self.home.display(_EMPTY, display_id=display_id, update=True)
        self.display_ids.clear()
