"""`StreamChat`: the Jupyter Server extension app; its traitlets mirror streamchat's settings.

Configure it like any Jupyter app, e.g. in ``jupyter_server_config.py``::

    c.StreamChat.provider = "ollama"
    c.StreamChat.model = "llama3.2"
    c.StreamChat.tools = ["streamchat.tools.builtin:get_weather", "mytools:search"]

Unset settings (None) fall back to streamchat's environment variables and defaults.
``service_class`` and ``store_class`` swap the session manager and its store for
subclasses of `ChatService` and `SessionStore`; the handlers use whatever service the
app puts in the Tornado settings.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Int, List, Type, Unicode

from streamchat.errors import ConfigurationError, StreamChatError
from streamchat.providers import get_provider
from streamchat.providers.base import Provider
from streamchat.settings import Settings
from streamchat.stores import MemoryStore, SessionStore
from streamchat.tools.definition import Tool, tool

from . import handlers
from .service import SERVICE_SETTING, ChatService, Limits

__all__ = ["StreamChat", "load_object", "load_tools"]

BUILTIN_TOOL_PATHS = [
    "streamchat.tools.builtin:get_weather",
    "streamchat.tools.builtin:calculate",
    "streamchat.tools.builtin:get_current_time",
]
SETTINGS_TRAITS = ("provider", "model", "ollama_host", "openai_base_url", "openai_api_key", "local_model", "system")


def load_object(path: str, *, setting: str) -> Any:
    """Import the object named by ``module:attribute``; a `ConfigurationError` names what failed."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"StreamChat.{setting}: {path!r} is not of the form 'module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"StreamChat.{setting}: cannot import module {module_name!r} for {path!r}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigurationError(
                f"StreamChat.{setting}: module {module_name!r} has no {attribute!r} ({path!r})"
            ) from exc
    return obj


def load_tools(paths: list[str]) -> list[Tool]:
    """The tools named by import paths; a `ConfigurationError` names the first that fails."""
    loaded = []
    for path in paths:
        obj = load_object(path, setting="tools")
        if not callable(obj):
            raise ConfigurationError(f"StreamChat.tools: {path!r} is not a function")
        try:
            loaded.append(tool(obj))
        except StreamChatError as exc:
            raise ConfigurationError(f"StreamChat.tools: {path!r}: {exc.message}") from exc
    return loaded


