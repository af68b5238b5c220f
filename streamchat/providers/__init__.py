"""LLM backends. A provider is the only code that knows a backend's wire format."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UnknownProviderError
from ..settings import Settings
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
from .demo import DemoProvider
from .scripted import ScriptedProvider, ToolCall

__all__ = [
    "PROVIDERS",
    "DemoProvider",
    "FinishDelta",
    "ModelRequest",
    "NoticeDelta",
    "Provider",
    "ProviderDelta",
    "ScriptedProvider",
    "TextDelta",
    "ThinkingDelta",
    "ToolCall",
    "ToolCallPart",
    "ToolDefinition",
    "UsageDelta",
    "get_provider",
]


def _demo(model: str | None, settings: Settings) -> Provider:
    return DemoProvider(model)


PROVIDERS: dict[str, Callable[[str | None, Settings], Provider]] = {"demo": _demo}
"""Provider factories by name: each takes the model name (or None) and the settings."""


def get_provider(name: str | None = None, *, model: str | None = None, settings: Settings | None = None) -> Provider:
    """The provider named `name` (or `settings.provider`); with neither, the default backend.

    Raises `UnknownProviderError`, listing the known names, for a name it does not know.
    """
    settings = settings or Settings()
    chosen = (name or settings.provider or "demo").strip().lower()
    factory = PROVIDERS.get(chosen)
    if factory is None:
        known = ", ".join(sorted(PROVIDERS))
        raise UnknownProviderError(f"unknown provider {chosen!r}: choose one of {known}")
    return factory(model or settings.model, settings)
