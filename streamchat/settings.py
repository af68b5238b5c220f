"""One settings object: keyword arguments, then environment variables, then defaults.

Each field `name` is read from the environment variable `STREAMCHAT_<NAME>`
(`env_prefix`), except the three whose conventional names other tools share:
`OLLAMA_HOST`, `OPENAI_BASE_URL` and `OPENAI_API_KEY`. Field docs are kept at runtime
(`Settings.model_fields[name].description`), so the server extension's traitlets reuse
them as their help.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """streamchat's configuration.

    Each field can be given as a keyword argument or an environment variable
    (`STREAMCHAT_` + its name in capitals; `OLLAMA_HOST`, `OPENAI_BASE_URL`,
    `OPENAI_API_KEY`); keyword arguments win.

    Example:
        >>> Settings(provider="demo").provider
        'demo'
    """

    model_config = SettingsConfigDict(
        env_prefix="STREAMCHAT_", extra="ignore", populate_by_name=True, frozen=True, use_attribute_docstrings=True
    )

    provider: str | None = None
    """Backend name (`ollama`, `openai`, `local`, `demo`); None picks one."""
    model: str | None = None
    """Model name for the backend."""
    ollama_host: str = Field("http://localhost:11434", validation_alias="OLLAMA_HOST")
    """Ollama's base URL."""
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    """Base URL of an OpenAI-compatible API (ending in `/v1`)."""
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    """API key for the OpenAI-compatible API."""
    local_model: str | None = None
    """Path of a GGUF file for the in-process local model."""
    system: str | None = None
    """System prompt."""
    max_turns: int = Field(8, ge=1)
    """Most model calls in one turn (model → tools → model …)."""
    tool_timeout: float = Field(60.0, gt=0)
    """Default seconds a tool call may run (paused time not counted)."""
    tool_threads: int = Field(8, ge=1)
    """Threads that run sync tools, shared by the sessions of a process; further calls wait
    for one, and the wait counts towards their timeout."""
    geocoding_url: str = "https://geocoding-api.open-meteo.com/v1/search"
    """Open-Meteo geocoding endpoint used by `get_weather`."""
    weather_url: str = "https://api.open-meteo.com/v1/forecast"
    """Open-Meteo forecast endpoint used by `get_weather`."""
    http_timeout: float = Field(10.0, gt=0)
    """Connect/read timeout in seconds for HTTP calls made by built-in tools."""
    backend_connect_timeout: float = Field(5.0, gt=0)
    """Seconds to open a connection to an LLM backend."""
    backend_read_timeout: float = Field(300.0, gt=0)
    """Seconds to wait for a backend's response to start (a model may be loading)."""
    backend_stall_timeout: float = Field(60.0, gt=0)
    """Seconds a started stream may go silent before the turn ends with an error."""
    backend_retries: int = Field(2, ge=0)
    """Retries of a failed backend request before its first event."""
    backend_backoff: float = Field(0.5, ge=0)
    """First retry delay in seconds, doubled on each retry, with jitter."""
    backend_max_line_bytes: int = Field(1024 * 1024, ge=1024)
    """Longest line (Ollama) or event (OpenAI-compatible SSE) a backend may send, in bytes; past it the
    turn ends with an error."""
    backend_max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Most bytes one backend response may hold; past it the turn ends with an error."""
    backend_http_transport: str = "auto"
    """The HTTP transport of the Ollama and OpenAI-compatible backends: ``aiohttp`` (faster; the ``aiohttp``
    extra), ``httpx`` (httpx's own), or ``auto``, aiohttp when it is installed."""
    backend_probe_timeout: float = Field(0.5, gt=0)
    """Seconds to wait for Ollama when picking a backend automatically."""
    remote_images: bool = False
    """Let the server's chat page load ``https://`` images from model output (off: no image loads;
    each would load without a click and can leak the conversation in its URL)."""
    store_url: str | None = None
    """The Redis (or Valkey) keeping the server extension's sessions, shared by every server process using it:
    ``redis://host:port/db``, ``rediss://…`` or ``unix://path``; unset: each process's own memory."""
    display: str = "auto"
    """How `chat()` shows a turn: `auto` (a widget in a Jupyter kernel), `widget` or `text`."""
