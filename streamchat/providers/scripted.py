"""`ScriptedProvider`: a model that plays back a script, for tests and examples.

Like pydantic-ai's `FunctionModel`, it is part of the public API so users can test
their own tools and UIs offline, with exact, repeatable streams.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ..errors import BackendError
from .base import ModelRequest, Provider, ProviderDelta, TextDelta, ToolCallPart

__all__ = ["ScriptItem", "ScriptTurn", "ScriptedProvider", "ToolCall"]


@dataclass(frozen=True)
class ToolCall:
    """A tool call in a script: the model asks for `name` with `args`.

    `call_id` defaults to ``call_1``, ``call_2`` … in the order the provider emits them.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None


ScriptItem: TypeAlias = str | ToolCall | ProviderDelta
"""One step of a scripted response: text, a tool call, or any provider delta."""
ScriptTurn: TypeAlias = (
    str | Sequence[ScriptItem] | Callable[[ModelRequest], Iterable[ScriptItem] | AsyncIterable[ScriptItem]]
)
"""One model response: text, a list of items, or a callable that receives the request."""


class ScriptedProvider(Provider):
    """Plays one scripted response per model call, in order.

    Args:
        turns: one entry per model call: a string, a list of text pieces, `ToolCall`s and
            provider deltas, or a callable that receives the `ModelRequest` and returns
            (or yields, sync or async) such items.
        token_delay: seconds to wait before each item, to imitate a streaming model.

    One provider shared by several sessions (the server shares one between all of them)
    plays its responses in the order the calls arrive, whichever session makes them.

    Attributes:
        requests: every `ModelRequest` received, in order.
        cancellations: how many responses were stopped by their consumer before the end.

    Example:
        >>> from streamchat import ChatSession, ScriptedProvider, ToolCall
        >>> provider = ScriptedProvider([
        ...     [ToolCall("calculate", {"expression": "6 * 7"})],
        ...     ["The answer is ", "42."],
        ... ])
        >>> session = ChatSession(provider)
    """

    name = "scripted"

    def __init__(self, turns: Iterable[ScriptTurn], *, token_delay: float = 0.0, model: str = "script") -> None:
        super().__init__(model)
        self.turns: list[ScriptTurn] = list(turns)
        self.token_delay = token_delay
        self.requests: list[ModelRequest] = []
        self.cancellations = 0
        self._calls = 0

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        index = len(self.requests)
        self.requests.append(request)
        if index >= len(self.turns):
            raise BackendError(
                f"the scripted provider has {len(self.turns)} response(s) and was asked for response {index + 1}",
                code="script_exhausted",
            )
        try:
            async for item in self._items(self.turns[index], request):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                yield self._delta(item)
        except (GeneratorExit, asyncio.CancelledError):
            self.cancellations += 1
            raise

    async def _items(self, turn: ScriptTurn, request: ModelRequest) -> AsyncIterator[ScriptItem]:
        if isinstance(turn, str):
            yield turn
            return
        if callable(turn):
            produced = turn(request)
            if inspect.isawaitable(produced):
                produced = await produced
            if isinstance(produced, AsyncIterable):
                async for item in produced:
                    yield item
                return
            turn = list(produced)
        for item in turn:
            yield item

    def _delta(self, item: ScriptItem) -> ProviderDelta:
        if isinstance(item, str):
            return TextDelta(text=item)
        if isinstance(item, ToolCall):
            self._calls += 1
            return ToolCallPart(call_id=item.call_id or f"call_{self._calls}", name=item.name, args=item.args)
        return item
