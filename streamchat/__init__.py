"""streamchat: stream LLM chat into Jupyter, with live progress for every tool call.

Example:
    >>> import asyncio
    >>> from streamchat import ChatSession
    >>> session = ChatSession(provider="demo")
    >>> result = asyncio.run(session.send("What is 12 * (3 + 4)?"))
"""

from typing import TYPE_CHECKING

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
    ToolsetUnavailableError,
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
    ProviderChoice,
    ScriptedProvider,
    ToolCall,
    ToolDefinition,
    choose_provider,
)
from .result import ChatResult, ToolCallSummary
from .session import ChatOptions, ChatSession, SessionKeywords, SessionOptions, ToolAction
from .settings import Settings
from .tools import (
    MCPToolset,
    Progress,
    ProgressReporter,
    Tool,
    Toolset,
    calculate,
    get_current_time,
    get_weather,
    mcp_servers,
    mcp_tools,
    tool,
)

if TYPE_CHECKING:
    from .notebook.chat import achat, chat, new_session
    from .notebook.dashboard import dashboard
    from .notebook.view import ChatView
    from .notebook.widget import ChatWidget

_NOTEBOOK_NAMES = frozenset({"ChatView", "ChatWidget", "achat", "chat", "new_session"})


def __getattr__(name: str) -> object:
    """Import the notebook surface (and ipywidgets) only when one of its names is used."""
    if name == "dashboard":  # its own module: the notebook package's __init__ is not this feature's
        from .notebook.dashboard import dashboard

        return dashboard
    if name in _NOTEBOOK_NAMES:
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'streamchat' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """Register the `%chat` and `%%chat` magics: ``%load_ext streamchat``."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


__all__ = [
    "BackendError",
    "BackendResponseError",
    "BackendStreamError",
    "BackendTimeoutError",
    "BackendUnreachableError",
    "ChatOptions",
    "ChatResult",
    "ChatSession",
    "ChatView",
    "ChatWidget",
    "ConfigurationError",
    "DemoProvider",
    "DoneEvent",
    "ErrorEvent",
    "Event",
    "LocalProvider",
    "MCPToolset",
    "Message",
    "Metrics",
    "ModelRequest",
    "OllamaProvider",
    "OpenAIProvider",
    "Progress",
    "ProgressReporter",
    "Provider",
    "ProviderChoice",
    "ScriptedProvider",
    "SessionBusyError",
    "SessionKeywords",
    "SessionOptions",
    "Settings",
    "StreamChatError",
    "ThinkingEvent",
    "TokenEvent",
    "Tool",
    "ToolAction",
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
    "Toolset",
    "ToolsetUnavailableError",
    "UnknownProviderError",
    "Usage",
    "UsageError",
    "__version__",
    "achat",
    "calculate",
    "chat",
    "choose_provider",
    "dashboard",
    "get_current_time",
    "get_weather",
    "mcp_servers",
    "mcp_tools",
    "new_session",
    "parse_event",
    "tool",
]


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """Jupyter Server loads streamchat's extension (`jupyter_server_extension`) through this."""
    from jupyter_server_extension import _jupyter_server_extension_points as points

    return points()
