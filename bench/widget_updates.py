"""How much a streaming `ChatView` sends to the frontend, measured in real time.

A scripted model streams a 10,000-token Markdown answer (paragraphs, lists, code) at
1,000 tokens/s for 10 s through the real driver (`consume`: coalescing on the wall
clock) into a `ChatView` whose widget comms record every message, once per block mode
(`display`: how `chat()` in a cell sends finished blocks; `widgets`: how `ChatWidget`
does). Prints the state updates per second, the total bytes sent against the answer's
size, and whether the rendered text equals the answer.

    python bench/widget_updates.py [--tokens 10000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import comm

from streamchat import ChatSession, ScriptedProvider
from streamchat.notebook.chat import consume
from streamchat.notebook.view import BlockMode, ChatView


class RecordingComm:
    """Records what a widget would send to the frontend: (time, kind, bytes)."""

    kernel = "recording"
    log: ClassVar[list[tuple[float, str, int]]] = []

    def __init__(self, data: dict[str, Any]) -> None:
        self.comm_id = uuid.uuid4().hex
        self.log.append((time.monotonic(), "open", len(json.dumps(data))))

    def send(self, data: dict[str, Any], buffers: Any = None) -> None:
        self.log.append((time.monotonic(), "update", len(json.dumps(data))))

    def on_msg(self, callback: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


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


async def measure(tokens: int, rate: float, blocks: BlockMode) -> None:
    """Stream one answer into a `ChatView` with the given block mode and print the figures."""
    RecordingComm.log = []
    pieces = answer_pieces(tokens)
    answer = "".join(pieces)

    async def paced(_: object) -> AsyncIterator[str]:
        start = time.monotonic()
        for index, piece in enumerate(pieces):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield piece

    session = ChatSession(ScriptedProvider([paced]), tools=[])
    view = ChatView(blocks=blocks)
    started = time.monotonic()
    result = await consume(session, "stream", view)
    elapsed = time.monotonic() - started

    updates: dict[int, int] = {}
    for at, kind, _ in RecordingComm.log:
        if kind == "update" and at >= started:
            updates[int(at - started)] = updates.get(int(at - started), 0) + 1
    comm_bytes = sum(size for _, _, size in RecordingComm.log)
    sent = comm_bytes + view.published_bytes
    size = len(answer.encode())
    print(f"-- blocks={blocks!r} ({'chat() / achat() in a cell' if blocks == 'display' else 'ChatWidget'})")
    print(f"answer: {tokens} tokens, {size} bytes, streamed in {elapsed:.2f} s ({tokens / elapsed:.0f} tokens/s)")
    print(f"state updates per second: max {max(updates.values())}, per second {[updates[k] for k in sorted(updates)]}")
    print(f"bytes sent: {sent} ({comm_bytes} in widget messages + {view.published_bytes} in frozen blocks)")
    print(f"bytes sent / answer size: {sent / size:.2f}x")
    print(f"rendered text equals the answer: {view.text == answer == result.text}")


async def main(tokens: int, rate: float) -> None:
    comm.create_comm = lambda **kw: RecordingComm(kw.get("data", {}))  # type: ignore[assignment]
    for blocks in ("display", "widgets"):
        await measure(tokens, rate, blocks)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="tokens per second")
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.rate))
