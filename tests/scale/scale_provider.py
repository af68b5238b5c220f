"""The backend the two-process tests configure (`StreamChat.provider_factory`): a paced counting model.

Each server process makes its own `PacedProvider` (the servers are real subprocesses, so
the tests cannot hand them a script object). What it answers is read from the user's
message, so every process answers a message the same way, exactly and repeatably:
``count N every S`` streams the tokens ``"1 "``, ``"2 "`` … ``"N "``, waiting S seconds
before each one, then ends. Slow enough to cut, stop or kill a turn in the middle.
``tick N`` calls the tool `tick` (call id ``tick-1``), which reports progress N times,
0.1 s apart, and answers ``"ticked."`` once it has the tool's result. Any other message
is answered ``"1 2 "`` at once.

`TOOLS` is what the servers are configured with (``StreamChat.tools``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from streamchat.providers.base import FinishDelta, ModelRequest, Provider, ProviderDelta, TextDelta, ToolCallPart
from streamchat.settings import Settings
from streamchat.tools.definition import ProgressReporter

__all__ = ["TICK_CALL", "TOOLS", "PacedProvider", "make_provider", "paced", "tick"]

_ORDER = re.compile(r"count (\d{1,6}) every (\d{1,3}(?:\.\d{1,6})?)")
_TICK = re.compile(r"tick (\d{1,4})")
TICK_CALL = "tick-1"
"""The call id of the `tick` call the model makes."""
TOOLS = ["scale_provider:tick"]


def paced(tokens: int, every: float) -> str:
    """The message that makes the model stream `tokens` tokens, one every `every` seconds."""
    return f"count {tokens} every {every}"


class PacedProvider(Provider):
    """Counts up to the number the user's last message asks for, at the pace it asks for."""

    name = "paced"

    def __init__(self) -> None:
        super().__init__("counting")

    def describe(self) -> str:
        return "the scale tests' paced counting model"

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        if request.messages and request.messages[-1].role == "tool":
            yield TextDelta(text="ticked.")
            yield FinishDelta(reason="stop")
            return
        asked = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if ticks := _TICK.fullmatch(asked):
            yield ToolCallPart(call_id=TICK_CALL, name="tick", args={"steps": int(ticks[1])})
            yield FinishDelta(reason="tool_calls")
            return
        order = _ORDER.search(asked)
        tokens, every = (int(order[1]), float(order[2])) if order else (2, 0.0)
        for i in range(1, tokens + 1):
            if every:
                await asyncio.sleep(every)
            yield TextDelta(text=f"{i} ")
        yield FinishDelta(reason="stop")


async def tick(steps: int, report: ProgressReporter) -> str:
    """Report progress `steps` times, 0.1 s apart.

    Args:
        steps: How many steps to take.
    """
    for i in range(1, steps + 1):
        await asyncio.sleep(0.1)
        await report(f"step {i} of {steps}", percent=100 * i / steps)
    return f"ticked {steps} times"


def make_provider(settings: Settings) -> PacedProvider:
    """`StreamChat.provider_factory` of the scale tests: one provider per server process."""
    return PacedProvider()
