"""`ChatView`: one turn as ipywidgets — streamed Markdown, a card per tool call, metrics.

Bytes sent to the frontend grow linearly with the answer: finished Markdown blocks are
published once, as display data sent to the view's cell (`CellOutput`) and captured there
by an `Output` widget, and only the block still being written lives in an `HTML` widget that
is re-sent when it grows. Like every surface, the view only renders events
(docs/architecture.md).

The parts carry CSS classes (`streamchat-view`, `-prompt`, `-header`, `-status`,
`-answer`, `-card`, `-card-header`, `-card-detail`, `-note`, `-metrics`) for the
stylesheet (`style.py`: JupyterLab's Markdown look and theme colours, no emoji) and for
the browser tests in `tests/lab`. The status line stays to the end ("✓ done"), and the
metrics line is where the label was, so the view does not jump when the turn ends.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any, assert_never

import ipywidgets as widgets
from ipywidgets.widgets.trait_types import TypedTuple
from ipywidgets.widgets.widget_string import HTMLStyle
from traitlets import Dict

from ..events import (
    DoneEvent,
    ErrorEvent,
    Event,
    ThinkingEvent,
    TokenEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
)
from ..result import ChatResult, ResultCollector
from ..session import ToolAction
from ..tools.definition import Tool
from .cell import CellOutput, Transcript
from .render import finished_prefix, render_markdown
from .style import MARKDOWN_CLASSES, STYLESHEET, icon

__all__ = ["ChatView", "ToolCard", "ToolControls"]

ToolControls = Callable[[str, ToolAction], object]
"""Called with (call_id, action) when a tool card's Cancel/Pause/Resume button is clicked: `ChatSession.control_tool`."""

STATUS_TEXT = {
    "stop": "✓ done",
    "cancelled": "■ stopped",
    "error": "✗ error",
    "max_turns": "ended: too many model calls (max_turns)",
    "length": "ended: the model hit its length limit",
}


class _Capture(widgets.Output):  # type: ignore[misc]  # ipywidgets is untyped
    """An `Output` widget whose captured outputs, synced up by the frontend, are not echoed back down.

    The frontend sends the whole list each time it captures a block: echoing it would make
    the bytes sent grow with the square of the blocks.
    """

    outputs = TypedTuple(trait=Dict(), help="The output messages synced from the frontend.").tag(
        sync=True, echo_update=False
    )


