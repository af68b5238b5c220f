"""Every error streamchat raises: one tree under `StreamChatError`, grouped by who has to act.

- `UsageError` and its subclasses: the caller misused the library (bad configuration,
  an unknown provider, a tool that cannot be described, a busy session). Fix the code or
  the settings.
- `BackendError` and its subclasses: the LLM backend failed at run time (unreachable,
  answered an error, stalled). Usually worth a retry or a look at the server.
- `ToolError`: raised by a tool's author to report a failure the model should see as a
  clean message instead of a traceback.
- The session store's errors (`SessionExistsError`, `ReplayGapError`, `StoreUnavailableError`) and the server
  API's errors (`ApiError` and its subclasses: a request the server refuses).

Every error has a stable `code` (used in `error` events and in the server's JSON errors),
the HTTP `status` the server answers it with, and says whether retrying can help
(`retryable`). They are class attributes, given as class keywords
(``class SessionBusyError(UsageError, code="session_busy", status=409)``); `code` and
`retryable` may be set per instance (``BadRequestError(..., code="bad_message")``).
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BackendError",
    "BackendResponseError",
    "BackendStreamError",
    "BackendTimeoutError",
    "BackendUnreachableError",
    "BadRequestError",
    "ClientMessageError",
    "ConfigurationError",
    "LimitExceededError",
    "MessageTooLargeError",
    "ReplayGapError",
    "SessionBusyError",
    "SessionExistsError",
    "SessionNotFoundError",
    "StoreUnavailableError",
    "StreamChatError",
    "TooManyInFlightError",
    "TooManySessionsError",
    "TooManyTurnsError",
    "ToolDefinitionError",
    "ToolError",
    "UnknownProviderError",
    "UsageError",
]


class StreamChatError(Exception):
    """Base class of every error streamchat raises; code ``streamchat_error``, HTTP 500."""

    code: str = "streamchat_error"
    """A stable identifier of the kind of error (an instance may carry a narrower one)."""
    status: int = 500
    """The HTTP status the server answers this error with."""
    retryable: bool = False
    """Whether trying again, unchanged, can succeed."""

    def __init_subclass__(
        cls, *, code: str | None = None, status: int | None = None, retryable: bool | None = None
    ) -> None:
        """Set a subclass's `code`, `status` and `retryable` from its class keywords; unset ones are inherited."""
        super().__init_subclass__()
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status
        if retryable is not None:
            cls.retryable = retryable

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


# -- misuse ---------------------------------------------------------------------------------


class UsageError(StreamChatError, code="usage_error", status=400):
    """The library was called or configured wrongly; code ``usage_error``, HTTP 400."""


class ConfigurationError(UsageError, code="configuration_error"):
    """A setting is missing or invalid; code ``configuration_error``, HTTP 400."""


class UnknownProviderError(ConfigurationError, code="unknown_provider"):
    """A provider name that streamchat does not know; code ``unknown_provider``, HTTP 400."""


class ToolDefinitionError(UsageError, code="tool_definition_error"):
    """A function cannot be turned into a tool (e.g. a parameter without a usable type).

    Code ``tool_definition_error``, HTTP 400.
    """


class SessionBusyError(UsageError, code="session_busy", status=409):
    """A second message was sent to a session while a turn was still running.

    Code ``session_busy``, HTTP 409.
    """


# -- backend failures -----------------------------------------------------------------------


class BackendError(StreamChatError, code="backend_error", status=502):
    """The LLM backend failed while answering; code ``backend_error``, HTTP 502."""


class BackendUnreachableError(BackendError, code="backend_unreachable", retryable=True):
    """The backend could not be reached (connection refused, DNS, TLS…).

    Code ``backend_unreachable``, HTTP 502; retryable.
    """


class BackendResponseError(BackendError, code="backend_response_error"):
    """The backend answered with an HTTP error status (`status_code`).

    Code ``backend_response_error`` (or a narrower one such as ``http_500``), HTTP 502.
    """

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


class BackendTimeoutError(BackendError, code="backend_timeout", status=504, retryable=True):
    """The backend did not answer, or stopped sending, within the configured time.

    Code ``backend_timeout``, HTTP 504; retryable.
    """


class BackendStreamError(BackendError, code="backend_stream_error"):
    """The backend's stream broke or reported an error after it had started.

    Code ``backend_stream_error``, HTTP 502.
    """


# -- tools ----------------------------------------------------------------------------------


class ToolError(StreamChatError, code="tool_error"):
    """Raise from a tool to fail it with a clean message the model (and user) will see.

    Code ``tool_error``, HTTP 500 (it becomes a `tool_result`, never an HTTP answer).

    Example:
        >>> from streamchat import ToolError
        >>> def lookup(key: str) -> str:
        ...     raise ToolError(f"no entry named {key!r}")
    """


# -- session store --------------------------------------------------------------------------


class SessionExistsError(StreamChatError, code="session_exists", status=409):
    """A store was asked to create a session whose id is already taken.

    Code ``session_exists``, HTTP 409.
    """


class ReplayGapError(StreamChatError, code="replay_gap", status=410):
    """The events after the requested one are no longer in the replay buffer.

    Code ``replay_gap``, HTTP 410 (the client cannot resume: it should start a new turn).
    """


class StoreUnavailableError(StreamChatError, code="store_unavailable", status=503, retryable=True):
    """The session store (Redis) cannot be reached or did not answer in time.

    Code ``store_unavailable``, HTTP 503; retryable (the store's client reconnects by itself).
    """


# -- server API -----------------------------------------------------------------------------


class ApiError(StreamChatError, code="api_error", status=400):
    """A request the server extension refuses; code ``api_error``, HTTP 400."""


class BadRequestError(ApiError, code="bad_request"):
    """The request is malformed (bad JSON, missing or empty message, bad session id…).

    Code ``bad_request`` (or a narrower one such as ``bad_message``), HTTP 400.
    """


class ClientMessageError(BadRequestError, ValueError):
    """A request body or WebSocket message that is not JSON, or not one the server knows.

    Code ``bad_request``, ``invalid_json``, ``bad_message`` or ``unknown_message``, HTTP
    400; over a WebSocket it is answered with an ``error`` message instead.
    """


class SessionNotFoundError(ApiError, code="session_not_found", status=404):
    """No such session for this user (it never existed, expired, or belongs to someone else).

    Code ``session_not_found``, HTTP 404.
    """


class MessageTooLargeError(ApiError, code="message_too_large", status=413):
    """The message (or the request body) is over the configured size limit.

    Code ``message_too_large``, HTTP 413.
    """


class LimitExceededError(ApiError, code="limit_exceeded", status=429):
    """A server limit refuses the request until something finishes; code ``limit_exceeded``, HTTP 429.

    The message says which limit and what to do (wait, cancel a turn, delete a session).
    """


class TooManySessionsError(LimitExceededError, code="too_many_sessions"):
    """The user, or the server in all, has the most sessions allowed; code ``too_many_sessions``, HTTP 429."""


class TooManyTurnsError(LimitExceededError, code="too_many_turns", retryable=True):
    """The user, or the server in all, has the most turns running at once; code ``too_many_turns``, HTTP 429."""


class TooManyInFlightError(LimitExceededError, code="too_many_in_flight", retryable=True):
    """A WebSocket sent more messages than the server handles at once; code ``too_many_in_flight``, HTTP 429."""
