"""The backend the two-process tests configure (`StreamChat.provider_factory`): a paced counting model.

Each server process makes its own `PacedProvider` (the servers are real subprocesses, so
the tests cannot hand them a script object). What it answers is read from the user's
message, so every process answers a message the same way, exactly and repeatably:
``count N every S`` streams the tokens ``"1 "``, ``"2 "`` … ``"N "``, waiting S seconds
before each one, then ends. Slow enough to cut, stop or kill a turn in the middle; any
other message is answered ``"1 2 "`` at once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from streamchat.providers.base import FinishDelta, ModelRequest, Provider, ProviderDelta, TextDelta
from streamchat.settings import Settings

__all__ = ["PacedProvider", "make_provider", "paced"]

_ORDER = re.compile(r"count (\d{1,6}) every (\d{1,3}(?:\.\d{1,6})?)")


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
        asked = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        order = _ORDER.search(asked)
        tokens, every = (int(order[1]), float(order[2])) if order else (2, 0.0)
        for i in range(1, tokens + 1):
            if every:
                await asyncio.sleep(every)
            yield TextDelta(text=f"{i} ")
        yield FinishDelta(reason="stop")


def make_provider(settings: Settings) -> PacedProvider:
    """`StreamChat.provider_factory` of the scale tests: one provider per server process."""
    return PacedProvider()
