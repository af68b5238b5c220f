"""A test MCP server written with the `mcp` SDK's server API (`MCPServer`), run as a subprocess.

    python tests/mcp_server.py RECORD_FILE              # stdio
    python tests/mcp_server.py RECORD_FILE --http PORT  # streamable HTTP on 127.0.0.1:PORT/mcp
    python tests/mcp_server.py RECORD_FILE --http PORT --token T  # … answering 401 without that bearer token

It appends what it observes to RECORD_FILE, one line each: ``started <pid>`` when it starts,
``begin <tool> <tag>`` when a call begins, ``cancelled <tool> <tag>`` when the client cancels
one (the SDK cancels the handler on ``notifications/cancelled``), ``end <tool> <tag>`` when
one finishes. Tools:

- ``count(tag, steps, delay)``: progress 0 … steps of total ``steps`` with messages;
- ``spin(tag, rounds, delay)``: progress with no total;
- ``lockstep(tag, partner, steps)``: like ``count``, each step after the partner call's step
  of the same number has been reported, so two calls in parallel interleave;
- ``fail(reason)``: a tool error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

parser = argparse.ArgumentParser()
parser.add_argument("record")
parser.add_argument("--http", type=int, default=None)
parser.add_argument("--token", default=None, help="over HTTP, answer 401 unless 'Authorization: Bearer TOKEN'")
options = parser.parse_args()

server = MCPServer("streamchat-test")
_steps: dict[str, int] = {}
_stepped = anyio.Event()


def record(line: str) -> None:
    with open(options.record, "a", encoding="utf-8") as out:
        out.write(line + "\n")


async def _observed(tool: str, tag: str, work: object) -> str:
    record(f"begin {tool} {tag}")
    try:
        result = await work  # type: ignore[misc]
    except anyio.get_cancelled_exc_class():
        record(f"cancelled {tool} {tag}")
        raise
    record(f"end {tool} {tag}")
    return str(result)


@server.tool()
async def count(tag: str, steps: int, ctx: Context, delay: float = 0.01) -> str:
    """Count from 0 to `steps`, reporting each step with its percent."""

    async def work() -> str:
        for i in range(steps + 1):
            await ctx.report_progress(i, steps, f"step {i} of {steps}")
            if i < steps:
                await anyio.sleep(delay)
        return f"{tag}: counted to {steps}"

    return await _observed("count", tag, work())


@server.tool()
async def spin(tag: str, rounds: int, ctx: Context, delay: float = 0.01) -> str:
    """Work for `rounds` rounds without knowing the total in advance."""

    async def work() -> str:
        for i in range(1, rounds + 1):
            await ctx.report_progress(i, None, f"round {i}")
            await anyio.sleep(delay)
        return f"{tag}: spun {rounds} rounds"

    return await _observed("spin", tag, work())


@server.tool()
async def lockstep(tag: str, partner: str, steps: int, ctx: Context) -> str:
    """Count to `steps`, each step only after `partner` has reported the step before."""

    async def work() -> str:
        global _stepped
        for i in range(1, steps + 1):
            while _steps.get(partner, 0) < i - 1:
                await _stepped.wait()
            await ctx.report_progress(i, steps, f"{tag} step {i}")
            _steps[tag] = i
            _stepped.set()
            _stepped = anyio.Event()
            await anyio.sleep(0.01)
        return f"{tag}: done"

    return await _observed("lockstep", tag, work())


@server.tool()
def fail(reason: str) -> str:
    """Fail with `reason`."""
    raise ToolError(reason)


if __name__ == "__main__":
    record(f"started {os.getpid()}")
    if options.http is None:
        server.run()
    elif options.token is None:
        server.run("streamable-http", host="127.0.0.1", port=options.http)
    else:
        import uvicorn

        app = server.streamable_http_app()
        expected = f"Bearer {options.token}".encode()

        async def checked(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
            await app(scope, receive, send)

        uvicorn.run(checked, host="127.0.0.1", port=options.http, log_level="warning")
    sys.exit(0)
