"""streamchat: stream LLM chat into Jupyter, with live progress for every tool call.

Example:
    >>> import asyncio
    >>> from streamchat import ChatSession
    >>> session = ChatSession(provider="demo")
    >>> result = asyncio.run(session.send("What is 12 * (3 + 4)?"))
"""

from ._version import __version__
from .errors import (
    BackendError,
    BackendResponseError,
    BackendStreamError,
    BackendTimeoutError,
    BackendUnreachableError,
    ConfigurationError,
    SessionBusyError,
    StreamChatError,
    ToolDefinitionError,
    ToolError,
    UnknownProviderError,
    UsageError,
)
from .events import (
    DoneEvent,
    ErrorEvent,
    Event,
    Metrics,
    ThinkingEvent,
    TokenEvent,
    ToolCallEvent,
    ToolProgressEvent,
    ToolResultEvent,
    ToolTiming,
    Usage,
    parse_event,
)
from .messages import Message, ToolCallRecord
from .providers import (
    DemoProvider,
    LocalProvider,
    ModelRequest,
    OllamaProvider,
    OpenAIProvider,
    Provider,
    ScriptedProvider,
    ToolCall,
    ToolDefinition,
    get_provider,
)
from .result import ChatResult, ToolCallSummary
from .session import ChatSession
from .settings import Settings
from .tools import Progress, ProgressReporter, Tool, calculate, get_current_time, get_weather, tool

__all__ = [
    "BackendError",
    "BackendResponseError",
    "BackendStreamError",
    "BackendTimeoutError",
    "BackendUnreachableError",
    "ChatResult",
    "ChatSession",
    "ConfigurationError",
    "DemoProvider",
    "DoneEvent",
    "ErrorEvent",
    "Event",
    "LocalProvider",
    "Message",
    "Metrics",
    "ModelRequest",
    "OllamaProvider",
    "OpenAIProvider",
    "Progress",
    "ProgressReporter",
    "Provider",
    "ScriptedProvider",
    "SessionBusyError",
    "Settings",
    "StreamChatError",
    "ThinkingEvent",
    "TokenEvent",
    "Tool",
    "ToolCall",
    "ToolCallEvent",
    "ToolCallRecord",
    "ToolCallSummary",
    "ToolDefinition",
    "ToolDefinitionError",
    "ToolError",
    "ToolProgressEvent",
    "ToolResultEvent",
    "ToolTiming",
    "UnknownProviderError",
    "Usage",
    "UsageError",
    "__version__",
    "calculate",
    "get_current_time",
    "get_provider",
    "get_weather",
    "parse_event",
    "tool",
]
