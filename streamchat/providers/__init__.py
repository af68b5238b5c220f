"""LLM backends. A provider is the only code that knows a backend's wire format.

`choose_provider` (in `choice`) picks one by name, or probes for the first backend
that works, and returns the provider with the line announcing it.
"""

from __future__ import annotations

from .base import (
    FinishDelta,
    ModelRequest,
    NoticeDelta,
    Provider,
    ProviderDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallPart,
    ToolDefinition,
    UsageDelta,
)
from .choice import (
    NO_BACKEND_ANNOUNCEMENT,
    PROVIDERS,
    AutoProvider,
    ProviderChoice,
    available_providers,
    choose_provider,
    named_choice,
    session_provider,
)
from .demo import DemoProvider
from .local import LocalProvider
from .ollama import OllamaProvider
from .openai import OpenAIProvider
from .scripted import ScriptedProvider, ToolCall

__all__ = [
    "NO_BACKEND_ANNOUNCEMENT",
    "PROVIDERS",
    "AutoProvider",
    "DemoProvider",
    "FinishDelta",
    "LocalProvider",
    "ModelRequest",
    "NoticeDelta",
    "OllamaProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderChoice",
    "ProviderDelta",
    "ScriptedProvider",
    "TextDelta",
    "ThinkingDelta",
    "ToolCall",
    "ToolCallPart",
    "ToolDefinition",
    "UsageDelta",
    "available_providers",
    "choose_provider",
    "named_choice",
    "session_provider",
]
