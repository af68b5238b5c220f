"""Model text → safe HTML, finished-block detection, and token coalescing.

Model output is untrusted: Markdown is rendered by markdown-it-py (raw HTML allowed so
that nh3 can *remove* it instead of showing it escaped) and the HTML is then cleaned by
nh3 with an allowlist. nh3 is the single authority on tags, attributes and URL schemes:
markdown-it's own link check is relaxed so a `javascript:` link becomes a plain `<a>`
without `href` instead of literal source text.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import nh3
from markdown_it import MarkdownIt

from ..events import Event, ThinkingEvent, TokenEvent

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


def render_markdown(text: str) -> str:
    """Render untrusted Markdown to sanitized HTML (no scripts, handlers, iframes or `javascript:`)."""
    return nh3.clean(
        _markdown.render(text),
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
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
    """Merges bursts of text deltas so a view updates at most once per `interval` seconds.

    The first delta after a quiet period passes at once; later ones wait until `interval`
    has passed since the last update and go out merged. Any other event first flushes the
    pending text, so the order of text and tool events is kept. `clock` is injectable so
    tests can drive time.
    """

    def __init__(self, interval: float = 0.06, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._pending: list[TokenEvent | ThinkingEvent] = []
        self._last = -float("inf")

    def push(self, event: Event) -> list[Event]:
        """Take one event; return the events to render now, in order."""
        if not _mergeable(event):
            return [*self.flush(), event]
        if self._pending and not _same_stream(self._pending[-1], event):
            out = self.flush()
        else:
            out = []
        self._pending.append(event)  # type: ignore[arg-type]
        if self.clock() - self._last >= self.interval:
            out.extend(self.flush())
        return out

    def due_in(self) -> float | None:
        """Seconds until the pending text must be flushed (0 if overdue); None if none is pending."""
        if not self._pending:
            return None
        return max(0.0, self._last + self.interval - self.clock())

    def flush(self) -> list[Event]:
        """Return the pending text as one merged event (or nothing), and restart the interval."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        self._last = self.clock()
        last = pending[-1]
        if len(pending) == 1:
            return [last]
        if isinstance(last, TokenEvent):
            return [last.model_copy(update={"content": "".join(e.content for e in pending)})]  # type: ignore[union-attr]
        return [last.model_copy(update={"text": "".join(e.text for e in pending)})]  # type: ignore[union-attr]


def _mergeable(event: Event) -> bool:
    return isinstance(event, TokenEvent) or (isinstance(event, ThinkingEvent) and event.kind == "reasoning")


def _same_stream(a: Event, b: Event) -> bool:
    return type(a) is type(b)
