"""The provider interface: the only layer that knows a backend's wire format.

A provider turns a `ModelRequest` (history + tool definitions) into an async iterator
of deltas. The agent loop (`streamchat.session`) turns deltas into events; providers
never build events themselves.

Deltas:
- `TextDelta`: answer text, in order.
- `ThinkingDelta`: reasoning text, or a status/warning line from the provider.
- `ToolCallPart`: one complete tool call (arguments parsed, or `invalid_args` set when
  the model sent arguments that are not a JSON object).
- `UsageDelta`: token counts for this model call.
- `NoticeDelta`: a non-fatal problem (a malformed line skipped…); becomes an `error`
  event and the turn goes on.
- `FinishDelta`: why the model stopped (`stop`, `length`, `tool_calls`).

A fatal failure is raised as a `streamchat.errors.BackendError` subclass; the loop turns
it into an `error` event followed by `done(reason="error")`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from .._text import EncodableArgs, EncodableText
from ..messages import Message

__all__ = [
    "FinishDelta",
    "ModelRequest",
    "NoticeDelta",
    "Provider",
    "ProviderDelta",
    "TextDelta",
    "ThinkingDelta",
    "ToolCallPart",
    "ToolDefinition",
    "UsageDelta",
]


class _Delta(BaseModel):
    # Text fields are `EncodableText`: a backend's JSON may carry a lone surrogate
    # ("\ud800"), which becomes U+FFFD here, before it reaches events or history.
    model_config = ConfigDict(frozen=True)


class TextDelta(_Delta):
    """A piece of answer text."""

    text: EncodableText


class ThinkingDelta(_Delta):
    """Reasoning text streamed by the model, or a status line from the provider."""

    text: EncodableText
    kind: Literal["status", "reasoning"] = "reasoning"


class ToolCallPart(_Delta):
    """One complete tool call from the model."""

    call_id: EncodableText
    """The backend's id for the call, or one the provider made up."""
    name: EncodableText
    """The tool the model asked for."""
    args: EncodableArgs = Field(default_factory=dict)
    """Parsed arguments."""
    invalid_args: EncodableText | None = None
    """Set (to the raw text, or a description) when the arguments could not be parsed."""


class UsageDelta(_Delta):
    """Token counts and backend-side timings of one model call."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    backend_duration_ms: float | None = None
    """Time the backend reports spending on the whole call (Ollama `total_duration`)."""
    generation_ms: float | None = None
    """Time the backend reports spending generating `completion_tokens` (Ollama `eval_duration`)."""


class NoticeDelta(_Delta):
    """A non-fatal problem the user should hear about; the stream goes on."""

    message: EncodableText
    code: str = "backend_notice"


class FinishDelta(_Delta):
    """Why the model stopped generating."""

    reason: Literal["stop", "length", "tool_calls"] = "stop"


ProviderDelta: TypeAlias = TextDelta | ThinkingDelta | ToolCallPart | UsageDelta | NoticeDelta | FinishDelta


class ToolDefinition(BaseModel):
    """What the model is told about a tool."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments object."""


class ModelRequest(BaseModel):
    """Everything a provider needs for one model call."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    """The history, system prompt first when there is one."""
    tools: tuple[ToolDefinition, ...] = ()
    """The tools the model may call."""
    session_id: str | None = None
    """The conversation the call belongs to (`ChatSession.session_id`), so that a provider shared by
    several sessions can tell them apart."""


class Provider(abc.ABC):
    """Base class of every backend.

    Subclasses implement `stream`; they may override `aclose` to release connections
    and `describe` for the one-line announcement ("ollama llama3.2 at http://…").
    """

    name: str = "provider"
    """Short name used in settings and messages (`ollama`, `openai`, `demo` …)."""

    def __init__(self, model: str = "") -> None:
        self.model = model

    @abc.abstractmethod
    def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        """Send one request and yield the response's deltas as they arrive."""

    async def aclose(self) -> None:  # noqa: B027  (an optional hook: nothing to release by default)
        """Release network resources. Safe to call more than once."""

    async def reachable(self, timeout: float) -> bool:
        """Whether the backend answers within `timeout` seconds; an in-process model always does."""
        return True

    def describe(self) -> str:
        """One line naming the backend and model, for announcements and labels."""
        return f"{self.name} {self.model}".strip()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
