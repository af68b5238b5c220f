"""chat()/achat() outside a kernel, the default session, ChatWidget's buttons, magic arguments."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import ipywidgets
import pytest

import streamchat
from streamchat import (
    ChatSession,
    ChatWidget,
    ProgressReporter,
    ScriptedProvider,
    ToolCall,
    UsageError,
    achat,
    chat,
    new_session,
    tool,
)
from streamchat.notebook import default_session
from streamchat.notebook.magics import run_magic


@pytest.fixture(autouse=True)
def close_widgets() -> Iterator[None]:
    """Close the widgets a test made, so none is left for interpreter shutdown to collect."""
    yield
    ipywidgets.Widget.close_all()


def test_chat_outside_a_kernel_streams_cli_text_and_returns_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    provider = ScriptedProvider([[ToolCall("calculate", {"expression": "6 * 7"})], ["It is ", "42."]])
    result = chat("What is 6 * 7?", session=ChatSession(provider))
    assert capsys.readouterr().out == "[calculate] Evaluating...\n[calculate] Done: 6 * 7 = 42\nIt is 42.\n"
    assert result.text == "It is 42."
    assert [(c.tool, c.status) for c in result.tool_calls] == [("calculate", "ok")]
    assert repr(result).startswith("ChatResult(text='It is 42.', reason='stop', tools=[calculate:ok], ttft=")


def test_the_default_session_keeps_context_until_new_session(capsys: pytest.CaptureFixture[str]) -> None:
    first = new_session(ScriptedProvider(["One.", "Two."]), tools=[])
    chat("a")
    chat("b")
    assert [m.content for m in first.history] == ["a", "One.", "b", "Two."]
    second = new_session("demo")
    assert default_session() is second and second.history == []
    with pytest.raises(UsageError, match="either `session=`"):
        chat("x", session=first, provider="demo")
    capsys.readouterr()


def test_chat_rejects_a_bad_display_mode_and_a_busy_session_clearly() -> None:
    with pytest.raises(UsageError, match="display must be"):
        chat("x", session=ChatSession(ScriptedProvider(["y"]), tools=[]), display="fancy")  # type: ignore[arg-type]


async def test_achat_shows_a_widget_view_and_stopping_keeps_the_partial_answer() -> None:
    started = asyncio.Event()

    async def script(_: object):  # five words, then a signal, then words until stopped
        for i in range(500):
            if i == 5:
                started.set()
            await asyncio.sleep(0.002)
            yield f"w{i} "

    session = ChatSession(ScriptedProvider([script]), tools=[])
    task = asyncio.create_task(achat("go", session=session, display="widget"))
    await started.wait()
    session.cancel()  # what the view's Stop button calls
    result = await task
    assert result.reason == "cancelled"
    assert result.text.startswith("w0 w1 w2 w3 w4 ")
    assert session.history[-1].interrupted and session.history[-1].content == result.text


def press_enter(box: ipywidgets.Text) -> None:
    """What the frontend sends when Enter is pressed in a text box: a `submit` custom message."""
    box._handle_msg({"content": {"data": {"method": "custom", "content": {"event": "submit"}}}, "buffers": []})


async def test_chat_widget_buttons_send_stop_and_clear() -> None:
    session = ChatSession(ScriptedProvider([[f"w{i} " for i in range(300)]], token_delay=0.005), tools=[])
    widget = ChatWidget(session=session)
    widget.input.value = "Talk"
    press_enter(widget.input)
    task = widget.task
    assert task is not None and widget.input.value == ""
    while "w3" not in widget.views[0].text:
        await asyncio.sleep(0.005)
    widget.send_button.click()  # a second turn while one streams is refused with a notice
    assert widget.notice.value == ""  # the box was empty: nothing to send
    widget.input.value = "More"
    press_enter(widget.input)
    assert widget.notice.value == "an answer is still streaming: stop it or wait for it first"
    widget.clear_button.click()
    assert widget.notice.value == "Stop the answer before clearing."
    widget.stop_button.click()
    result = await task
    assert result is not None and result.reason == "cancelled"
    assert widget.views[0].status.value == "■ stopped"
    assert widget.stop_button.disabled
    assert widget.notice.value == ""  # the notice was about that turn: gone with it
    assert widget.input.value == "More" and len(widget.views) == 1  # the refused text is kept, not sent
    widget.clear_button.click()
    assert widget.views == [] and widget.conversation.children == () and session.history == []


async def test_chat_widget_sends_only_on_enter_or_send_and_enter_twice_sends_twice() -> None:
    session = ChatSession(ScriptedProvider(["One.", "Two.", "Three."]), tools=[])
    widget = ChatWidget(session=session)
    widget.input.value = "Hi"  # what typing, and leaving the box, do: nothing is sent
    await asyncio.sleep(0)
    assert widget.task is None and widget.views == []
    for expected in ("One.", "Two."):  # Enter, with the same text each time
        widget.input.value = "Hi"
        press_enter(widget.input)
        assert widget.input.value == ""
        result = await widget.task  # type: ignore[misc]
        assert result is not None and result.text == expected
    widget.input.value = "Hi"
    widget.send_button.click()
    assert widget.input.value == ""
    result = await widget.task  # type: ignore[misc]
    assert result is not None and result.text == "Three."
    assert [m.content for m in session.history] == ["Hi", "One.", "Hi", "Two.", "Hi", "Three."]


async def test_chat_widget_takes_a_submission_once_when_handlers_race_on_threads() -> None:
    # JupyterLab's subshells run comm handlers on several threads at once: Enter and
    # Send, handled at the same moment, must start one turn between them.
    session = ChatSession(ScriptedProvider([["The only answer."]]), tools=[])
    widget = ChatWidget(session=session)
    widget.input.value = "Hello"
    start = threading.Barrier(8)

    def handle(action: Callable[[], object]) -> None:
        start.wait()
        action()

    actions = [widget.send_button.click, lambda: press_enter(widget.input)] * 4
    threads = [threading.Thread(target=handle, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    await asyncio.get_running_loop().run_in_executor(None, lambda: [thread.join() for thread in threads])
    await _until(lambda: widget.task is not None, "the turn started on the widget's loop")
    result = await widget.task  # type: ignore[misc]
    await asyncio.sleep(0)  # the refusals handed over to the loop have all run
    assert result is not None and result.text == "The only answer."
    assert len(widget.views) == 1 and [m.content for m in session.history] == ["Hello", "The only answer."]
    assert widget.notice.value == "" and not session.busy


def test_chat_widget_made_without_a_running_loop_runs_its_turns_on_the_private_loop() -> None:
    from streamchat import _sync

    widget = ChatWidget(session=ChatSession(ScriptedProvider(["Answer."]), tools=[]))
    assert widget.loop is _sync.private_loop()
    with pytest.raises(UsageError, match="call send\\(\\) on the event loop the widget was made on"):
        widget.send("from the wrong thread")
    widget.input.value = "Question"
    press_enter(widget.input)  # a handler on this thread hands the turn to the private loop
    done = threading.Event()
    widget.loop.call_soon_threadsafe(lambda: widget.task.add_done_callback(lambda _: done.set()))  # type: ignore[union-attr]
    assert done.wait(30)
    assert widget.task is not None and widget.task.result() is not None
    assert widget.task.result().text == "Answer."  # type: ignore[union-attr]
    assert widget.views[0].text == "Answer." and widget.input.value == ""


def test_magic_arguments_are_checked_with_a_usage_message() -> None:
    with pytest.raises(UsageError, match="unrecognized arguments: --bogus"):
        run_magic("--bogus hi")
    with pytest.raises(UsageError, match="put the message in the cell body"):
        run_magic("--provider demo hello", "also a body")


def test_import_streamchat_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, streamchat; print('ipywidgets' in sys.modules, callable(streamchat.load_ipython_extension))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False True\n"
    assert streamchat.chat is chat and streamchat.achat is achat


def test_run_sync_works_with_and_without_a_running_loop_on_one_private_loop() -> None:
    from streamchat import _sync

    async def which_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    outside = _sync.run_sync(which_loop())

    async def inside_a_running_loop() -> asyncio.AbstractEventLoop:
        return _sync.run_sync(which_loop())  # blocks this loop's thread, as a notebook cell does

    inside = asyncio.run(inside_a_running_loop())
    assert outside is inside is _sync.private_loop()


async def _until(condition: object, what: str) -> None:
    """Yield to the loop until `condition()` holds (bounded: fails instead of hanging)."""
    for _ in range(2000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def test_chat_widget_tool_cards_pause_resume_and_cancel_one_call() -> None:
    gate = asyncio.Event()

    @tool
    async def ticker(name: str, report: ProgressReporter) -> str:
        """Tick until released.

        Args:
            name: Which ticker.
        """
        step = 0
        while not gate.is_set() or step < 3:
            step += 1
            await report(f"{name} tick {step}", percent=min(step, 99))
            await asyncio.sleep(0.005)
        return f"{name} finished"

    PAUSED = ' · <b class="streamchat-paused"><i class="fa fa-pause" aria-hidden="true"></i> paused</b>'
    provider = ScriptedProvider([[ToolCall("ticker", {"name": "A"}), ToolCall("ticker", {"name": "B"})], ["Done."]])
    widget = ChatWidget(session=ChatSession(provider, tools=[ticker]))
    task = widget.send("tick")
    view = widget.views[0]
    await _until(lambda: len(view.cards) == 2, "two tool cards")
    card_a, card_b = view.cards.values()
    assert [b.description for b in card_a.buttons.children] == ["Cancel", "Pause"]  # Pause xor Resume
    await _until(lambda: "tick" in card_a.detail.value, "progress on card A")
    card_a.buttons.children[1].click()  # Pause A
    await _until(lambda: card_a.paused and card_a.detail.value.endswith(PAUSED), "card A paused")
    assert [b.description for b in card_a.buttons.children] == ["Cancel", "Resume"]
    card_b.buttons.children[0].click()  # Cancel B; A stays paused meanwhile
    await _until(lambda: card_b.status == "cancelled", "card B cancelled")
    assert card_a.paused and card_a.detail.value.endswith(PAUSED) and card_a.status == "running"
    gate.set()
    card_a.buttons.children[1].click()  # Resume A
    result = await task
    assert result is not None and [(c.tool, c.args["name"], c.status) for c in result.tool_calls] == [
        ("ticker", "A", "ok"),
        ("ticker", "B", "cancelled"),
    ]
    assert card_a.status == "ok" and card_a.buttons.children == () and card_b.buttons.children == ()
    assert view.text == "Done."


def test_ctrl_c_in_a_script_stops_the_turn_prints_stopped_and_raises(tmp_path: object) -> None:
    import signal
    import subprocess
    import sys

    script = (
        "from streamchat import ChatSession, ScriptedProvider, chat\n"
        "s = ChatSession(ScriptedProvider([[f'w{i} ' for i in range(2000)]], token_delay=0.005), tools=[])\n"
        "try:\n"
        "    chat('go', session=s)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt', s.history[-1].interrupted, s.busy, flush=True)\n"
    )
    with subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        seen = ""
        while "w3 " not in seen:  # wait on the script's output, not on time
            seen += proc.stdout.read(1)
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 0
    lines = (seen + rest).splitlines()
    assert lines[0].startswith("w0 w1 w2 w3 ")
    assert lines[-2:] == ["[stopped]", "KeyboardInterrupt True False"]


async def test_a_refused_turn_raises_before_any_view_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    session = ChatSession(ScriptedProvider([[f"w{i} " for i in range(100)]], token_delay=0.01), tools=[])
    with pytest.raises(UsageError, match="non-empty string"):
        chat("   ", session=session)
    running = asyncio.create_task(achat("first", session=session, display="text"))
    await _until(lambda: session.busy, "the first turn running")
    with pytest.raises(streamchat.SessionBusyError, match="already answering"):
        await achat("second", session=session, display="text")
    session.cancel()
    assert (await running).reason == "cancelled"
    assert capsys.readouterr().out.endswith("[stopped]\n")


def test_tools_given_as_an_iterator_are_not_consumed_twice(capsys: pytest.CaptureFixture[str]) -> None:
    from streamchat import calculate

    provider = ScriptedProvider([[ToolCall("calculate", {"expression": "1 + 1"})], ["Two."]])
    result = chat("1 + 1?", provider=provider, tools=iter([calculate]))
    assert [(c.tool, c.status) for c in result.tool_calls] == [("calculate", "ok")]
    capsys.readouterr()


async def test_the_view_stop_button_stops_the_turn_and_leaves() -> None:
    from streamchat.notebook.chat import consume
    from streamchat.notebook.view import ChatView

    session = ChatSession(ScriptedProvider([[f"w{i} " for i in range(500)]], token_delay=0.002), tools=[])
    view = ChatView(on_stop=session.cancel)
    assert view.stop_button is not None and view.children[1].children == (view.status, view.stop_button)
    task = asyncio.create_task(consume(session, "go", view))
    await _until(lambda: "w3 " in view.text, "the first words")
    view.stop_button.click()
    result = await task
    assert result.reason == "cancelled" and view.status.value == "■ stopped"
    assert view.children[1].children == (view.status,)  # the button is gone once the turn ended
    assert view.text == result.text == session.history[-1].content
