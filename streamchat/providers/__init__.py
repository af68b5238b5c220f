"""LLM backends. A provider is the only code that knows a backend's wire format.

`get_provider` picks one: the name given (`provider=`, `--provider`,
`STREAMCHAT_PROVIDER`), or, with none, Ollama if it answers at `OLLAMA_HOST`, else an
OpenAI-compatible server if `OPENAI_BASE_URL` or `OPENAI_API_KEY` is set, else the
local model if `STREAMCHAT_LOCAL_MODEL` is set, else the offline demo model. The choice
is logged once (logger `streamchat.providers`) and `describe_choice()` returns it, for
surfaces that print it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx

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
from .local import LocalProvider
from .ollama import DEFAULT_OLLAMA_MODEL, OllamaProvider
from .openai import OpenAIProvider
from .scripted import ScriptedProvider, ToolCall

__all__ = [
    "NO_BACKEND_ANNOUNCEMENT",
    "PROVIDERS",
    "DemoProvider",
    "FinishDelta",
    "LocalProvider",
    "ModelRequest",
    "NoticeDelta",
    "OllamaProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderDelta",
    "ScriptedProvider",
    "TextDelta",
    "ThinkingDelta",
    "ToolCall",
    "ToolCallPart",
    "ToolDefinition",
    "UsageDelta",
    "available_providers",
    "describe_choice",
    "get_provider",
]

logger = logging.getLogger("streamchat.providers")

NO_BACKEND_ANNOUNCEMENT = "no LLM backend found: using the offline demo model; see README → Backends"
"""What is announced when nothing is configured and Ollama does not answer."""


def _demo(model: str | None, settings: Settings) -> Provider:
    return DemoProvider(model)


def _ollama(model: str | None, settings: Settings) -> Provider:
    return OllamaProvider(model, settings=settings)


def _openai(model: str | None, settings: Settings) -> Provider:
    return OpenAIProvider(model, settings=settings)


def _local(model: str | None, settings: Settings) -> Provider:
    return LocalProvider(model, settings=settings)


PROVIDERS: dict[str, Callable[[str | None, Settings], Provider]] = {
    "demo": _demo,
    "local": _local,
    "ollama": _ollama,
    "openai": _openai,
}
"""Provider factories by name: each takes the model name (or None) and the settings."""

PROBE_TTL = 5.0
"""Seconds an Ollama probe's answer is reused by the automatic choice."""

_choice_lock = threading.Lock()
_last_choice: str | None = None
_announced: set[str] = set()
_probes: dict[str, tuple[float, list[str] | None]] = {}


def describe_choice() -> str | None:
    """The announcement of the latest `get_provider` choice ("using ollama llama3.2 at …"), or None."""
    return _last_choice


def available_providers(settings: Settings | None = None) -> str:
    """One line listing every provider and how it is (or would be) configured."""
    settings = settings or Settings()
    openai = settings.openai_base_url or ("api.openai.com" if settings.openai_api_key else None)
    parts = [
        "demo (offline, always available)",
        f"local ({'STREAMCHAT_LOCAL_MODEL=' + settings.local_model if settings.local_model else 'set STREAMCHAT_LOCAL_MODEL to a GGUF file'})",
        f"ollama (at {settings.ollama_host}, OLLAMA_HOST)",
        f"openai ({openai if openai else 'set OPENAI_BASE_URL or OPENAI_API_KEY'})",
    ]
    return "available providers: " + ", ".join(parts)


def get_provider(name: str | None = None, *, model: str | None = None, settings: Settings | None = None) -> Provider:
    """The provider named `name` (or `settings.provider`); with neither, the first backend that answers.

    Raises `UnknownProviderError`, listing the providers, for a name it does not know.

    Example:
        >>> get_provider("demo").describe()
        'the offline demo model (rule-based, not an LLM)'
    """
    settings = settings or Settings()
    chosen = (name or settings.provider or "").strip().lower()
    model = model or settings.model
    if chosen in ("", "auto"):
        provider, announcement = _auto(model, settings)
    else:
        factory = PROVIDERS.get(chosen)
        if factory is None:
            raise UnknownProviderError(
                f"unknown provider {chosen!r}: choose one of {', '.join(sorted(PROVIDERS))}; "
                f"{available_providers(settings)}"
            )
        provider = factory(model, settings)
        announcement = f"using {provider.describe()}"
    _announce(announcement)
    return provider


def _auto(model: str | None, settings: Settings) -> tuple[Provider, str]:
    ollama = OllamaProvider(model, settings=settings)
    installed = _ollama_models(ollama.base_url, settings.backend_probe_timeout)
    note = ""
    if installed:
        if model is None and ollama.model not in installed and f"{ollama.model}:latest" not in installed:
            ollama.model = installed[0]  # nothing configured: use a model that is there
        return ollama, f"using {ollama.describe()}"
    if installed is not None:
        note = f" (ollama at {ollama.base_url} has no models: `ollama pull {DEFAULT_OLLAMA_MODEL}`)"
    if settings.openai_base_url or settings.openai_api_key:
        provider: Provider = OpenAIProvider(model, settings=settings)
        return provider, f"using {provider.describe()}{note}"
    if settings.local_model:
        provider = LocalProvider(model if model and model.endswith(".gguf") else None, settings=settings)
        return provider, f"using {provider.describe()}{note}"
    return DemoProvider(), NO_BACKEND_ANNOUNCEMENT + note


def _ollama_models(base_url: str, timeout: float) -> list[str] | None:
    """Names of the models Ollama has, or None if it does not answer within `timeout` seconds.

    Remembered for a few seconds: a server creating many sessions probes once, not per session.
    """
    now = time.monotonic()
    with _choice_lock:
        cached = _probes.get(base_url)
    if cached is not None and now - cached[0] < PROBE_TTL:
        return cached[1]
    try:
        # a plain-HTTP probe needs no CA bundle (loading one costs more than the probe itself)
        with httpx.Client(timeout=timeout, verify=not base_url.startswith("http://")) as client:
            response = client.get(f"{base_url}/api/tags")
            response.raise_for_status()
            models = response.json().get("models") or []
        found: list[str] | None = [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]
    except (httpx.HTTPError, ValueError, AttributeError):
        found = None
    with _choice_lock:
        _probes[base_url] = (now, found)
    return found


def _announce(announcement: str) -> None:
    global _last_choice
    with _choice_lock:
        _last_choice = announcement
        first_time = announcement not in _announced
        _announced.add(announcement)
    if first_time:
        logger.info(announcement)
