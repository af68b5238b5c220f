"""ChatView driven through a recording comm: exact widget states, coalescing, bytes, sanitizing."""

from __future__ import annotations

import asyncio
import html.parser
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import comm
import ipywidgets
import pytest

from bench.widget_updates import answer_pieces
from streamchat import ChatSession, ProgressReporter, ScriptedProvider, ToolCall, ToolError, tool
from streamchat.events import DoneEvent, TokenEvent, ToolCallEvent, ToolProgressEvent, ToolResultEvent
from streamchat.notebook.cell import CellOutput
from streamchat.notebook.document import turn_document
from streamchat.notebook.driver import UPDATE_INTERVAL
from streamchat.notebook.render import Coalescer, finished_prefix, render_markdown
from streamchat.notebook.style import MARKDOWN_CLASSES, STYLESHEET
from streamchat.notebook.view import ChatView


@pytest.fixture(autouse=True)
def close_widgets() -> Iterator[None]:
    """Close the widgets a test made, so none is left for interpreter shutdown to collect."""
    yield
    ipywidgets.Widget.close_all()


class Recorder:
    """Every message widgets send to the frontend: (comm_id, kind, data, size in bytes, time)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any], int, float]] = []
        self.clock = lambda: 0.0

    def record(self, comm_id: str, kind: str, data: dict[str, Any]) -> None:
        self.messages.append((comm_id, kind, data, len(json.dumps(data)), self.clock()))

    def states(self) -> dict[str, dict[str, Any]]:
        """The latest state of every widget, as the frontend would hold it."""
        out: dict[str, dict[str, Any]] = {}
        for comm_id, _, data, _, _ in self.messages:
            out.setdefault(comm_id, {}).update(data.get("state", {}))
        return out

    def values(self, comm_id: str, key: str = "value") -> list[Any]:
        """Every value `key` took for one widget, in order (open state first)."""
        return [d["state"][key] for c, _, d, _, _ in self.messages if c == comm_id and key in d.get("state", {})]


class RecordingComm:
    """A comm that records instead of talking to a kernel (as ipywidgets' own tests do)."""

    kernel = "recording"

    def __init__(self, recorder: Recorder, data: dict[str, Any]) -> None:
        self.comm_id = uuid.uuid4().hex
        self.recorder = recorder
        recorder.record(self.comm_id, "open", data)

    def send(self, data: dict[str, Any], buffers: Any = None) -> None:
        self.recorder.record(self.comm_id, "update", data)

    def on_msg(self, callback: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(comm, "create_comm", lambda **kw: RecordingComm(rec, kw.get("data", {})))
    return rec


@tool
async def fetch(name: str, report: ProgressReporter) -> str:
    """Fetch a file, reporting progress."""
    for percent in (0, 50, 100):
        await report(f"Fetching {name}...", stage="download", percent=percent)
        await asyncio.sleep(0)
    return f"{name} fetched"


@tool
async def parse(name: str, report: ProgressReporter) -> str:
    """Parse a file, failing halfway."""
    await report(f"Parsing {name}...", percent=30)
    await asyncio.sleep(0)
    raise ToolError(f"{name} is not valid JSON")


async def test_scripted_turn_with_two_parallel_tools_gives_exact_widget_states(recorder: Recorder) -> None:
    provider = ScriptedProvider(
        [
            ["Let me look.", ToolCall("fetch", {"name": "a.json"}), ToolCall("parse", {"name": "b.json"})],
            ["**a.json** arrived; b.json is broken."],
        ]
    )
    session = ChatSession(provider, tools=[fetch, parse])
    view = ChatView("Check the files")
    async for event in session.stream("Check the files"):  # every event, uncoalesced: exact states
        view.handle(event)
    result = view.result
    assert result is not None

    assert result.reason == "stop"
    assert [(c.tool, c.status) for c in result.tool_calls] == [("fetch", "ok"), ("parse", "error")]
    states = recorder.states()
    assert states[view.prompt.model_id]["value"] == "<b>You:</b> Check the files"
    assert states[view.status.model_id]["value"] == "✓ done"  # the status line stays: the view does not jump
    first, card_a, card_b, second = view.body.children
    assert view.html == "<p>Let me look.</p>\n<p><strong>a.json</strong> arrived; b.json is broken.</p>\n"
    assert view.text == "Let me look.**a.json** arrived; b.json is broken."
    assert states[card_a.header.model_id]["value"] == (
        '<i class="fa fa-wrench" aria-hidden="true"></i> <b>fetch</b> <code>{&quot;name&quot;: &quot;a.json&quot;}</code>'
    )
    duration = {c.tool: c.duration_ms for c in result.tool_calls}
    # A bar on its own line (indeterminate until a percent is known), then one status line.
    bar = '<progress max="100" value="{0}"></progress><br>'
    assert recorder.values(card_a.detail.model_id) == [
        "<progress></progress><br>starting…",
        bar.format(0) + "<i>download</i> · Fetching a.json... · 0 %",
        bar.format(50) + "<i>download</i> · Fetching a.json... · 50 %",
        bar.format(100) + "<i>download</i> · Fetching a.json... · 100 %",
        bar.format(100)
        + f'<span class="streamchat-ok">✓ <b>ok</b> · {duration["fetch"] / 1000:.2f} s · Done: a.json fetched</span>',
    ]
    assert recorder.values(card_b.detail.model_id) == [
        "<progress></progress><br>starting…",
        bar.format(30) + "Parsing b.json... · 30 %",
        f'<span class="streamchat-failed">✗ <b>error</b> · {duration["parse"] / 1000:.2f} s'
        " · b.json is not valid JSON</span>",
    ]
    spinner, pencil, cog = (
        f'<i class="fa fa-{name}" aria-hidden="true"></i> ' for name in ("spinner fa-spin", "pencil", "cog fa-spin")
    )
    assert recorder.values(view.status.model_id) == [
        f"{spinner}Thinking…",
        f"{pencil}Answering…",
        f"{cog}Running tools…",
        f"{spinner}Thinking…",
        f"{pencil}Answering…",
        "✓ done",
    ]
    assert states[first.live.model_id]["value"] == "<p>Let me look.</p>\n"
    assert states[second.live.model_id]["value"] == "<p><strong>a.json</strong> arrived; b.json is broken.</p>\n"
    footer = states[view.footer.model_id]["value"]
    assert footer.startswith("first token ") and footer.endswith(" s")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_1000_tokens_per_second_for_10_s_stays_within_20_updates_per_second_and_3x_its_bytes(
    recorder: Recorder,
) -> None:
    clock = FakeClock()
    recorder.clock = clock
    cell: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # what is sent to the view's cell

    def send(msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None:
        cell.append((msg_type, content, parent))

    view = ChatView(output=CellOutput({"msg_id": "cell-1"}, send))
    coalescer = Coalescer(UPDATE_INTERVAL, clock=clock)  # as the driver does
    pieces = answer_pieces(10_000)  # the benchmark's answer, so both measure the same text
    answer = "".join(pieces)

    def show(events: list[Any]) -> None:
        for event in events:
            view.handle(event)

    for seq, piece in enumerate(pieces, start=1):
        clock.now = seq / 1000  # one token every millisecond
        if coalescer.due_in() == 0:  # what the driver's queue timeout does between tokens
            show(coalescer.flush())
        show(coalescer.push(TokenEvent(session_id="s", turn_id="t", seq=seq, content=piece)))
    show(coalescer.push(DoneEvent(session_id="s", turn_id="t", seq=10_001, reason="stop", text=answer)))

    assert view.text == answer
    assert view.html == "".join(render_markdown(block) for block in _blocks(answer))
    per_second: dict[int, int] = {}
    for _, kind, _, _, at in recorder.messages:
        if kind == "update":  # opens are the widgets being created; their bytes count below
            per_second[int(at)] = per_second.get(int(at), 0) + 1
    assert max(per_second.values()) <= 20, per_second
    # Every finished block went to the cell once, as display data the answer's Output widget captures.
    part = view.body.children[0]
    assert len(part.frozen_html) > 100 and [m for m, _, _ in cell] == ["display_data"] * len(part.frozen_html)
    assert [content["data"]["text/html"] for _, content, _ in cell] == part.frozen_html
    assert all(parent == {"msg_id": "cell-1"} for *_, parent in cell)
    capture = part.frozen
    assert recorder.values(capture.model_id, "msg_id") == ["", "cell-1", ""]  # captured while the answer streamed
    published = sum(len(json.dumps(content)) for _, content, _ in cell)
    sent = sum(size for *_, size, _ in recorder.messages) + published
    size = len(answer.encode())
    assert sent <= 3 * size, f"sent {sent} bytes for a {size}-byte answer: {sent / size:.2f}×, over 3×"


def _blocks(text: str) -> list[str]:
    out = []
    while (cut := finished_prefix(text)) > 0:
        out.append(text[:cut])
        text = text[cut:]
    return [*out, text]


def test_coalescer_passes_the_first_token_at_once_and_flushes_before_a_tool_event() -> None:
    clock = FakeClock()
    c = Coalescer(interval=0.05, clock=clock)

    def tok(seq: int, text: str) -> TokenEvent:
        return TokenEvent(session_id="s", turn_id="t", seq=seq, content=text)

    assert c.push(tok(1, "a")) == [tok(1, "a")]
    clock.now = 0.01
    assert c.push(tok(2, "b")) == []
    assert c.due_in() == pytest.approx(0.04)
    clock.now = 0.02
    assert c.push(tok(3, "c")) == []
    call = ToolCallEvent(session_id="s", turn_id="t", seq=4, call_id="c1", tool="x", args={})
    assert c.push(call) == [tok(3, "bc"), call]
    assert c.due_in() is None
    clock.now = 0.1
    assert c.push(tok(5, "d")) == [tok(5, "d")]


def test_coalescer_keeps_the_latest_progress_of_each_call_and_flushes_it_before_the_result() -> None:
    clock = FakeClock()
    c = Coalescer(interval=0.05, clock=clock)

    def progress(seq: int, call_id: str, percent: float) -> ToolProgressEvent:
        return ToolProgressEvent(
            session_id="s", turn_id="t", seq=seq, call_id=call_id, tool="x", message="m", percent=percent
        )

    assert c.push(progress(1, "a", 0)) == [progress(1, "a", 0)]
    clock.now = 0.01
    assert c.push(progress(2, "b", 0)) == []
    assert c.push(progress(3, "a", 10)) == []
    assert c.push(progress(4, "a", 20)) == []
    clock.now = 0.06
    assert c.push(progress(5, "b", 30)) == [progress(5, "b", 30), progress(4, "a", 20)]  # order of first report
    clock.now = 0.07
    assert c.push(progress(6, "a", 90)) == []
    paused = ToolProgressEvent(
        session_id="s", turn_id="t", seq=7, call_id="a", tool="x", message="Paused", stage="paused"
    )
    assert c.push(paused) == [progress(6, "a", 90)]  # a new stage is never merged away
    result = ToolResultEvent(session_id="s", turn_id="t", seq=8, call_id="a", tool="x", status="ok", duration_ms=1.0)
    assert c.push(result) == [paused, result]


def test_finished_prefix_freezes_only_complete_blocks() -> None:
    assert finished_prefix("one paragraph still growing") == 0
    assert finished_prefix("para\n\n- item") == len("para\n\n")
    assert finished_prefix("```py\nx = 1\n\ny = 2\n") == 0  # an open fence is one block
    assert finished_prefix("# Title\ntext") == len("# Title\n")


@pytest.mark.parametrize(
    "attack",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
        '<iframe src="https://example.com"></iframe>',
        '<a href="javascript:alert(1)">x</a>',
        "<svg onload=alert(1)>",
    ],
)
def test_untrusted_markdown_renders_without_scripts_handlers_or_frames(recorder: Recorder, attack: str) -> None:
    view = ChatView()
    answer = f"Look: {attack} done\n\nnext paragraph"
    view.handle(TokenEvent(session_id="s", turn_id="t", seq=1, content=answer))
    view.handle(DoneEvent(session_id="s", turn_id="t", seq=2, reason="stop", text=answer))
    sent = " ".join(json.dumps(d) for _, _, d, _, _ in recorder.messages) + view.html
    for bad in ("<script", "onerror", "onload", "javascript:", "<iframe", "<svg"):
        assert bad not in sent.lower()
    checker = _TagChecker()
    checker.feed(view.html)
    assert checker.tags <= {"p", "a", "img"}
    assert "next paragraph" in view.html


class _TagChecker(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            assert not name.startswith("on")
            assert not (value or "").strip().lower().startswith("javascript")


async def test_a_finished_turn_becomes_a_document_with_its_cards_answer_and_metrics(recorder: Recorder) -> None:
    from streamchat.notebook.document import turn_document

    provider = ScriptedProvider(
        [
            ["Let me look.", ToolCall("fetch", {"name": "a.json"}), ToolCall("parse", {"name": "b.json"})],
            ["**a.json** arrived; b.json is broken.\n\n- one\n- two"],
        ]
    )
    session = ChatSession(provider, tools=[fetch, parse])
    view = ChatView("Check <the> files", label="scripted")
    async for event in session.stream("Check <the> files"):
        view.handle(event)
    assert view.result is not None
    took = {c.tool: f"{c.duration_ms / 1000:.2f} s" for c in view.result.tool_calls}
    footer = str(view.footer.value)
    assert footer.startswith("scripted · first token ")
    document = turn_document(view)
    assert document["text/markdown"] == (
        "**You:** Check <the> files\n\n"
        "Let me look.\n\n"
        f'- **fetch** `{{"name": "a.json"}}` — ✓ ok · {took["fetch"]} · Done: a.json fetched\n\n'
        f'- **parse** `{{"name": "b.json"}}` — ✗ error · {took["parse"]} · b.json is not valid JSON\n\n'
        "**a.json** arrived; b.json is broken.\n\n- one\n- two\n\n"
        f"*{footer}*\n"
    )
    assert document["text/plain"] == (
        "You: Check <the> files\n"
        "Let me look.\n"
        f"[fetch] ✓ ok · {took['fetch']} · Done: a.json fetched\n"
        f"[parse] ✗ error · {took['parse']} · b.json is not valid JSON\n"
        "**a.json** arrived; b.json is broken.\n\n- one\n- two\n"
        f"{footer}"
    )
    page = document["text/html"]
    # The live view's structure, classes and stylesheet: the document looks the same and is as tall.
    assert page.startswith(
        f'<div class="streamchat-document">{STYLESHEET}<div class="streamchat-prompt"><b>You:</b> Check &lt;the&gt;'
    )
    assert '<div class="streamchat-header"><div class="streamchat-status">✓ done</div></div>' in page
    markdown = '<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown streamchat-markdown">'
    assert f'<div class="streamchat-answer">{markdown}<p>Let me look.</p>\n</div></div>' in page
    assert page.count('<div class="streamchat-card" style="border:1px solid var(--jp-border-color2); ') == 2
    assert '<progress max="100" value="100"></progress><br><span class="streamchat-ok">✓ <b>ok</b>' in page
    assert "<li>one</li>" in page and "<strong>a.json</strong>" in page
    assert page.endswith(f'<div class="streamchat-metrics">{footer}</div></div>')


def test_the_look_uses_theme_colours_jupyterlab_markdown_classes_and_no_emoji(recorder: Recorder) -> None:
    view = ChatView("Hi", controls=lambda call_id, action: None, on_stop=lambda: None)
    view.handle(_event(ToolCallEvent, call_id="c1", tool="fetch", args={"name": "a"}))
    view.handle(_event(ToolProgressEvent, call_id="c1", tool="fetch", message="warming up"))
    card = view.cards["c1"]
    assert card.detail.value == "<progress></progress><br>warming up"  # no percent: indeterminate (no value)
    view.handle(_event(ToolResultEvent, call_id="c1", tool="fetch", status="ok", result="x", duration_ms=10))
    view.handle(_event(TokenEvent, content="A long answer\n\nin two paragraphs"))
    view.handle(_event(DoneEvent, reason="stop", text="", usage={}, metrics={"duration_ms": 1500}))
    live = view.body.children[1].live
    assert set(MARKDOWN_CLASSES) <= set(live._dom_classes)
    assert {"jp-RenderedHTMLCommon", "jp-RenderedMarkdown"} <= set(MARKDOWN_CLASSES)
    assert view.status.value == "✓ done" and view.footer.value == "1.50 s"
    texts = [STYLESHEET, card.header.value, card.detail.value, view.status.value, turn_document(view)["text/html"]]
    for text in texts:
        # Colours only from JupyterLab's theme variables: no literal #rgb, rgb() or named colour.
        assert not re.search(r"#[0-9a-fA-F]{3,6}\b|rgba?\(|(?<![-\w])(?:red|gray|grey|black|white)(?![-\w])", text), (
            text
        )
        # No glyph that needs an emoji font: nothing from the emoji and misc-technical blocks.
        assert not [c for c in text if ord(c) >= 0x1F000 or 0x2300 <= ord(c) <= 0x23FF or 0x2600 <= ord(c) <= 0x26FF], (
            text
        )
    for name in ("--jp-border-color2", "--jp-ui-font-color2", "--jp-error-color1", "--jp-content-font-size1"):
        assert f"var({name})" in STYLESHEET
    assert "overflow-wrap:anywhere" in STYLESHEET


def test_a_cancelled_tool_says_so_once_and_pause_and_resume_take_turns(recorder: Recorder) -> None:
    actions: list[tuple[str, str]] = []
    view = ChatView(controls=lambda call_id, action: actions.append((call_id, action)))
    view.handle(_event(ToolCallEvent, call_id="c1", tool="fetch", args={}))
    card = view.cards["c1"]
    assert [b.description for b in card.buttons.children] == ["Cancel", "Pause"]
    assert [b.icon for b in card.buttons.children] == ["times", "pause"]
    card.buttons.children[1].click()
    view.handle(_event(ToolProgressEvent, call_id="c1", tool="fetch", message="", stage="paused"))
    assert [b.description for b in card.buttons.children] == ["Cancel", "Resume"]
    card.buttons.children[1].click()
    view.handle(_event(ToolProgressEvent, call_id="c1", tool="fetch", message="", stage="resumed"))
    assert [b.description for b in card.buttons.children] == ["Cancel", "Pause"]
    assert actions == [("c1", "pause"), ("c1", "resume")]
    view.handle(
        _event(ToolResultEvent, call_id="c1", tool="fetch", status="cancelled", error="cancelled", duration_ms=1620)
    )
    assert card.outcome == "■ cancelled · 1.62 s"
    assert card.detail.value == '<span class="streamchat-cancelled">■ <b>cancelled</b> · 1.62 s</span>'
    assert card.buttons.children == ()


def _event(kind: Any, **fields: Any) -> Any:
    """An event of `kind` for a made-up turn."""
    return kind(session_id="s", turn_id="t", seq=1, **fields)
