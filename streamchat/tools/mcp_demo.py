"""A small MCP server to try MCP tools with: ``python -m streamchat.tools.mcp_demo`` (stdio).

Written with the `mcp` SDK's server API (the ``mcp`` extra). Its tools report progress the
MCP way, so their cards show live bars:

- ``read_pages(pages)``: reads a pretend document page by page (progress with a total);
- ``warm_up(rounds)``: works without knowing how long it will take (progress without a total).

Use it from a session (``tools=[mcp_tools("python -m streamchat.tools.mcp_demo")]``) or the
CLI (``streamchat chat --mcp "python -m streamchat.tools.mcp_demo" …``).
"""

from __future__ import annotations

from typing import Annotated

import anyio
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

__all__ = ["server"]

server = MCPServer("streamchat-demo")
"""The demo server; `python -m streamchat.tools.mcp_demo` runs it over stdio."""


@server.tool()
async def read_pages(pages: Annotated[int, Field(description="How many pages the document has.")], ctx: Context) -> str:
    """Read a document page by page."""
    for page in range(1, pages + 1):
        await anyio.sleep(0.05)
        await ctx.report_progress(page, pages, f"Read page {page} of {pages}")
    return f"{pages} pages read"


@server.tool()
async def warm_up(rounds: Annotated[int, Field(description="How many rounds to run.")], ctx: Context) -> str:
    """Warm a cache up; how long it takes is not known in advance."""
    for round_ in range(1, rounds + 1):
        await anyio.sleep(0.05)
        await ctx.report_progress(round_, None, f"Warming up (round {round_})")
    return "warm"


if __name__ == "__main__":
    server.run()