class _AnswerPart(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """A run of answer text: frozen blocks above, the growing block in an `HTML` below.

    A block that is complete is frozen: published once, as display data sent to the view's
    `CellOutput` and captured there by this part's `Output` widget, so appending never
    re-sends it. With no output to send to (no kernel, or a widget never displayed in a
    cell) nothing is frozen: the whole part stays in the `HTML` widget.
    """

    def __init__(self, html_layout: widgets.Layout, html_style: HTMLStyle, output: CellOutput) -> None:
        self.output = output
        self.frozen = _Capture(layout=html_layout)
        self.live = widgets.HTML(layout=html_layout, style=html_style, _dom_classes=MARKDOWN_CLASSES)
        super().__init__([self.frozen, self.live], layout=html_layout, _dom_classes=("streamchat-answer",))
        self.source = ""
        self.frozen_upto = 0
        self.frozen_html: list[str] = []

    def append(self, text: str) -> None:
        """Add streamed text; freeze blocks that are complete, re-render the growing one."""
        self.source += text
        tail = self.source[self.frozen_upto :]
        if self.output.connected and (cut := finished_prefix(tail)):
            self._freeze(render_markdown(tail[:cut]))
            self.frozen_upto += cut
            tail = tail[cut:]
        self.live.value = render_markdown(tail)

    def close(self) -> None:
        """Stop capturing into the `Output` widget; the cell's later output goes to the cell."""
        if self.frozen.msg_id:
            self.output.release(self.frozen)

    @property
    def html(self) -> str:
        """The whole rendered part: frozen blocks then the live block."""
        return "".join(self.frozen_html) + str(self.live.value)

    def _freeze(self, block_html: str) -> None:
        self.frozen_html.append(block_html)
        self.output.capture_into(self.frozen, {"text/html": block_html, "text/plain": ""})


class ToolCard(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """One tool call: name and arguments, a progress bar, one status line, Cancel and Pause or Resume."""

    def __init__(self, event: ToolCallEvent, controls: ToolControls | None = None) -> None:
        self.call_id = event.call_id
        self.tool = event.tool
        self.args = json.dumps(event.args, ensure_ascii=False)
        """The call's arguments as JSON."""
        args = self.args
        self.header = widgets.HTML(
            f"{icon('wrench')}<b>{html.escape(event.tool)}</b> <code>{html.escape(args)}</code>",
            _dom_classes=("streamchat-card-header",),
        )
        self.detail = widgets.HTML(_bar(None) + "starting…", _dom_classes=("streamchat-card-detail",))
        self.status = "running"
        """`running`, then the tool's final status (`ok`, `error`, `cancelled`, `timeout`)."""
        self.paused = False
        """True while the call is paused (held at its next progress report)."""
        self.outcome = ""
        """Once the call ended: its status, duration and summary as one line of plain text."""
        self._last: ToolProgressEvent | None = None
        self._pause_note = ""
        self.buttons = widgets.HBox()
        self._controls: dict[ToolAction, widgets.Button] = {}
        children: list[widgets.Widget] = [self.header, self.detail]
        if controls is not None:
            self._controls = {action: self._button(action, controls) for action in _ACTIONS}
            self.buttons.children = [self._controls["cancel"], self._controls["pause"]]
            children.append(self.buttons)
        super().__init__(children, _dom_classes=("streamchat-card",))

    def _button(self, action: ToolAction, controls: ToolControls) -> widgets.Button:
        label, symbol = _ACTIONS[action]
        button = widgets.Button(description=label, icon=symbol, layout=widgets.Layout(width="auto"))
        button.on_click(lambda _: controls(self.call_id, action))
        return button

    def progress(self, event: ToolProgressEvent) -> None:
        """Show a progress report: the bar, then one line of stage · message · percent."""
        if event.stage in ("paused", "resumed"):  # the runner's own reports for Pause/Resume
            self.paused = event.stage == "paused"
            # what a tool says beyond "Paused" (an MCP call: its server keeps running) is shown with the mark
            self._pause_note = event.message.removeprefix(Tool.pause_message).lstrip(":; ") if self.paused else ""
            if self._controls:  # Pause while it runs, Resume while it is held
                shown = self._controls["resume" if self.paused else "pause"]
                if self.buttons.children[-1] is not shown:
                    self.buttons.children = [self._controls["cancel"], shown]
            if self._last is not None:  # keep showing where the tool is
                event = self._last
        self._last = event
        parts = (
            [f"<i>{html.escape(event.stage)}</i>"] if event.stage and event.stage not in ("paused", "resumed") else []
        )
        if event.message:
            parts.append(html.escape(event.message))
        if event.percent is not None and f"{event.percent:.0f}%" not in event.message.replace(" %", "%"):
            parts.append(f"{event.percent:.0f} %")  # unless the message says it already
        if self.paused:
            note = f": {html.escape(self._pause_note)}" if self._pause_note else ""
            parts.append(f'<b class="streamchat-paused">{icon("pause")}paused</b>{note}')
        self.detail.value = _bar(event.percent) + (" · ".join(parts) or "running…")

    def result(self, event: ToolResultEvent) -> None:
        """Show the outcome and duration (one wording); the bar is full for `ok`, removed otherwise."""
        self.status = event.status
        ok = event.status == "ok"
        mark = "✓" if ok else "■" if event.status == "cancelled" else "✗"
        duration = f"{event.duration_ms / 1000:.2f} s"
        detail = event.summary if ok else (event.error or "")
        if detail.strip().lower() in (event.status, "cancelled", "canceled"):  # not "cancelled · Cancelled: cancelled"
            detail = ""
        self.outcome = " · ".join(p for p in (f"{mark} {event.status}", duration, detail) if p)
        line = " · ".join(p for p in (f"{mark} <b>{event.status}</b>", duration, html.escape(detail)) if p)
        css = "streamchat-ok" if ok else "streamchat-cancelled" if event.status == "cancelled" else "streamchat-failed"
        self.detail.value = f'{_bar(100.0) if ok else ""}<span class="{css}">{line}</span>'
        if self.buttons.children:
            self.buttons.children = []


_ACTIONS: dict[ToolAction, tuple[str, str]] = {
    "cancel": ("Cancel", "times"),
    "pause": ("Pause", "pause"),
    "resume": ("Resume", "play"),
}
"""Each tool control's button label and FontAwesome icon."""


def _bar(percent: float | None) -> str:
    """A native progress bar on a line of its own: determinate with a percent, indeterminate (animated) without."""
    if percent is None:
        return "<progress></progress><br>"
    return f'<progress max="100" value="{percent:.0f}"></progress><br>'


_SPINNER = icon("spinner fa-spin")
THINKING = f"{_SPINNER}Thinking…"
"""The status line while the model has not answered yet."""
ANSWERING = f"{icon('pencil')}Answering…"
"""The status line while the answer streams."""
RUNNING_TOOLS = f"{icon('cog fa-spin')}Running tools…"
"""The status line while tools run."""


class ChatView(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """The live view of one turn: status line, answer and tool cards in order, metrics footer.

    Feed it the turn's events with `handle` (already coalesced: see `Coalescer`); `chat()`,
    `achat()` and `ChatWidget` do this for you.

    Example:
        >>> view = ChatView("What is 2 + 2?")
        >>> # async for event in session.stream("What is 2 + 2?"): view.handle(event)
    """

    merges_progress = True
    """Progress reports arriving faster than the view updates are merged (latest wins)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        controls: ToolControls | None = None,
        on_stop: Callable[[], object] | None = None,
        label: str = "",
        output: CellOutput | None = None,
    ) -> None:
        self.message = message
        """The user's message shown above the turn, if any."""
        self._html_layout = widgets.Layout(margin="0")
        self._html_style = HTMLStyle()
        self.stylesheet = widgets.HTML(STYLESHEET, layout=widgets.Layout(display="none"))
        """The view's `<style>` (see `style.py`), in a hidden widget."""
        self.prompt = widgets.HTML(
            f"<b>You:</b> {html.escape(message)}" if message else "", _dom_classes=("streamchat-prompt",)
        )
        self.status = widgets.HTML(THINKING, _dom_classes=("streamchat-status",))
        self.stop_button: widgets.Button | None = None
        """Stops the turn (shown while it runs, when the view was given `on_stop`)."""
        header = widgets.HBox([self.status], _dom_classes=("streamchat-header",))
        if on_stop is not None:
            self.stop_button = widgets.Button(description="Stop", icon="stop", layout=widgets.Layout(width="auto"))
            self.stop_button.on_click(lambda _: on_stop())
            header.children = [self.status, self.stop_button]
        self.body = widgets.VBox(_dom_classes=("streamchat-body",))
        self.footer = widgets.HTML(html.escape(label), _dom_classes=("streamchat-metrics",))
        self._label = label
        self.controls = controls
        self.output = output or CellOutput.current()
        """Where finished Markdown blocks are sent (by default, the cell running when the view was made)."""
        self.cards: dict[str, ToolCard] = {}
        """Tool cards by call id."""
        self.result: ChatResult | None = None
        """The turn's `ChatResult` once its `done` event arrived."""
        self._answer: _AnswerPart | None = None
        self._parts: list[_AnswerPart] = []
        self._reasoning = ""
        self._collector: ResultCollector | None = None
        self.transcript = Transcript()
        """Where this view was displayed by itself; its turn is left there as a document when it ends."""
        parts = [self.prompt, header, self.body, self.footer, self.stylesheet]
        super().__init__(parts, _dom_classes=("streamchat-view",))
        self._header = header

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle: dict[str, Any] | None = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:  # what a frontend without widgets shows instead
            bundle["text/plain"] = "ChatView (a live widget: open this notebook in Jupyter to see it)"
            self.transcript.displayed()
        return bundle

    # -- state for readers and tests ----------------------------------------------------

    @property
    def text(self) -> str:
        """The answer text shown so far (the Markdown source)."""
        return "".join(part.source for part in self._parts)

    @property
    def html(self) -> str:
        """The answer as rendered HTML, all parts in order."""
        return "".join(part.html for part in self._parts)

    # -- events -------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Render one event."""
        if self._collector is None:
            self._collector = ResultCollector()
        self._collector.add(event)
        match event:
            case TokenEvent():
                self._on_token(event)
            case ThinkingEvent():
                self._on_thinking(event)
            case ToolCallEvent():
                self._end_answer()
                self.status.value = RUNNING_TOOLS
                card = ToolCard(event, self.controls)
                self.cards[event.call_id] = card
                self.body.children = (*self.body.children, card)
            case ToolProgressEvent():
                if (running := self.cards.get(event.call_id)) is not None:
                    running.progress(event)
            case ToolResultEvent():
                if (finished := self.cards.get(event.call_id)) is not None:
                    finished.result(event)
            case ErrorEvent():
                self._end_answer()
                note = widgets.HTML(f"✗ {html.escape(event.message)}", _dom_classes=("streamchat-note",))
                self.body.children = (*self.body.children, note)
            case DoneEvent():
                self._on_done(event)
            case _:
                assert_never(event)

    def stopped(self) -> None:
        """Show "stopped" for a turn that ended without a `done` event (cancelled before it began)."""
        self._end_answer()
        if self.result is None:
            self.status.value = STATUS_TEXT["cancelled"]
            self._header.children = [self.status]
        self._leave_document()

    def _on_token(self, event: TokenEvent) -> None:
        if self._answer is None:
            self._answer = _AnswerPart(self._html_layout, self._html_style, self.output)
            self._parts.append(self._answer)
            self.body.children = (*self.body.children, self._answer)
            self.status.value = ANSWERING
        self._answer.append(event.content)

    def _on_thinking(self, event: ThinkingEvent) -> None:
        if event.kind == "status":
            self.status.value = f"{_SPINNER}{html.escape(event.text)}"
            return
        # Reasoning can be long: show only its tail so each update stays small.
        self._reasoning = (self._reasoning + event.text)[-300:]
        self.status.value = f'{THINKING} <i class="streamchat-thinking">{html.escape(self._reasoning)}</i>'

    def _end_answer(self) -> None:
        if self._answer is not None:
            self._answer.close()
            self._answer = None

    def _on_done(self, event: DoneEvent) -> None:
        self._end_answer()
        assert self._collector is not None
        self.result = self._collector.build()
        m = event.metrics
        parts = []
        if m.ttft_ms is not None:
            parts.append(f"first token {m.ttft_ms:.0f} ms")
        if m.tokens_per_s is not None:
            parts.append(f"{m.tokens_per_s:.1f} tokens/s")
        parts.append(f"{m.duration_ms / 1000:.2f} s")
        self.status.value = STATUS_TEXT[event.reason]
        if len(self._header.children) > 1:
            self._header.children = [self.status]
        self.footer.value = html.escape(" · ".join(p for p in [self._label, *parts] if p))
        self._leave_document()

    def _leave_document(self) -> None:
        """The turn ended: leave it as a document where the view was displayed (see `Transcript`)."""
        if self.transcript.homes and not self.transcript.display_ids:
            from .document import turn_document  # document.py builds on this module

            self.transcript.leave(turn_document(self))
