"""The `streamchat` command, run as a real subprocess with the offline demo model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from streamchat import parse_event


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMCHAT_", "OLLAMA_", "OPENAI_"))}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "streamchat.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def test_chat_prints_progress_lines_then_the_streamed_answer():
    proc = run_cli("chat", "--provider", "demo", "What is 12 * (3 + 4)?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "[calculate] Evaluating...\n"
        "[calculate] Done: 12 * (3 + 4) = 84\n"
        "12 * (3 + 4) = 84.\n\n"
        "(Answered by streamchat's offline demo model, not an LLM: see README → Backends to connect one.)\n"
    )
    assert "using the offline demo model" in proc.stderr


def test_json_prints_one_parseable_event_per_line():
    proc = run_cli("chat", "--json", "--provider", "demo", "What is 2 ** 10?")
    assert proc.returncode == 0, proc.stderr
    events = [parse_event(line) for line in proc.stdout.splitlines()]
    assert [e.type for e in events[:4]] == ["thinking", "tool_call", "tool_progress", "tool_result"]
    assert events[3].result == {"expression": "2 ** 10", "result": 1024, "summary": "2 ** 10 = 1024"}
    assert events[-1].type == "done" and events[-1].reason == "stop"
    assert "".join(e.content for e in events if e.type == "token") == events[-1].text
    assert all(json.loads(line)["seq"] == i for i, line in enumerate(proc.stdout.splitlines(), start=1))


def test_unknown_provider_is_a_clear_error():
    proc = run_cli("chat", "--provider", "nonsense", "hi")
    assert proc.returncode == 2
    assert proc.stderr.startswith("streamchat: unknown provider 'nonsense': choose one of ")
    assert "Traceback" not in proc.stderr


def test_interactive_prompt_reads_messages_until_exit():
    proc = subprocess.run(
        [sys.executable, "-m", "streamchat.cli", "chat", "--provider", "demo"],
        input="What is 1 + 1?\n/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("> [calculate] Evaluating...\n[calculate] Done: 1 + 1 = 2\n1 + 1 = 2.")


SLOW_CLI = """
import sys
from streamchat.cli import main
from streamchat.providers import PROVIDERS, ScriptedProvider
# A registered provider whose answer takes minutes, so Ctrl-C surely lands mid-answer.
PROVIDERS["slow"] = lambda model, settings: ScriptedProvider([[f"word{i} " for i in range(5000)]], token_delay=0.05)
sys.exit(main(["chat", "--provider", "slow", "tell me a long story"]))
"""


def test_ctrl_c_stops_the_answer_cleanly():
    import signal

    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(6) == "word0 "  # the answer is streaming
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert out.endswith("\n[stopped]\n")
    assert "Traceback" not in err
