"""The errors streamchat raises, grouped by who has to act on them.

- `UsageError` and its subclasses: the caller misused the library (bad configuration,
  an unknown provider, a tool that cannot be described). Fix the code or the settings.
- `BackendError` and its subclasses: the LLM backend failed at run time (unreachable,
  answered an error, stalled). Usually worth a retry or a look at the server.
- `ToolError`: raised by a tool's author to report a failure the model should see as a
  clean message instead of a traceback.

Every error has a stable `code` (used in `error` events and in the server's JSON
errors) and says whether retrying can help (`retryable`).
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendResponseError",
    "BackendStreamError",
    "BackendTimeoutError",
    "BackendUnreachableError",
    "ConfigurationError",
    "SessionBusyError",
    "StreamChatError",
    "ToolDefinitionError",
    "ToolError",
    "UnknownProviderError",
    "UsageError",
]


class StreamChatError(Exception):
    """Base class of every error streamchat raises."""

    code: str = "streamchat_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class UsageError(StreamChatError):
    """The library was called or configured wrongly; the message says how to fix it."""

    code = "usage_error"


class ConfigurationError(UsageError):
    """A setting is missing or invalid."""

    code = "configuration_error"


class UnknownProviderError(ConfigurationError):
    """A provider name that streamchat does not know."""

    code = "unknown_provider"


class ToolDefinitionError(UsageError):
    """A function cannot be turned into a tool (e.g. a parameter without a usable type)."""

    code = "tool_definition_error"


class SessionBusyError(UsageError):
    """A second message was sent to a session while a turn was still running."""

    code = "session_busy"


class BackendError(StreamChatError):
    """The LLM backend failed while answering."""

    code = "backend_error"


class BackendUnreachableError(BackendError):
    """The backend could not be reached (connection refused, DNS, TLS…)."""

    code = "backend_unreachable"
    retryable = True


class BackendResponseError(BackendError):
    """The backend answered with an HTTP error status."""

    code = "backend_response_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, code=code, retryable=retryable)
        self.status_code = status_code


class BackendTimeoutError(BackendError):
    """The backend did not answer, or stopped sending, within the configured time."""

    code = "backend_timeout"
    retryable = True


class BackendStreamError(BackendError):
    """The backend's stream broke or reported an error after it had started."""

    code = "backend_stream_error"


class ToolError(StreamChatError):
    """Raise from a tool to fail it with a clean message the model (and user) will see.

    Example:
        >>> from streamchat import ToolError
        >>> def lookup(key: str) -> str:
        ...     raise ToolError(f"no entry named {key!r}")
    """

    code = "tool_error"
