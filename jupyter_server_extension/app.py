"""`StreamChat`: the Jupyter Server extension app; its traitlets are made from streamchat's `Settings`.

Configure it like any Jupyter app, e.g. in ``jupyter_server_config.py``::

    c.StreamChat.provider = "ollama"
    c.StreamChat.model = "llama3.2"
    c.StreamChat.tools = ["streamchat.tools.builtin:get_weather", "mytools:search"]
    c.StreamChat.mcp_servers = {"time": {"command": "uvx", "args": ["mcp-server-time"]}}

Unset settings (None) fall back to streamchat's environment variables and defaults.
``service_class`` and ``store_class`` swap the session manager and its store for
subclasses of `ChatService` and `SessionStore`; the handlers use whatever service the
app puts in the Tornado settings. ``store_url`` (or ``STREAMCHAT_STORE_URL``) puts the
sessions in Redis instead (`streamchat.redis_store.RedisStore`), so several server
processes share them; a Redis that does not answer at startup stops the extension.

A named provider is made at startup; with none, the backends are probed once, on the
server's loop as soon as it runs, and every session gets a provider of the chosen kind
(`streamchat.providers.choice`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import typing
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from pydantic import SecretStr
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Dict, Float, Int, List, TraitType, Type, Unicode

from streamchat._sync import loop_running
from streamchat.errors import ConfigurationError, StoreUnavailableError, StreamChatError
from streamchat.providers import ProviderChoice, choose_provider, named_choice
from streamchat.settings import Settings
from streamchat.stores import MemoryStore, SessionStore
from streamchat.tools.builtin import BUILTIN_TOOLS
from streamchat.tools.definition import Tool, tool
from streamchat.tools.mcp import MCPToolset, mcp_servers

from . import dashboard, handlers
from .gc_tuning import tune_gc
from .service import SERVICE_SETTING, ChatService, Limits

__all__ = ["StreamChat", "load_mcp_servers", "load_object", "load_tools"]

SERVER_SETTINGS = tuple(name for name in Settings.model_fields if name != "display")
"""The `Settings` fields the extension mirrors as traitlets (`display` is the notebook's alone)."""

BUILTIN_TOOL_PATHS = [f"{t.function.__module__}:{t.function.__qualname__}" for t in BUILTIN_TOOLS]
"""`StreamChat.tools`' default: the built-in tools, as import paths."""

_TRAIT_TYPES: dict[type, type[TraitType[Any, Any]]] = {
    str: Unicode,
    SecretStr: Unicode,
    bool: Bool,
    int: Int,
    float: Float,
}


def _settings_traits() -> dict[str, TraitType[Any, Any]]:
    """One configurable trait per server setting: the field's type, its doc as help, None meaning unset."""
    traits = {}
    for name in SERVER_SETTINGS:
        field = Settings.model_fields[name]
        kinds = [kind for kind in typing.get_args(field.annotation) or (field.annotation,) if kind is not type(None)]
        if len(kinds) != 1 or kinds[0] not in _TRAIT_TYPES:
            raise TypeError(f"Settings.{name}: no traitlets type for {field.annotation!r}")
        traits[name] = _TRAIT_TYPES[kinds[0]](None, allow_none=True, help=field.description).tag(config=True)
    return traits


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


def load_mcp_servers(config: dict[str, Any]) -> list[MCPToolset]:
    """The toolsets of `StreamChat.mcp_servers`; a `ConfigurationError` names what is wrong."""
    if not config:
        return []
    try:
        return mcp_servers(config)
    except ConfigurationError as exc:
        raise ConfigurationError(f"StreamChat.mcp_servers: {exc.message}") from exc


class StreamChat(ExtensionApp):
    """Serves streamchat over REST, SSE and WebSocket, plus a chat page at ``streamchat/``."""

    name = "streamchat"
    extension_url = "/streamchat/"
    load_other_extensions = True

    # The settings' traits are made from the `Settings` fields, so a setting is written once.
    # A class body's namespace is a plain dict that `locals()` returns (PEP 667 specifies it).
    locals().update(_settings_traits())
    tools = List(
        Unicode(), default_value=BUILTIN_TOOL_PATHS, help="Tools the model may call, as 'module:function' paths."
    ).tag(config=True)
    mcp_servers = Dict(
        help='MCP servers whose tools the model may call, in the usual "mcpServers" JSON shape: '
        '{"name": {"command": "uvx", "args": ["some-server"], "env": {}}} (stdio) or '
        '{"name": {"url": "https://host/mcp", "headers": {}}} (streamable HTTP). Each starts when a turn '
        "first needs it, is shared by every session, and stops with the server.",
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
    store_prefix = Unicode(
        "streamchat:", help="The start of every key the Redis store writes, so several deployments share one Redis."
    ).tag(config=True)
    turn_lease = Float(
        5.0,
        min=0.1,
        help="Seconds a running turn's lease lasts in the store unless renewed (every third of it): when the process "
        "running a turn dies, the session is usable again and the turn's followers get an error after about this long.",
    ).tag(config=True)
    gc_tuning = Bool(
        True,
        help="Tune the server process's garbage collector for many streams once the server has started: freeze the "
        "objects alive then (gc.freeze) and raise the young generation's threshold, so that full collections do not "
        "pause every stream for a large part of a second (see jupyter_server_extension/gc_tuning.py).",
    ).tag(config=True)
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
        help="The SessionStore class keeping sessions when store_url is empty; made with replay_size, idle_timeout and "
        "turn_lease (the traits replay_buffer_size, idle_timeout, turn_lease).",
    )

    def _make_store(self, store_url: str | None) -> SessionStore:
        """The configured store: Redis at `store_url` (checked now: it must answer), else a `store_class`."""
        replay_size, idle_timeout, turn_lease = self.replay_buffer_size, self.idle_timeout, self.turn_lease
        if not store_url:
            # The trait holds a concrete subclass; mypy types it as the abstract klass (python/mypy#4717).
            return self.store_class(  # type: ignore[abstract]
                replay_size=replay_size, idle_timeout=idle_timeout, turn_lease=turn_lease
            )
        try:
            from streamchat.redis_store import RedisStore, check_reachable
        except ImportError as exc:
            raise ConfigurationError(
                f"StreamChat.store_url is set but the Redis client is not installed ({exc}): "
                "pip install 'streamchat[redis]'"
            ) from exc
        check_reachable(store_url)
        return RedisStore.from_url(
            store_url,
            prefix=self.store_prefix,
            replay_size=replay_size,
            idle_timeout=idle_timeout,
            turn_lease=turn_lease,
        )

    def _settings(self) -> Settings:
        given = {name: getattr(self, name) for name in SERVER_SETTINGS if getattr(self, name) is not None}
        try:
            return Settings(**given)
        except ValueError as exc:
            raise ConfigurationError(f"StreamChat: invalid setting: {exc}") from exc

    def _named_choice(self, settings: Settings) -> ProviderChoice | None:
        """The backend `provider_factory` or a provider name makes (no I/O); None for the automatic choice."""
        if not self.provider_factory:
            return named_choice(None, settings.model, settings)
        factory = load_object(self.provider_factory, setting="provider_factory")
        provider = factory(settings)
        return ProviderChoice(provider, f"using {provider.describe()}", lambda: factory(settings))

    def initialize_settings(self) -> None:
        """Check the configuration and build the chat service; a bad setting is logged by name."""
        try:
            settings = self._settings()
            tools = load_tools(list(self.tools))
            self._toolsets = load_mcp_servers(self.mcp_servers)
            self._choice = self._named_choice(settings)
            store = self._make_store(settings.store_url)
        except StreamChatError as exc:
            # one line says what to fix; the extension then serves nothing (no handlers, no tasks)
            log = self.serverapp.log if self.serverapp is not None else self.log
            log.error("streamchat: the extension cannot start: %s", exc.message)
            self._refused = True
            return
        self._probe: asyncio.Task[ProviderChoice] | None = None
        limits = Limits(**{field.name: getattr(self, field.name) for field in dataclasses.fields(Limits)})
        self.service: ChatService = self.service_class(
            store, provider_choice=self.provider_choice, tools=tools, settings=settings, limits=limits
        )
        if self._toolsets:  # only then: a `service_class` made before MCP support need not take them
            self.service.toolsets = list(self._toolsets)
        self.service.log = self.serverapp.log if self.serverapp is not None else self.log
        self.settings[SERVICE_SETTING] = self.service
        sweep_ms = max(1000.0, min(60_000.0, self.idle_timeout * 1000 / 4))
        self._expiry = PeriodicCallback(self._expire_idle, sweep_ms)
        self._expiry.start()
        backend = "the automatic choice" if self._choice is None else self._choice.provider.describe()
        self.log.info(
            "streamchat: serving %s with tools %s and MCP servers %s",
            backend,
            [t.name for t in tools],
            [t.name for t in self._toolsets],
        )
        if self._choice is None and loop_running():
            self._start_probe()  # else `_start_jupyter_server_extension` starts it, once the loop runs

    _refused = False
    """Whether the configuration was refused at startup: the extension then serves nothing."""

    async def _expire_idle(self) -> None:
        """The periodic idle sweep; a store that is down is logged, and swept next time."""
        try:
            await self.service.expire_idle()
        except StoreUnavailableError as exc:
            self.service.log.warning("streamchat: idle sweep skipped: %s: %s", exc.message, exc.__cause__)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Probe the backends for the automatic choice as soon as the server's loop runs; tune the collector."""
        if self._refused:
            return
        if self._choice is None:
            self._start_probe()
        if self.gc_tuning:
            self.log.info("streamchat: garbage collector tuned for streaming: thresholds %s", tune_gc())

    def _start_probe(self) -> asyncio.Task[ProviderChoice]:
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._choose(), name="streamchat backend probe")
        return self._probe

    async def _choose(self) -> ProviderChoice:
        """The automatic choice, logged (a failure too: the turns that wait for it will report it)."""
        try:
            choice = await choose_provider(settings=self.service.settings)
        except StreamChatError as exc:
            self.log.error("streamchat: no backend could be chosen: %s", exc.message)
            raise
        self.log.info("streamchat: %s", choice.announcement)
        return choice

    async def provider_choice(self) -> ProviderChoice:
        """The backend: named by the configuration, or chosen by one probe at startup."""
        if self._choice is None:
            # shielded: a request that goes away must not cancel the probe the others wait for
            self._choice = await asyncio.shield(self._start_probe())
        return self._choice

    def initialize_handlers(self) -> None:
        """Register the REST, SSE and WebSocket routes under the server's base URL (none if the configuration was refused)."""
        if not self._refused:
            self.handlers.extend(handlers.routes())
            self.handlers.extend(dashboard.routes())

    async def stop_extension(self) -> None:
        """Cancel running turns and close connections when the server stops."""
        if not hasattr(self, "service"):
            return  # the configuration was refused at startup
        self._expiry.stop()
        await self.service.aclose()
        if self._probe is not None:
            self._probe.cancel()
        if self._choice is not None:
            await self._choice.provider.aclose()
        for toolset in self._toolsets:
            await toolset.aclose()
