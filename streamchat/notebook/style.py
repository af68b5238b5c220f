"""The look of a turn, live (`ChatView`) and as a document (`turn_document`): one stylesheet, one set of classes.

The answer is shown with JupyterLab's own rendered-Markdown classes (`MARKDOWN_CLASSES`),
so links, code, tables and blockquotes look as in a Markdown cell, and the block still
being written looks exactly like the finished ones (same font size and line height: an
ipywidgets `HTML` is otherwise 13 px text on 28 px lines). Colours come only from
JupyterLab's theme variables, so the light and dark themes both read well, and no glyph
needs an emoji font: status marks are plain symbols (✓ ✗ ■ →) of common fonts, and icons
are the FontAwesome ones ipywidgets ships (an empty `<i>` where FontAwesome is absent).

`STYLESHEET` is a `<style>` element scoped to `.streamchat-view` and `.streamchat-document`:
the live view carries it in a hidden `HTML` widget, the document in its HTML. The
document's parts also carry the few inline styles that matter where a renderer drops
`<style>` (a Git forge's viewer).
"""

from __future__ import annotations

__all__ = ["BORDER", "MARKDOWN_CLASSES", "STYLESHEET", "icon"]

MARKDOWN_CLASSES = ("jp-RenderedHTMLCommon", "jp-RenderedMarkdown", "streamchat-markdown")
"""The classes of every rendered answer block, live or finished: JupyterLab's Markdown look."""

BORDER = "1px solid var(--jp-border-color2)"
"""A tool card's border (a theme colour)."""


def icon(name: str) -> str:
    """A FontAwesome icon as ipywidgets ships it (e.g. ``icon("wrench")``); invisible where FontAwesome is absent."""
    return f'<i class="fa fa-{name}" aria-hidden="true"></i> '


def _rule(selectors: str, body: str) -> str:
    """`body` for each of `selectors` (comma-separated) inside a live view or a document."""
    inner = ",".join(selector.strip() for selector in selectors.split(","))
    return f":is(.streamchat-view,.streamchat-document) :is({inner}){{{body}}}"


STYLESHEET = (
    "<style>"
    # The document is laid out as the live view's boxes are (flex columns: no margin collapsing),
    # and as wide (JupyterLab pads HTML output on the right, not widget output).
    + ".jp-RenderedHTMLCommon:has(> .streamchat-document){padding-right:0}"
    + ".jp-RenderedHTMLCommon > .streamchat-document.streamchat-document{margin:0}"
    + ".streamchat-document, .streamchat-document .streamchat-body, .streamchat-document .streamchat-answer,"
    + ".streamchat-document .streamchat-card{display:flex;flex-direction:column}"
    # Turns one under another (`ChatWidget`): a rule between them.
    + ".streamchat-view + .streamchat-view{border-top:1px solid var(--jp-border-color2);padding-top:6px;margin-top:6px}"
    # The header keeps the height of its Stop button after the button is gone.
    + _rule(
        ".streamchat-header",
        "display:flex;align-items:center;margin:0;min-height:calc(var(--jp-widgets-inline-height, 28px) + 4px)",
    )
    # The answer: JupyterLab's Markdown font and rhythm on every block, live or frozen.
    + _rule(
        ".streamchat-answer .jp-RenderedHTMLCommon, .streamchat-answer .jp-RenderedHTMLCommon > .widget-html-content",
        "font-family:var(--jp-content-font-family);font-size:var(--jp-content-font-size1);"
        "line-height:var(--jp-content-line-height);color:var(--jp-content-font-color1);"
        "overflow-wrap:anywhere;padding:0;margin:0;white-space:normal",
    )
    # One gap between paragraphs (1em), whether they are in one block or in consecutive ones.
    + _rule(".streamchat-answer .jp-RenderedHTMLCommon > *", "margin-top:0;margin-bottom:0")
    + _rule(
        ".streamchat-answer .jp-RenderedHTMLCommon > .widget-html-content > *, "
        ".streamchat-answer .jp-RenderedHTMLCommon > :not(.widget-html-content)",
        "margin:0 0 0.5em 0",
    )
    + _rule(".streamchat-answer pre, .streamchat-answer code", "white-space:pre-wrap;overflow-wrap:anywhere")
    + _rule(".streamchat-answer .jp-OutputArea-output", "padding:0;margin:0;overflow:visible")
    + _rule(".streamchat-answer .jp-OutputArea-child, .streamchat-answer .jupyter-widgets", "margin:0;padding:0")
    # Status line, prompt, metrics and cards: the UI font, theme colours.
    + _rule(
        ".streamchat-prompt, .streamchat-status, .streamchat-metrics, .streamchat-card-header, "
        ".streamchat-card-detail, .streamchat-note",
        "font-family:var(--jp-ui-font-family);font-size:var(--jp-ui-font-size1);"
        "line-height:var(--jp-content-line-height);margin:0;padding:0;overflow-wrap:anywhere;white-space:normal",
    )
    + _rule(
        ".streamchat-prompt > .widget-html-content, .streamchat-status > .widget-html-content, "
        ".streamchat-metrics > .widget-html-content, .streamchat-card-header > .widget-html-content, "
        ".streamchat-card-detail > .widget-html-content, .streamchat-note > .widget-html-content",
        "line-height:inherit;white-space:normal",
    )
    + _rule(".streamchat-prompt", "color:var(--jp-content-font-color1)")
    + _rule(".streamchat-status, .streamchat-metrics", "color:var(--jp-ui-font-color2)")
    + _rule(".streamchat-note", "color:var(--jp-error-color1)")
    + _rule(".streamchat-card", f"border:{BORDER};border-radius:2px;padding:2px 6px;margin:4px 0")
    + _rule(".streamchat-card-header code", "background:var(--jp-layout-color2);padding:0 2px")
    + _rule(".streamchat-card-detail", "color:var(--jp-content-font-color1)")
    + _rule(
        ".streamchat-card progress", "width:80%;height:0.8em;vertical-align:middle;accent-color:var(--jp-brand-color1)"
    )
    + _rule(".streamchat-paused, .streamchat-cancelled", "color:var(--jp-warn-color1)")
    + _rule(".streamchat-ok", "color:var(--jp-success-color1)")
    + _rule(".streamchat-failed", "color:var(--jp-error-color1)")
    + _rule(".streamchat-thinking", "color:var(--jp-ui-font-color3)")
    + "</style>"
)
"""The stylesheet of the live view and of the document (a `<style>` element)."""
