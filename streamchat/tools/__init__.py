"""Tools: defining them (`tool`, `Progress`, `ProgressReporter`), running them, built-ins."""

from .builtin import BUILTIN_TOOLS, calculate, get_current_time, get_weather
from .definition import Progress, ProgressReporter, Tool, tool, toolset

__all__ = [
    "BUILTIN_TOOLS",
    "Progress",
    "ProgressReporter",
    "Tool",
    "calculate",
    "get_current_time",
    "get_weather",
    "tool",
    "toolset",
]
