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

from .style import BORDER, MARKDOWN_CLASSES, STYLESHEET
from .view import STATUS_TEXT, ChatView, ToolCard, _AnswerPart

__all__ = ["LiveDisplay", "turn_document"]

_TAG = re.compile(r"<[^>]+>")
_MARKDOWN = " ".join(MARKDOWN_CLASSES)
# Inline styles for renderers that drop `<style>` (a Git forge's viewer); theme colours only.
_CARD_STYLE = f"border:{BORDER}; padding:2px 6px; margin:4px 0"


def _plain(fragment: str) -> str:
    """The text of an HTML fragment made by the view (its own markup, or sanitized model output)."""
    return html.unescape(_TAG.sub("", fragment.replace("<br>", "\n"))).strip()


def turn_document(view: ChatView) -> dict[str, str]:
    """The turn shown by `view` as a display bundle: ``text/html``, ``text/markdown`` and ``text/plain``.

    The HTML has the live view's structure, classes and stylesheet (`style.py`), so the
    document that replaces the view at the end of a turn looks the same and as tall.
    """
    blocks_html: list[str] = [STYLESHEET]
    blocks_md: list[str] = []
    blocks_plain: list[str] = []
    if view.message:
        blocks_html.append(f'<div class="streamchat-prompt"><b>You:</b> {html.escape(view.message)}</div>')
        blocks_md.append(f"**You:** {view.message}")
        blocks_plain.append(f"You: {view.message}")
    status = str(view.status.value)
    blocks_html.append(f'<div class="streamchat-header"><div class="streamchat-status">{status}</div></div>')
    if status and status != STATUS_TEXT["stop"]:  # the text says how a turn ended only when it did not simply end
        blocks_md.append(_plain(status))
        blocks_plain.append(_plain(status))
    body: list[str] = []
    for child in view.body.children:
        if isinstance(child, ToolCard):
            body.append(
                f'<div class="streamchat-card" style="{_CARD_STYLE}">'
                f'<div class="streamchat-card-header">{child.header.value}</div>'
                f'<div class="streamchat-card-detail">{child.detail.value}</div></div>'
            )
            outcome = child.outcome or _plain(str(child.detail.value))
            blocks_md.append(f"- **{child.tool}** `{child.args}` — {outcome}")
            blocks_plain.append(f"[{child.tool}] {outcome}")
        elif isinstance(child, _AnswerPart):
            body.append(f'<div class="streamchat-answer"><div class="{_MARKDOWN}">{child.html}</div></div>')
            blocks_md.append(child.source.strip())
            blocks_plain.append(child.source.strip())
        elif isinstance(child, widgets.HTML):  # an error note
            body.append(f'<div class="streamchat-note">{child.value}</div>')
            blocks_md.append(_plain(str(child.value)))
            blocks_plain.append(_plain(str(child.value)))
    blocks_html.append(f'<div class="streamchat-body">{"".join(body)}</div>')
    footer = str(view.footer.value)
    blocks_html.append(f'<div class="streamchat-metrics">{footer}</div>')
    if footer:
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
