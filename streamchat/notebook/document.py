"""A finished turn as a document: static HTML, Markdown and plain text in one display bundle.

A live widget is for streaming; a saved notebook is a document. Widget outputs need the
kernel that made them: reopened later they read "Error displaying widget: model not
found", and nbconvert or a Git forge's viewer show nothing useful. So when a turn shown
by `chat()` or `achat()` ends, its display is updated, through its `display_id`, to the
bundle made here: the same prompt, status, tool cards with their final status, answer
and metrics line, as plain content that every frontend renders (docs/architecture.md).
"""

from __future__ import annotations

import html
import re
from typing import Any

import ipywidgets as widgets

from .view import ChatView, ToolCard, _AnswerPart

__all__ = ["LiveDisplay", "turn_document"]

_TAG = re.compile(r"<[^>]+>")
_CARD_STYLE = "border:1px solid var(--jp-border-color2, #ddd); padding:2px 6px; margin:4px 0"


def _plain(fragment: str) -> str:
    """The text of an HTML fragment made by the view (its own markup, or sanitized model output)."""
    return html.unescape(_TAG.sub("", fragment.replace("<br>", "\n"))).strip()


def turn_document(view: ChatView) -> dict[str, str]:
    """The turn shown by `view` as a display bundle: ``text/html``, ``text/markdown`` and ``text/plain``."""
    blocks_html: list[str] = []
    blocks_md: list[str] = []
    blocks_plain: list[str] = []
    if view.message:
        blocks_html.append(f'<p class="streamchat-prompt"><b>You:</b> {html.escape(view.message)}</p>')
        blocks_md.append(f"**You:** {view.message}")
        blocks_plain.append(f"You: {view.message}")
    if status := str(view.status.value):
        blocks_html.append(f'<p class="streamchat-status">{status}</p>')
        blocks_md.append(_plain(status))
        blocks_plain.append(_plain(status))
    for child in view.body.children:
        if isinstance(child, ToolCard):
            blocks_html.append(
                f'<div class="streamchat-card" style="{_CARD_STYLE}">'
                f'<div>{child.header.value}</div><div class="streamchat-card-detail">{child.detail.value}</div></div>'
            )
            outcome = child.outcome or _plain(str(child.detail.value))
            blocks_md.append(f"- **{child.tool}** `{child.args}` — {outcome}")
            blocks_plain.append(f"[{child.tool}] {outcome}")
        elif isinstance(child, _AnswerPart):
            blocks_html.append(f'<div class="streamchat-answer">{child.html}</div>')
            blocks_md.append(child.source.strip())
            blocks_plain.append(child.source.strip())
        elif isinstance(child, widgets.HTML):  # an error note
            blocks_html.append(f"<p>{child.value}</p>")
            blocks_md.append(_plain(str(child.value)))
            blocks_plain.append(_plain(str(child.value)))
    if footer := str(view.footer.value):
        blocks_html.append(f'<p class="streamchat-metrics"><small>{footer}</small></p>')
        blocks_md.append(f"*{_plain(footer)}*")
        blocks_plain.append(_plain(footer))
    return {
        "text/html": '<div class="streamchat-document">' + "".join(blocks_html) + "</div>",
        "text/markdown": "\n\n".join(blocks_md) + "\n",
        "text/plain": "\n".join(blocks_plain),
    }


class LiveDisplay:
    """A `ChatView` displayed in the cell with a `display_id`, replaced by its document when the turn ends."""

    merges_progress = True
    """As `ChatView`: progress reports arriving faster than the view updates are merged."""

    def __init__(self, view: ChatView) -> None:
        from IPython.display import display

        self.view = view
        """The live view."""
        self._handle: Any = display(view, display_id=True)  # type: ignore[no-untyped-call]
        view.transcript.homes.clear()  # `finish` replaces the view by its document: it leaves none of its own

    def handle(self, event: Any) -> None:
        """Render one event in the live view."""
        self.view.handle(event)

    def stopped(self) -> None:
        """Show "stopped" (see `ChatView.stopped`)."""
        self.view.stopped()

    def finish(self) -> None:
        """Replace the live view by the turn's document, in this cell's output and in the saved notebook."""
        if self._handle is not None:
            self._handle.update(turn_document(self.view), raw=True)
