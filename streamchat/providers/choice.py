"""Choosing a backend: `choose_provider` returns a `ProviderChoice`, the provider with its announcement.

The choice is the name given (`provider=`, `--provider`, `STREAMCHAT_PROVIDER`), or, with
none, the first backend that works: Ollama if it lists its models at `OLLAMA_HOST`
(within `STREAMCHAT_BACKEND_PROBE_TIMEOUT`), else an OpenAI-compatible server if
`OPENAI_BASE_URL` or `OPENAI_API_KEY` is set, else the local model if
`STREAMCHAT_LOCAL_MODEL` is set, else the offline demo model. A named choice does no
I/O; only the automatic one probes, asynchronously. Each announcement ("using ollama
llama3.2 at …") is logged once per process (logger `streamchat.providers`), and comes
back with the provider it describes, so concurrent choices never mix them up.

Who probes, and when:
- the server extension: once, at startup, on the server's loop; every session then
  shares the chosen provider (``ProviderChoice.new_provider()`` makes another of the
  same kind and model, unprobed, for callers that want their own);
- the CLI: ``await choose_provider(...)`` before its session, and prints the announcement;
- the notebook's sync calls (`chat()`, `new_session()`, `ChatWidget`): before the
  session is made, on streamchat's private loop (`streamchat._sync`), waiting for the
  answer as every sync call does; `achat()` awaits it on the kernel's loop;
- `ChatSession(provider=None)` (`session_provider`): at creation. With no event loop
  running in the calling thread it waits for the probe, run on the private loop. With
  one running (in a coroutine or a server), it must not block that loop: the session
  gets an `AutoProvider`, whose probe starts at once on the private loop and whose first
  turn waits for the answer before streaming through the chosen provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from .. import _sync
from ..errors import UnknownProviderError
from ..settings import Settings
from .base import ModelRequest, Provider, ProviderDelta
from .demo import DemoProvider
from .local import LocalProvider
from .ollama import DEFAULT_OLLAMA_MODEL, OllamaProvider
from .openai import OpenAIProvider

__all__ = [
    "NO_BACKEND_ANNOUNCEMENT",
    "PROVIDERS",
    "AutoProvider",
    "ProviderChoice",
    "available_providers",
    "choose_provider",
    "named_choice",
    "session_provider",
]

logger = logging.getLogger("streamchat.providers")

NO_BACKEND_ANNOUNCEMENT = "no LLM backend found: using the offline demo model; see README → Backends"
"""What is announced when nothing is configured and Ollama does not answer."""

PROVIDERS: dict[str, Callable[[str | None, Settings], Provider]] = {
    "demo": lambda model, settings: DemoProvider(model),
    "local": lambda model, settings: LocalProvider(model, settings=settings),
    "ollama": lambda model, settings: OllamaProvider(model, settings=settings),
    "openai": lambda model, settings: OpenAIProvider(model, settings=settings),
}
"""Provider factories by name: each takes the model name (or None) and the settings."""

_announced: set[str] = set()
_announced_lock = threading.Lock()  # choices are made on several threads' loops


@dataclass(frozen=True)
class ProviderChoice:
    """A chosen provider and the line announcing it ("using ollama llama3.2 at …").

    Example:
        >>> import asyncio
        >>> asyncio.run(choose_provider("demo")).announcement
        'using the offline demo model (rule-based, not an LLM)'
    """

    provider: Provider
    """The provider chosen."""
    announcement: str
    """What to tell the user about the choice."""
    new_provider: Callable[[], Provider] = field(repr=False, compare=False)
    """Makes another provider of the chosen kind and model, without probing again (one per server session)."""


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


async def choose_provider(
    name: str | None = None, *, model: str | None = None, settings: Settings | None = None
) -> ProviderChoice:
    """The provider named `name` (or `settings.provider`); with neither, the first backend that answers.

    Raises `UnknownProviderError`, listing the providers, for a name it does not know.

    Example:
        >>> import asyncio
        >>> asyncio.run(choose_provider("demo")).provider.describe()
        'the offline demo model (rule-based, not an LLM)'
    """
    settings = settings or Settings()
    model = model or settings.model
    choice = named_choice(name, model, settings) or await _automatic(model, settings)
    return _announce(choice)


def session_provider(name: str | None, *, model: str | None, settings: Settings) -> Provider:
    """The provider of a `ChatSession` made without one; never blocks a running event loop (see the module docs)."""
    model = model or settings.model
    choice = named_choice(name, model, settings)
    if choice is not None:
        return _announce(choice).provider
    if _sync.loop_running():  # a loop must not wait: the first turn will
        return AutoProvider(model, settings=settings)
    return _sync.run_sync(choose_provider(name, model=model, settings=settings)).provider


class AutoProvider(Provider):
    """The automatic choice of a session made while an event loop runs: probed at once, awaited at the first turn.

    The probe runs on streamchat's private loop as soon as the provider is made; `stream`
    waits for its answer (at most the probe timeout), then streams through the provider it
    chose. `describe()` names that provider once it is known.
    """

    name = "auto"

    def __init__(self, model: str | None = None, *, settings: Settings | None = None) -> None:
        super().__init__(model or "")
        self._choice = _sync.submit(choose_provider(model=model, settings=settings or Settings()))

    @property
    def chosen(self) -> ProviderChoice | None:
        """The choice, once the probe has answered (None before, or if choosing failed)."""
        done = self._choice.done() and not self._choice.cancelled() and self._choice.exception() is None
        return self._choice.result() if done else None

    async def choice(self) -> ProviderChoice:
        """The choice, waiting for the probe if it is still out."""
        # shielded: a cancelled turn must not cancel the probe that later turns wait for
        return await asyncio.shield(asyncio.wrap_future(self._choice))

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        """Stream through the chosen provider."""
        provider = (await self.choice()).provider
        async with contextlib.aclosing(provider.stream(request)) as deltas:
            async for delta in deltas:
                yield delta

    async def aclose(self) -> None:
        """Close the chosen provider's connections (or give up a probe still out)."""
        chosen = self.chosen
        if chosen is None:
            self._choice.cancel()
        else:
            await chosen.provider.aclose()

    async def reachable(self, timeout: float) -> bool:
        """Whether the chosen provider's backend answers."""
        return await (await self.choice()).provider.reachable(timeout)

    def describe(self) -> str:
        """The chosen provider's description, or what is being done until it is known."""
        chosen = self.chosen
        return chosen.provider.describe() if chosen is not None else "the automatic choice (probing the backends)"


