"""Model text → safe HTML, finished-block detection, and token coalescing.

Model output is untrusted: Markdown is rendered by markdown-it-py (raw HTML allowed so
that nh3 can *remove* it instead of showing it escaped) and the HTML is then cleaned by
nh3 with an allowlist. nh3 is the single authority on tags, attributes and URL schemes:
markdown-it's own link check is relaxed so a `javascript:` link becomes a plain `<a>`
without `href` instead of literal source text.

Images are dropped by default (a Markdown image shows its alt text): an image loads by
itself, without a click, so a remote one leaks the conversation in its URL and a
same-origin one is a request made with the viewer's Jupyter cookies. With
``remote_images=True`` images whose address is ``https://`` load; others still do not.
Forms, inputs and `<style>` are not on the allowlist: model output cannot restyle the
page or pose as its controls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token

from ..events import Event, ThinkingEvent, TokenEvent, ToolProgressEvent

__all__ = ["Coalescer", "finished_prefix", "render_markdown"]

_ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "em", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "summary", "sup",
    "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "code": {"class"},
    "th": {"style"},
    "td": {"style"},
}
_URL_SCHEMES = {"http", "https", "mailto"}

_markdown = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
_markdown.validateLink = lambda url: True  # type: ignore[method-assign]  # nh3 drops unsafe URLs; see the module docstring


def _is_remote_image(src: object) -> bool:
    return isinstance(src, str) and src[:8].lower() == "https://"


def _image(self: RendererHTML, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    """A Markdown image: itself when remote images are on and it is one, else its alt text."""
    if env.get("remote_images") and _is_remote_image(tokens[idx].attrGet("src")):
        return RendererHTML.image(self, tokens, idx, options, env)
    return escapeHtml(self.renderInlineAsText(tokens[idx].children or [], options, env))


_markdown.add_render_rule("image", _image)


def _keep_remote_image_src(tag: str, attribute: str, value: str) -> str | None:
    return None if tag == "img" and attribute == "src" and not _is_remote_image(value) else value


def render_markdown(text: str, *, remote_images: bool = False) -> str:
    """Render untrusted Markdown to sanitized HTML (no scripts, handlers, iframes, forms or styles).

    Images are dropped (Markdown ones leave their alt text) unless `remote_images` is
    True; then ``https://`` images stay and every other image loses its address.
    """
    return nh3.clean(
        _markdown.render(text, {"remote_images": remote_images}),
        tags=_ALLOWED_TAGS if remote_images else _ALLOWED_TAGS - {"img"},
        attributes=_ALLOWED_ATTRIBUTES,
        attribute_filter=_keep_remote_image_src if remote_images else None,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )


def finished_prefix(text: str) -> int:
    """Length of the leading part of `text` made of Markdown blocks that are complete.

    A top-level block is complete once another top-level block has started after it:
    nothing later can change how it renders (reference links defined later aside). The
    last block may still grow, so it is never part of the prefix.
    """
    starts = [tok.map[0] for tok in _markdown.parse(text) if tok.level == 0 and tok.map and tok.nesting >= 0]
    if len(starts) < 2 or starts[-1] == 0:
        return 0
    offset = 0
    for _ in range(starts[-1]):
        offset = text.index("\n", offset) + 1
    return offset


class Coalescer:
    """Merges bursts of text deltas and progress reports so a view updates at most once per `interval`.

    The first delta after a quiet period passes at once; later ones wait until `interval`
    has passed since the last update and go out merged (text concatenated; for progress,
    the latest report of each tool call and stage). Any other event first flushes what is pending,
    so the order of text and tool events is kept. `clock` is injectable so tests can
    drive time.
    """

    def __init__(
        self, interval: float = 0.06, clock: Callable[[], float] = time.monotonic, *, merge_progress: bool = True
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.merge_progress = merge_progress
        """False passes every progress report (a text log prints each one)."""
        self._text: list[TokenEvent | ThinkingEvent] = []
        self._progress: dict[str, ToolProgressEvent] = {}
        self._last = -float("inf")

    def push(self, event: Event) -> list[Event]:
        """Take one event; return the events to render now, in order."""
        if isinstance(event, ToolProgressEvent) and self.merge_progress:
            pending = self._progress.get(event.call_id)
            # A newer report replaces an unsent one of the same stage; a new stage (e.g.
            # "paused") is never merged away, so the view sees every stage change.
            changed = pending is not None and pending.stage != event.stage
            out = self.flush() if self._text or changed else []
            self._progress[event.call_id] = event
        elif isinstance(event, TokenEvent) or (isinstance(event, ThinkingEvent) and event.kind == "reasoning"):
            switching = self._progress or (self._text and type(self._text[-1]) is not type(event))
            out = self.flush() if switching else []
            self._text.append(event)
        else:
            return [*self.flush(), event]
        if self.clock() - self._last >= self.interval:
            out.extend(self.flush())
        return out

    def due_in(self) -> float | None:
        """Seconds until what is pending must be flushed (0 if overdue); None if nothing is pending."""
        if not self._text and not self._progress:
            return None
        return max(0.0, self._last + self.interval - self.clock())

    def flush(self) -> list[Event]:
        """Return what is pending, merged, and restart the interval (if anything was pending)."""
        out: list[Event] = [*self._progress.values()]
        text, self._text, self._progress = self._text, [], {}
        if len(text) == 1:
            out.append(text[0])
        elif text and isinstance(text[-1], TokenEvent):
            out.append(text[-1].model_copy(update={"content": "".join(e.content for e in text)}))  # type: ignore[union-attr]
        elif text:
            out.append(text[-1].model_copy(update={"text": "".join(e.text for e in text)}))  # type: ignore[union-attr]
        if out:
            self._last = self.clock()
        return out
