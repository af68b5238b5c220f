"""Shared parts of the MCP tests: the test server (`tests/mcp_server.py`) over stdio or streamable HTTP.

`ServerRecord` reads what the test server observed (its record file); `HttpMcpServer` runs it
on a free port of 127.0.0.1 and can kill and start it again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from streamchat import Event, MCPToolset, mcp_tools

MCP_SERVER = str(Path(__file__).with_name("mcp_server.py"))
"""The test MCP server script."""

WAIT = 20.0
"""Most seconds a test waits for something the server does (a generous bound on a loaded machine)."""


class ServerRecord:
    """The test server's record file: ``started <pid>``, ``begin|cancelled|end <tool> <tag>`` lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[str]:
        """Every line so far."""
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def pids(self) -> list[int]:
        """The process ids of the servers started so far, in order."""
        return [int(line.split()[1]) for line in self.lines() if line.startswith("started ")]

    async def wait_for(self, line: str) -> None:
        """Wait until the server records `line`."""
        await until(lambda: line in self.lines(), f"the MCP server to record {line!r} (it has {self.lines()})")


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait until `condition()` holds, checking every 10 ms; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def stdio_tools(record: ServerRecord) -> MCPToolset:
    """The test server's tools over stdio (started by the first turn that needs them)."""
    return mcp_tools([sys.executable, MCP_SERVER, str(record.path)], name="test")


def kill(pid: int) -> None:
    """Kill a test server at once (SIGKILL: no clean shutdown)."""
    os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HttpMcpServer:
    """The test server over streamable HTTP on 127.0.0.1, as a subprocess."""

    def __init__(self, record: ServerRecord, *, token: str | None = None) -> None:
        self.record = record
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                MCP_SERVER,
                str(self.record.path),
                "--http",
                str(self.port),
                *(["--token", self.token] if self.token else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the HTTP MCP server exited with status {self.process.returncode}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        await until(listening, f"the HTTP MCP server on port {self.port}")

    def kill(self) -> None:
        """Kill the server at once and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tools(self) -> MCPToolset:
        """The server's tools over streamable HTTP."""
        return mcp_tools(self.url, name="test")


def by_call(events: list[Event], call_id: str) -> list[tuple[object, ...]]:
    """The progress (message, percent) and result (status, result, error) of one call, in order."""
    out: list[tuple[object, ...]] = []
    for e in events:
        if e.type == "tool_progress" and e.call_id == call_id:
            out.append(("progress", e.message, e.percent))
        elif e.type == "tool_result" and e.call_id == call_id:
            out.append(("result", e.status, e.result, e.error))
    return out
