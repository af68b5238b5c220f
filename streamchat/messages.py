"""Conversation history: the messages a session keeps and sends to the model."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._text import EncodableArgs, EncodableText

__all__ = ["Message", "ToolCallRecord"]


class ToolCallRecord(BaseModel):
    """A tool call the assistant made, as kept in history."""

    model_config = ConfigDict(frozen=True)

    call_id: EncodableText
    """The call's id (the backend's, or one streamchat made up)."""
    tool: EncodableText
    """The tool's name."""
    args: EncodableArgs = Field(default_factory=dict)
    """The arguments the model sent."""


class Message(BaseModel):
    """One message of the conversation, in a backend-neutral shape.

    Providers translate it into their wire format (Ollama's `messages`, OpenAI's
    `messages` with `tool_calls` and `role: tool`). Its text can always be encoded as
    UTF-8: lone surrogates (from a backend or a tool) become U+FFFD.
    """

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    """Who said it."""
    content: EncodableText = ""
    """The text; for `tool` messages, the result as the model sees it. Lone surrogates become U+FFFD."""
    tool_calls: tuple[ToolCallRecord, ...] = ()
    """For `assistant` messages: the tools it asked for."""
    tool_call_id: EncodableText | None = None
    """For `tool` messages: which call this answers."""
    tool: EncodableText | None = None
    """For `tool` messages: the tool's name."""
    interrupted: bool = False
    """True for an assistant answer that was stopped before it ended."""

    @staticmethod
    def tool_content(status: str, result: Any = None, error: str | None = None) -> str:
        """The text a model sees for a tool outcome: the JSON result, or an error line."""
        if status == "ok":
            return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
        return f"Error ({status}): {error}"
