"""One settings object: keyword arguments, then environment variables, then defaults."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


def _env(name: str, *env: str) -> AliasChoices:
    return AliasChoices(name, *env)


class Settings(BaseSettings):
    """streamchat's configuration.

    Each field can be given as a keyword argument or an environment variable (named in
    the field's docs); keyword arguments win.

    Example:
        >>> Settings(provider="demo").provider
        'demo'
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    provider: str | None = Field(None, validation_alias=_env("provider", "STREAMCHAT_PROVIDER"))
    """Backend name (`ollama`, `openai`, `local`, `demo`); `STREAMCHAT_PROVIDER`. None picks one."""
    model: str | None = Field(None, validation_alias=_env("model", "STREAMCHAT_MODEL"))
    """Model name for the backend; `STREAMCHAT_MODEL`."""
    ollama_host: str = Field("http://localhost:11434", validation_alias=_env("ollama_host", "OLLAMA_HOST"))
    """Ollama's base URL; `OLLAMA_HOST`."""
    openai_base_url: str | None = Field(None, validation_alias=_env("openai_base_url", "OPENAI_BASE_URL"))
    """Base URL of an OpenAI-compatible API (ending in `/v1`); `OPENAI_BASE_URL`."""
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("openai_api_key", "OPENAI_API_KEY"))
    """API key for the OpenAI-compatible API; `OPENAI_API_KEY`."""
    local_model: str | None = Field(None, validation_alias=_env("local_model", "STREAMCHAT_LOCAL_MODEL"))
    """Path of a GGUF file for the in-process local model; `STREAMCHAT_LOCAL_MODEL`."""
    system: str | None = Field(None, validation_alias=_env("system", "STREAMCHAT_SYSTEM"))
    """System prompt; `STREAMCHAT_SYSTEM`."""
    max_turns: int = Field(8, ge=1, validation_alias=_env("max_turns", "STREAMCHAT_MAX_TURNS"))
    """Most model calls in one turn (model → tools → model …); `STREAMCHAT_MAX_TURNS`."""
    tool_timeout: float = Field(60.0, gt=0, validation_alias=_env("tool_timeout", "STREAMCHAT_TOOL_TIMEOUT"))
    """Default seconds a tool call may run (paused time not counted); `STREAMCHAT_TOOL_TIMEOUT`."""
    geocoding_url: str = Field(
        "https://geocoding-api.open-meteo.com/v1/search",
        validation_alias=_env("geocoding_url", "STREAMCHAT_GEOCODING_URL"),
    )
    """Open-Meteo geocoding endpoint used by `get_weather`; `STREAMCHAT_GEOCODING_URL`."""
    weather_url: str = Field(
        "https://api.open-meteo.com/v1/forecast", validation_alias=_env("weather_url", "STREAMCHAT_WEATHER_URL")
    )
    """Open-Meteo forecast endpoint used by `get_weather`; `STREAMCHAT_WEATHER_URL`."""
    http_timeout: float = Field(10.0, gt=0, validation_alias=_env("http_timeout", "STREAMCHAT_HTTP_TIMEOUT"))
    """Connect/read timeout in seconds for HTTP calls made by built-in tools; `STREAMCHAT_HTTP_TIMEOUT`."""
    backend_connect_timeout: float = Field(
        5.0, gt=0, validation_alias=_env("backend_connect_timeout", "STREAMCHAT_BACKEND_CONNECT_TIMEOUT")
    )
    """Seconds to open a connection to an LLM backend; `STREAMCHAT_BACKEND_CONNECT_TIMEOUT`."""
    backend_read_timeout: float = Field(
        300.0, gt=0, validation_alias=_env("backend_read_timeout", "STREAMCHAT_BACKEND_READ_TIMEOUT")
    )
    """Seconds to wait for a backend's response to start (a model may be loading); `STREAMCHAT_BACKEND_READ_TIMEOUT`."""
    backend_stall_timeout: float = Field(
        60.0, gt=0, validation_alias=_env("backend_stall_timeout", "STREAMCHAT_BACKEND_STALL_TIMEOUT")
    )
    """Seconds a started stream may go silent before the turn ends with an error; `STREAMCHAT_BACKEND_STALL_TIMEOUT`."""
    backend_retries: int = Field(2, ge=0, validation_alias=_env("backend_retries", "STREAMCHAT_BACKEND_RETRIES"))
    """Retries of a failed backend request before its first event; `STREAMCHAT_BACKEND_RETRIES`."""
    backend_backoff: float = Field(0.5, ge=0, validation_alias=_env("backend_backoff", "STREAMCHAT_BACKEND_BACKOFF"))
    """First retry delay in seconds, doubled on each retry, with jitter; `STREAMCHAT_BACKEND_BACKOFF`."""
    backend_max_line_bytes: int = Field(
        1024 * 1024, ge=1024, validation_alias=_env("backend_max_line_bytes", "STREAMCHAT_BACKEND_MAX_LINE_BYTES")
    )
    """Longest line (Ollama) or event (OpenAI-compatible SSE) a backend may send, in bytes; past it the
    turn ends with an error; `STREAMCHAT_BACKEND_MAX_LINE_BYTES`."""
    backend_max_response_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        validation_alias=_env("backend_max_response_bytes", "STREAMCHAT_BACKEND_MAX_RESPONSE_BYTES"),
    )
    """Most bytes one backend response may hold; past it the turn ends with an error;
    `STREAMCHAT_BACKEND_MAX_RESPONSE_BYTES`."""
    backend_probe_timeout: float = Field(
        0.5, gt=0, validation_alias=_env("backend_probe_timeout", "STREAMCHAT_BACKEND_PROBE_TIMEOUT")
    )
    """Seconds to wait for Ollama when picking a backend automatically; `STREAMCHAT_BACKEND_PROBE_TIMEOUT`."""
    display: str = Field("auto", validation_alias=_env("display", "STREAMCHAT_DISPLAY"))
    """How `chat()` shows a turn: `auto` (a widget in a Jupyter kernel), `widget` or `text`; `STREAMCHAT_DISPLAY`."""