class StreamChat(ExtensionApp):
    """Serves streamchat over REST, SSE and WebSocket, plus a chat page at ``streamchat/``."""

    name = "streamchat"
    extension_url = "/streamchat/"
    load_other_extensions = True

    provider = Unicode(None, allow_none=True, help="Backend name (ollama, openai, local, demo); None picks one.").tag(
        config=True
    )
    model = Unicode(None, allow_none=True, help="Model name for the backend.").tag(config=True)
    ollama_host = Unicode(None, allow_none=True, help="Ollama's base URL.").tag(config=True)
    openai_base_url = Unicode(None, allow_none=True, help="Base URL of an OpenAI-compatible API (ending in /v1).").tag(
        config=True
    )
    openai_api_key = Unicode(None, allow_none=True, help="API key for the OpenAI-compatible API.").tag(config=True)
    local_model = Unicode(None, allow_none=True, help="Path of a GGUF file for the local model.").tag(config=True)
    system = Unicode(None, allow_none=True, help="System prompt.").tag(config=True)
    max_turns = Int(None, allow_none=True, help="Most model calls in one turn.").tag(config=True)
    tool_timeout = Float(None, allow_none=True, help="Default seconds a tool call may run.").tag(config=True)
    tools = List(
        Unicode(), default_value=BUILTIN_TOOL_PATHS, help="Tools the model may call, as 'module:function' paths."
    ).tag(config=True)
    provider_factory = Unicode(
        "",
        help="Import path 'module:callable' of a function taking the Settings and returning a Provider; "
        "called once, its provider shared by every session. Overrides provider and model "
        "(used by tests and custom backends).",
    ).tag(config=True)
    idle_timeout = Float(3600.0, help="Seconds of inactivity after which a session is deleted.").tag(config=True)
    max_message_size = Int(64 * 1024, min=1, help="Largest user message, in UTF-8 bytes (larger: 413).").tag(
        config=True
    )
    max_sessions = Int(1000, min=1, help="Most sessions the server keeps, every user's together (more: 429).").tag(
        config=True
    )
    max_sessions_per_user = Int(100, min=1, help="Most sessions one user may have at a time (more: 429).").tag(
        config=True
    )
    max_running_turns = Int(32, min=1, help="Most turns running at once in this server (more: 429).").tag(config=True)
    max_running_turns_per_user = Int(8, min=1, help="Most turns one user may have running at once (more: 429).").tag(
        config=True
    )
    max_history_messages = Int(
        200,
        min=2,
        help="Most messages a session keeps; the oldest go first (a kept history starts with a user message).",
    ).tag(config=True)
    max_messages_in_flight = Int(
        16,
        min=1,
        help="Most messages of one WebSocket handled at once; more get an error message (code too_many_in_flight).",
    ).tag(config=True)
    max_buffered_bytes = Int(
        1024 * 1024,
        min=1024,
        help="Most bytes waiting for one client (unsent events and unsent socket bytes); past it the client is "
        "dropped and its turns go on for the others.",
    ).tag(config=True)
    heartbeat_interval = Float(15.0, help="Seconds between SSE ': ping' comments (0 disables them).").tag(config=True)
    disconnect_grace = Float(
        0.5, help="Seconds a turn survives without any client before it is cancelled (a resume within it continues)."
    ).tag(config=True)
    replay_buffer_size = Int(2000, help="Events of the latest turn each session keeps for SSE resume.").tag(config=True)
    service_class = Type(
        klass=ChatService,
        default_value=ChatService,
        config=True,
        help="The ChatService (sub)class holding the sessions; the handlers use only its instance.",
    )
    store_class = Type(
        klass=SessionStore,
        default_value=MemoryStore,
        config=True,
        help="The SessionStore class keeping sessions; made with replay_size=replay_buffer_size.",
    )

    def _settings(self) -> Settings:
        given: dict[str, Any] = {
            name: getattr(self, name) for name in SETTINGS_TRAITS if getattr(self, name) is not None
        }
        for name in ("max_turns", "tool_timeout"):
            if getattr(self, name) is not None:
                given[name] = getattr(self, name)
        try:
            return Settings(**given)
        except ValueError as exc:
            raise ConfigurationError(f"StreamChat: invalid setting: {exc}") from exc

    def _make_provider(self, settings: Settings) -> Provider:
        """The one provider every session shares: one connection pool, or one loaded local model."""
        if self.provider_factory:
            factory = load_object(self.provider_factory, setting="provider_factory")
            provider = factory(settings)
            if not isinstance(provider, Provider):
                raise ConfigurationError(
                    f"StreamChat.provider_factory: {self.provider_factory!r} returned {provider!r}, not a Provider"
                )
            return provider
        return get_provider(self.provider, model=self.model, settings=settings)

    def initialize_settings(self) -> None:
        """Check the configuration and build the chat service; a bad setting is logged by name."""
        try:
            settings = self._settings()
            tools = load_tools(list(self.tools))
            provider = self._make_provider(settings)
        except StreamChatError as exc:
            log = self.serverapp.log if self.serverapp is not None else self.log
            log.error("streamchat: the extension cannot start: %s", exc.message)
            raise
        limits = Limits(**{field.name: getattr(self, field.name) for field in dataclasses.fields(Limits)})
        # The trait holds a concrete subclass; mypy types it as the abstract klass (python/mypy#4717).
        store = self.store_class(replay_size=self.replay_buffer_size)  # type: ignore[abstract]
        self.service: ChatService = self.service_class(
            store,
            provider=provider,
            tools=tools,
            settings=settings,
            limits=limits,
        )
        self.settings[SERVICE_SETTING] = self.service
        sweep_ms = max(1000.0, min(60_000.0, self.idle_timeout * 1000 / 4))
        self._expiry = PeriodicCallback(self.service.expire_idle, sweep_ms)
        self._expiry.start()
        self.log.info("streamchat: serving %s with tools %s", provider.describe(), [t.name for t in tools])

    def initialize_handlers(self) -> None:
        """Register the routes of DESIGN §3 under the server's base URL."""
        self.handlers.extend(handlers.routes())

    async def stop_extension(self) -> None:
        """Cancel running turns and close connections when the server stops."""
        if not hasattr(self, "service"):
            return  # the configuration was refused at startup
        self._expiry.stop()
        await self.service.aclose()
