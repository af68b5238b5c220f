"""How much a streaming turn sends to the frontend, measured in a real kernel in real time.

A scripted model streams a 10,000-token Markdown answer (paragraphs, lists, code) at
1,000 tokens/s for 10 s, once through `chat()` in a cell and once through a displayed
`ChatWidget` (`await widget.ask()`), in an ipykernel started here. Every iopub message the
kernel sends meanwhile (whatever its parent) is what a frontend would receive: prints the
widget state updates per second, the bytes sent while streaming (widget messages and the
finished blocks sent once as display data) against the answer's size, the bytes of the
turn's document sent once at the end (what a saved notebook keeps), and whether the
rendered text equals the answer.

    python bench/widget_updates.py [--tokens 10000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager


def answer_pieces(tokens: int) -> list[str]:
    """A Markdown answer of `tokens` pieces: paragraphs, a bullet list, a code block."""
    pieces: list[str] = []
    block = 0
    while len(pieces) < tokens:
        kind = block % 4
        if kind == 3:
            pieces += ["```python\n"] + [f"value_{i} = compute({i}) \n" for i in range(12)] + ["```\n\n"]
        elif kind == 2:
            for item in range(5):
                pieces += ["- "] + [f"item{item}word{w} " for w in range(8)] + ["\n"]
            pieces.append("\n")
        else:
            pieces += [f"word{w} " for w in range(90)] + ["end.\n\n"]
        block += 1
    return pieces[:tokens]


KERNEL_SETUP = """
import asyncio, time
from streamchat import ChatSession, ChatWidget, ScriptedProvider, chat

pieces = {pieces!r}
answer = "".join(pieces)


async def paced(_):
    start = time.monotonic()
    for index, piece in enumerate(pieces):
        delay = start + index / {rate!r} - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield piece


def session():
    return ChatSession(ScriptedProvider([paced]), tools=[])
"""

# How each surface is driven, as a user does: (cells that set it up, the cell that streams the answer, the check).
SURFACES = {
    "chat() in a cell": ([], "r = chat('stream', session=session())", "print(r.text == answer)"),
    "ChatWidget": (
        ["w = ChatWidget(session=session())\nw"],  # displayed: its home cell
        "r = await w.ask('stream')",
        "print(w.views[-1].text == r.text == answer)",
    ),
}


def _iopub_until_idle(kc: BlockingKernelClient, msg_id: str) -> list[tuple[float, dict[str, Any]]]:
    """Every iopub message (any parent), with the time it arrived, until request `msg_id` is idle."""
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=120)
        out.append((time.monotonic(), msg))
        if msg["parent_header"].get("msg_id") == msg_id and msg["content"].get("execution_state") == "idle":
            return out


def _run(kc: BlockingKernelClient, code: str) -> list[tuple[float, dict[str, Any]]]:
    return _iopub_until_idle(kc, kc.execute(code))


def measure(kc: BlockingKernelClient, surface: str, answer: str, tokens: int) -> None:
    """Stream the answer through one surface in the kernel and print what reached the frontend."""
    setup, stream, check = SURFACES[surface]
    for code in setup:
        _run(kc, code)
    started = time.monotonic()
    received = _run(kc, stream)
    elapsed = time.monotonic() - started
    updates: dict[int, int] = {}
    live = document = 0
    for at, msg in received:
        size = len(json.dumps(msg["content"]))
        kind = msg["msg_type"]
        if kind == "comm_msg" and msg["content"]["data"].get("method") == "update":
            updates[int(at - started)] = updates.get(int(at - started), 0) + 1
        if kind in ("comm_open", "comm_msg") or (
            kind == "display_data" and "text/markdown" not in msg["content"]["data"]
        ):
            live += size  # the live view: widget messages, and finished blocks sent once as display data
        elif kind in ("display_data", "update_display_data"):
            document += size  # the turn as a document, sent once when it ended
    same = "".join(m["content"].get("text", "") for _, m in _run(kc, check) if m["msg_type"] == "stream").strip()
    size = len(answer.encode())
    print(f"-- {surface}")
    print(f"answer: {tokens} tokens, {size} bytes, streamed in {elapsed:.2f} s ({tokens / elapsed:.0f} tokens/s)")
    print(f"state updates per second: max {max(updates.values())}, per second {[updates[k] for k in sorted(updates)]}")
    print(f"bytes sent while streaming: {live} ({live / size:.2f}x the answer)")
    print(f"bytes of the turn's document, sent once at the end: {document} ({document / size:.2f}x the answer)")
    print(f"rendered text equals the answer: {same}")


def main(tokens: int, rate: float) -> None:
    pieces = answer_pieces(tokens)
    km = KernelManager(kernel_name="python3")
    repo = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    km.start_kernel(env={**os.environ, "PYTHONPATH": path, "STREAMCHAT_DISPLAY": "widget"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        _run(kc, KERNEL_SETUP.format(pieces=pieces, rate=rate))
        for surface in SURFACES:
            measure(kc, surface, "".join(pieces), tokens)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="tokens per second")
    args = parser.parse_args()
    main(args.tokens, args.rate)
