"""Toolsets: tools that are known only once something is asked, such as an MCP server's.

A `Toolset` goes in a session's ``tools=[...]`` next to plain tools. The session asks it for
its tools at the start of each turn (`gather_tools`), so a toolset may connect lazily and
keep its connection across turns; the session's `aclose()` closes it. A toolset that cannot
list its tools is left out of that turn with an error event; the turn goes on.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import StreamChatError, ToolDefinitionError, ToolsetUnavailableError
from .definition import Tool, toolset

__all__ = ["Toolset", "gather_tools", "split_tools"]


class Toolset(abc.ABC):
    """A source of tools listed at the start of each turn (an MCP server's: see `mcp_tools`)."""

    name: str
    """What messages about this toolset call it."""

    @abc.abstractmethod
    async def list_tools(self) -> Sequence[Tool]:
        """The tools now; raises `ToolsetUnavailableError` when they cannot be listed."""

    async def aclose(self) -> None:  # noqa: B027  # a toolset without connections has nothing to close
        """Close the toolset's connections; a later `list_tools()` opens them again."""


def split_tools(items: Iterable[Tool | Toolset | Callable[..., Any]]) -> tuple[dict[str, Tool], list[Toolset]]:
    """Plain tools indexed by name (functions wrapped with `tool`), and the toolsets, in order."""
    plain: list[Tool | Callable[..., Any]] = []
    toolsets: list[Toolset] = []
    for item in items:
        if isinstance(item, Toolset):
            toolsets.append(item)
        else:
            plain.append(item)
    return toolset(plain), toolsets


async def gather_tools(
    tools: Mapping[str, Tool], toolsets: Sequence[Toolset]
) -> tuple[dict[str, Tool], list[StreamChatError]]:
    """`tools` and every toolset's tools (listed concurrently), and why any were left out.

    A toolset that fails is left out; a tool whose name is already taken is left out too,
    with an error that says how to tell them apart.
    """
    merged = dict(tools)
    problems: list[StreamChatError] = []
    listed = await asyncio.gather(*(t.list_tools() for t in toolsets), return_exceptions=True)
    for source, result in zip(toolsets, listed, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, StreamChatError):
                if not isinstance(result, Exception):
                    raise result  # cancellation and the like are not the toolset's failure
                result = ToolsetUnavailableError(f"{source.name}: {type(result).__name__}: {result}")
            problems.append(result)
            continue
        for item in result:
            if item.name in merged:
                problems.append(
                    ToolDefinitionError(
                        f"{source.name}: tool {item.name!r} is left out: another tool has that name "
                        "(give the toolset a prefix, e.g. mcp_tools(..., prefix='name_'))"
                    )
                )
                continue
            merged[item.name] = item
    return merged, problems
