"""What the protocol adapters share: reading another protocol's request, and the shape of a turn.

`TurnEncoder` re-encodes one followed turn's events in another protocol: it decides when
steps begin and end, which text or reasoning block is open, and whether an error ended
the turn or was a notice; each adapter (`ui_message_stream`, `agui`) says what those
moments become in its protocol. `validate_body` and `last_user_text` read the request
bodies of other protocols, which carry the whole conversation: the server keeps its
own, and takes the user's newest message from them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias, TypeVar, assert_never

from pydantic import BaseModel, ConfigDict, ValidationError

from streamchat.errors import ClientMessageError
from streamchat.events import (
    DoneEvent,
    ErrorEvent,
    Event,
    ThinkingEvent,
    TokenEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
)

from . import wire

__all__ = ["Block", "ClientModel", "Part", "TurnEncoder", "last_user_text", "validate_body"]


class ClientModel(BaseModel):
    """A request body of another protocol: the fields we read are checked, the others are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


M = TypeVar("M", bound=ClientModel)


def validate_body(model: type[M], body: Any, what: str, shape: str) -> M:
    """`body` as `model`, or a `ClientMessageError` naming each problem and the expected `shape`."""
    if not isinstance(body, dict):
        raise ClientMessageError(f"{what} must be a JSON object: send {shape}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ClientMessageError(f"invalid {what}: {wire.problems(exc)}; send {shape}") from exc


def last_user_text(role: str | None, texts: Sequence[str], *, others: Sequence[str], what: str) -> str:
    """The user's message: the text of the conversation's last message, which must be the user's.

    Raises `ClientMessageError` when the last message is not the user's, or holds parts other than text.
    """
    if role != "user":
        raise ClientMessageError(
            f"{what}: the last message must be the user's (it is {role or 'missing'}): streamchat keeps the "
            "conversation and runs its tools on the server, and answers the user's newest message",
            code="bad_message",
        )
    if others:
        raise ClientMessageError(
            f"{what}: the user's message holds {', '.join(sorted(set(others)))} parts: send text only",
            code="bad_message",
        )
    return "".join(texts)


Part: TypeAlias = dict[str, Any]
"""One message of a protocol, as JSON."""
Block: TypeAlias = Literal["text", "reasoning"]
"""An open block of streamed text: the answer, or the model's reasoning."""


class TurnEncoder(abc.ABC):
    """Re-encodes one turn's events in another protocol: the structure both adapters share.

    Subclasses say what each moment of the turn becomes (the ``on_*`` hooks, each returning
    the protocol's messages) and how messages are framed (`frame`); this class decides
    when the moments happen:

    - a step is one model call and the tool calls it asked for: the first opens with the
      turn's first event, and a new one when the model speaks again after tool results;
    - at most one text or reasoning block is open: a token opens text, reasoning opens
      reasoning, and anything else closes the open one;
    - an error event waits for the next event: before ``done(reason="error")`` it is the
      turn's failure (`on_done` gets it), otherwise a notice (`on_notice`) and the turn goes on.
    """

    headers: Mapping[str, str] = wire.SSE_HEADERS

    def __init__(self) -> None:
        self.turn_id = ""
        """The turn, from its first event."""
        self.step = 0
        """The step open now (1, 2 …); 0 before the first event."""
        self._step_has_results = False
        self.block: Block | None = None
        """The text or reasoning block open now."""
        self.block_id = ""
        """The id of the open block (or of the last one)."""
        self._blocks: dict[Block, int] = {"text": 0, "reasoning": 0}
        self._errors: list[ErrorEvent] = []

    def encode(self, events: Sequence[Event]) -> bytes:
        """The bytes that send `events`, the turn's next events in order."""
        parts: list[Part] = []
        for event in events:
            parts += self._parts(event)
        return self.frame(parts)

    def _parts(self, event: Event) -> list[Part]:
        parts: list[Part] = []
        if not self.turn_id:
            self.turn_id = event.turn_id
            parts += self.on_start()
        if isinstance(event, ErrorEvent):
            self._errors.append(event)
            return parts
        if isinstance(event, DoneEvent):
            parts += self._close_block()
            errors, self._errors = self._errors, []
            failure = errors.pop() if event.reason == "error" and errors else None
            for notice in errors:
                parts += self.on_notice(notice)
            return parts + self.on_done(event, failure)
        if not isinstance(event, ToolResultEvent):
            for notice in self._errors:
                parts += self.on_notice(notice)
            self._errors = []
        if self.step == 0 or (self._step_has_results and event.type in ("thinking", "token", "tool_call")):
            parts += self._close_block()
            if self.step:
                parts += self.on_step_end()
            self.step += 1
            self._step_has_results = False
            parts += self.on_step_start()
        match event:
            case ThinkingEvent(kind="status"):
                parts += self.on_status(event)
            case ThinkingEvent():
                parts += self._open_block("reasoning") + self.on_delta(event.text)
            case TokenEvent():
                parts += self._open_block("text") + self.on_delta(event.content)
            case ToolCallEvent():
                parts += self._close_block() + self.on_tool_call(event)
            case ToolProgressEvent():
                parts += self._close_block() + self.on_tool_progress(event)
            case ToolResultEvent():
                self._step_has_results = True
                parts += self._close_block() + self.on_tool_result(event)
            case _:
                assert_never(event)
        return parts

    def _open_block(self, block: Block) -> list[Part]:
        if self.block == block:
            return []
        parts = self._close_block()
        self._blocks[block] += 1
        self.block = block
        self.block_id = self.new_block_id(block, self._blocks[block])
        return parts + self.on_block_start()

    def _close_block(self) -> list[Part]:
        if self.block is None:
            return []
        parts = self.on_block_end()
        self.block = None
        return parts

    def new_block_id(self, block: Block, number: int) -> str:
        """The id of the turn's `number`-th text (or reasoning) block: ``text-1``, ``reasoning-1`` …"""
        return f"{block}-{number}"

    @abc.abstractmethod
    def frame(self, parts: list[Part]) -> bytes:
        """The SSE bytes carrying `parts`."""

    @abc.abstractmethod
    def on_start(self) -> list[Part]:
        """The turn's first event arrived (`turn_id` is set)."""

    def on_step_start(self) -> list[Part]:
        """A step opens (`step` is its number)."""
        return []

    def on_step_end(self) -> list[Part]:
        """The open step ends."""
        return []

    @abc.abstractmethod
    def on_block_start(self) -> list[Part]:
        """A text or reasoning block opens (`block`, `block_id`)."""

    @abc.abstractmethod
    def on_delta(self, text: str) -> list[Part]:
        """More text in the open block."""

    @abc.abstractmethod
    def on_block_end(self) -> list[Part]:
        """The open block ends."""

    @abc.abstractmethod
    def on_status(self, event: ThinkingEvent) -> list[Part]:
        """A status line ("Thinking…", or a provider's)."""

    @abc.abstractmethod
    def on_tool_call(self, event: ToolCallEvent) -> list[Part]:
        """The model asked for a tool."""

    @abc.abstractmethod
    def on_tool_progress(self, event: ToolProgressEvent) -> list[Part]:
        """A running tool reported progress."""

    @abc.abstractmethod
    def on_tool_result(self, event: ToolResultEvent) -> list[Part]:
        """A tool call finished."""

    @abc.abstractmethod
    def on_notice(self, event: ErrorEvent) -> list[Part]:
        """Something failed and the turn went on."""

    @abc.abstractmethod
    def on_done(self, event: DoneEvent, failure: ErrorEvent | None) -> list[Part]:
        """The turn ended (its blocks are closed); `failure` is why, when it failed."""