def named_choice(name: str | None, model: str | None, settings: Settings) -> ProviderChoice | None:
    """The choice `name` (or `settings.provider`) makes, without I/O; None when the choice is automatic.

    Raises `UnknownProviderError`, listing the providers, for a name it does not know.
    """
    chosen = (name or settings.provider or "").strip().lower()
    if chosen in ("", "auto"):
        return None
    factory = PROVIDERS.get(chosen)
    if factory is None:
        raise UnknownProviderError(
            f"unknown provider {chosen!r}: choose one of {', '.join(sorted(PROVIDERS))}; "
            f"{available_providers(settings)}"
        )
    provider = factory(model, settings)
    return ProviderChoice(provider, f"using {provider.describe()}", lambda: factory(model, settings))


async def _automatic(model: str | None, settings: Settings) -> ProviderChoice:
    ollama = OllamaProvider(model, settings=settings)
    installed = await ollama.installed_models(settings.backend_probe_timeout)
    note = ""
    if installed:
        if model is None and ollama.model not in installed and f"{ollama.model}:latest" not in installed:
            ollama.model = installed[0]  # nothing configured: use a model that is there
        found = ollama.model
        return ProviderChoice(ollama, f"using {ollama.describe()}", lambda: OllamaProvider(found, settings=settings))
    if installed is not None:
        note = f" (ollama at {ollama.base_url} has no models: `ollama pull {DEFAULT_OLLAMA_MODEL}`)"
    if settings.openai_base_url or settings.openai_api_key:
        openai = OpenAIProvider(model, settings=settings)
        return ProviderChoice(
            openai, f"using {openai.describe()}{note}", lambda: OpenAIProvider(model, settings=settings)
        )
    if settings.local_model:
        gguf = model if model and model.endswith(".gguf") else None
        local = LocalProvider(gguf, settings=settings)
        return ProviderChoice(local, f"using {local.describe()}{note}", lambda: LocalProvider(gguf, settings=settings))
    return ProviderChoice(DemoProvider(), NO_BACKEND_ANNOUNCEMENT + note, DemoProvider)


def _announce(choice: ProviderChoice) -> ProviderChoice:
    with _announced_lock:
        first_time = choice.announcement not in _announced
        _announced.add(choice.announcement)
    if first_time:
        logger.info(choice.announcement)
    return choice
