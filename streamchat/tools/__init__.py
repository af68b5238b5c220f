"""Tools: defining them (`tool`, `Progress`, `ProgressReporter`), running them, built-ins, toolsets (MCP servers)."""

from .builtin import BUILTIN_TOOLS, calculate, get_current_time, get_weather
from .definition import Progress, ProgressReporter, Tool, tool, toolset
from .mcp import MCPTool, MCPToolset, mcp_servers, mcp_tools
from .toolsets import Toolset

__all__ = [
    "BUILTIN_TOOLS",
    "MCPTool",
    "MCPToolset",
    "Progress",
    "ProgressReporter",
    "Tool",
    "Toolset",
    "calculate",
    "get_current_time",
    "get_weather",
    "mcp_servers",
    "mcp_tools",
    "tool",
    "toolset",
]
