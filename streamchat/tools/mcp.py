"""MCP servers' tools as streamchat tools, through the official `mcp` SDK (the ``mcp`` extra).

`mcp_tools(server)` makes an `MCPToolset` for one server: a command run as a subprocess that
speaks MCP over stdio, or a streamable HTTP URL. Put it in a session's tools::

    session = ChatSession(tools=[get_weather, mcp_tools("python -m my_server")])

`mcp_servers(config)` makes one toolset per entry of the usual ``mcpServers`` JSON shape
(the server extension's ``c.StreamChat.mcp_servers`` and the CLI's ``--mcp file.json``).

How MCP maps onto streamchat's tool calls:

- the tools and their JSON Schemas come from ``tools/list``; arguments are checked against
  the schema before a call is sent, so invalid ones never reach the server;
- every call carries a progress token: ``notifications/progress`` becomes `tool_progress`,
  with a percent from ``progress / total`` when the server gives a total and none (an
  indeterminate bar) otherwise, and the server's message as the text;
- Cancel, a cancelled turn and the tool timeout cancel the request, and the SDK sends
  ``notifications/cancelled`` for it;
- Pause holds the call's progress (and its result, should it come) until Resume; the
  server keeps running meanwhile, and the card says so;
- a server that exits, crashes or breaks the protocol fails the call with an error the
  model reads; the turn goes on, and the next call starts the server again.

The connection's lifetime is its owner's (a `ChatSession`, the server extension): it opens
on first use (the first turn lists the tools), is reused by every later turn and by calls
in parallel, and closes with the owner's ``aclose()``. It belongs to the event loop that
opened it, as an HTTP client's pool does: used from another loop, it is retired and opened
again there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shlex
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from ..errors import ConfigurationError, ToolError, ToolsetUnavailableError
from .definition import ProgressReporter, Tool
from .toolsets import Toolset

if TYPE_CHECKING:
    import mcp
    import mcp_types

__all__ = ["MCPTool", "MCPToolset", "mcp_servers", "mcp_tools"]

log = logging.getLogger("streamchat.mcp")

STARTUP_TIMEOUT = 60.0
"""Seconds a server gets to start and list its tools (``uvx`` may download it first)."""

PAUSED_MESSAGE = "Paused: the MCP server keeps running; its progress is held until you resume"
"""What a paused MCP call's card says: pausing holds the updates, not the server."""

_REPORTER = "_streamchat_report"  # the runner hands the reporter under this name (no MCP argument has it)


def _require_sdk() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "MCP tools need the official MCP SDK: pip install 'streamchat[mcp]' (or pip install 'mcp>=2')"
        ) from exc


class MCPTool(Tool):
    """One tool of an MCP server: its schema from ``tools/list``; calling it sends ``tools/call``."""

    pause_message = PAUSED_MESSAGE

    def __init__(self, toolset: MCPToolset, listed: mcp_types.Tool) -> None:
        # Not `Tool.__init__`: that reads a Python function's signature; the server gives the schema.
        import jsonschema  # a dependency of the MCP SDK

        self.toolset = toolset
        self.remote_name = listed.name
        """The tool's name on the server (`name` has the toolset's prefix)."""
        self.name = toolset.prefix + listed.name
        self.description = listed.description or listed.title or listed.name
        self.timeout = toolset.timeout
        self.kind = "async"
        self.reporter_param = _REPORTER
        self.settings_param = None
        self.function = self._call
        self._schema: dict[str, Any] = dict(listed.input_schema)
        validator_class = jsonschema.validators.validator_for(self._schema, default=jsonschema.Draft202012Validator)
        self._validator = validator_class(self._schema)

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON Schema of the arguments object, as the server lists it."""
        return self._schema

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Check `args` against the server's schema; a `ToolError` says what is wrong."""
        problems = sorted(self._validator.iter_errors(args), key=lambda e: list(e.absolute_path))
        if problems:
            parts = [f"{'.'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}" for e in problems]
            raise ToolError("invalid arguments: " + "; ".join(parts))
        return dict(args)

    async def _call(self, **args: Any) -> Any:
        report: ProgressReporter = args.pop(_REPORTER)
        return await self.toolset.call(self, args, report)

    def __repr__(self) -> str:
        return f"<MCPTool {self.name} of {self.toolset.name}>"


class _WatchedReadStream:
    """The transport's read stream, noting when it ends: the server exited or the connection broke."""

    def __init__(self, stream: Any, on_end: Any) -> None:
        self._stream = stream
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._stream, "last_context", None)

    async def receive(self) -> Any:
        import anyio

        try:
            return await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _leaf(exc: BaseException) -> BaseException:
    """The failure itself: an exception group (anyio's task groups) by its first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    """One line about a failure."""
    exc = _leaf(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Connection:
    """One open connection: a task holding the SDK's client open (anyio needs one task) until stopped."""

    def __init__(self, toolset: MCPToolset) -> None:
        self.toolset = toolset
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # waiters may have gone
        self.lost = False
        """True once the transport ended: the server exited, or the connection broke."""
        self.client: mcp.Client | None = None
        self.tools: list[MCPTool] = []
        self._stop = asyncio.Event()
        self.task = self.loop.create_task(self._hold(), name=f"MCP connection {toolset.name}")

    async def _hold(self) -> None:
        from mcp import Client, MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            async with contextlib.AsyncExitStack() as stack:
                transport = await self.toolset._transport(stack)
                client = await stack.enter_async_context(
                    Client(_watched(transport, self._ended), cache=None, client_info=_client_info())
                )
                self.tools = await self._list(client)
                self.client = client
                self.ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:
            if not self.ready.done():
                failure = _leaf(exc)
                if isinstance(failure, MCPError) and failure.code == CONNECTION_CLOSED:
                    why = "it closed the connection before listing its tools (did it exit? its stderr says why)"
                else:
                    why = _describe(failure)
                verb = "started" if self.toolset.command is not None else "reached"
                self.ready.set_exception(
                    ToolsetUnavailableError(f"MCP server {self.toolset.name!r} could not be {verb}: {why}")
                )
            else:
                log.warning("MCP server %r: the connection ended: %s", self.toolset.name, _describe(exc))
        finally:
            self.lost = True
            if not self.ready.done():
                self.ready.cancel()

    async def _list(self, client: mcp.Client) -> list[MCPTool]:
        tools: list[MCPTool] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            tools.extend(MCPTool(self.toolset, listed) for listed in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                return tools

    def _ended(self) -> None:
        self.lost = True

    def stop(self) -> None:
        """Close the connection (the SDK stops a stdio server); from any thread."""

        def now() -> None:
            if self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None:
                self._stop.set()  # leave the client's context in its own task
            else:
                self.task.cancel()  # still starting

        if self.loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            now()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(now)


@contextlib.asynccontextmanager
async def _watched(transport: Any, on_end: Any) -> AsyncIterator[Any]:
    async with transport as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, on_end), write_stream


def _client_info() -> Any:
    from mcp_types import Implementation

    from .._version import __version__

    return Implementation(name="streamchat", version=__version__)


class MCPToolset(Toolset):
    """The tools of one MCP server, over stdio (a command) or streamable HTTP (a URL).

    Make one with `mcp_tools` (or `mcp_servers`) and put it in a session's ``tools=[...]``.
    The connection opens on first use and closes with `aclose()` (the session's `aclose()`
    calls it); a server that exited is started again at the next call.
    """

    def __init__(
        self,
        *,
        name: str,
        command: Sequence[str] | None = None,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        headers: Mapping[str, str] | None = None,
        prefix: str = "",
        timeout: float | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if (command is None) == (url is None):
            raise ConfigurationError(f"MCP server {name!r}: give either a command or a URL")
        if command is not None and not command:
            raise ConfigurationError(f"MCP server {name!r}: the command is empty")
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise ConfigurationError(f"MCP server {name!r}: {url!r} is not an http:// or https:// URL")
        _require_sdk()
        self.name = name
        self.command = list(command) if command is not None else None
        """The command line of a stdio server (None for a URL)."""
        self.url = url
        """The streamable HTTP endpoint (None for a command)."""
        self.env = dict(env or {})
        """Environment variables for a stdio server, over a safe default set (PATH, HOME, …)."""
        self.cwd = cwd
        self.headers = dict(headers or {})
        """HTTP headers sent with every request (e.g. ``Authorization``)."""
        self.prefix = prefix
        """Put before each tool's name, to tell two servers' tools of the same name apart."""
        self.timeout = timeout
        """Seconds each call may run; None: the session's tool timeout."""
        self.startup_timeout = startup_timeout
        self._connection: _Connection | None = None

    def __iter__(self) -> NoReturn:
        raise TypeError(
            "put the MCP toolset itself in tools=[...], not its items (tools=[*toolset]): "
            "its tools are listed when a turn first needs them"
        )

    def __repr__(self) -> str:
        return f"<MCPToolset {self.name}>"

    @property
    def connected(self) -> bool:
        """True while a connection is open and usable."""
        conn = self._connection
        return conn is not None and conn.client is not None and not conn.lost

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        if self.command is not None:
            from mcp import StdioServerParameters
            from mcp.client.stdio import stdio_client

            params = StdioServerParameters(
                command=self.command[0],
                args=self.command[1:],
                env=self.env or None,
                cwd=None if self.cwd is None else os.fspath(self.cwd),
            )
            # The server's log goes to the process's own stderr, never into a notebook cell.
            return stdio_client(params, errlog=sys.__stderr__ or sys.stderr)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        assert self.url is not None
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=self.headers, timeout=httpx2.Timeout(30.0, read=300.0))
        )
        return streamable_http_client(self.url, http_client=http)

    async def _connected(self) -> _Connection:
        """The open connection, opened (or opened again) here if needed."""
        loop = asyncio.get_running_loop()
        conn = self._connection
        if conn is not None and (conn.loop is not loop or conn.lost):
            conn.stop()  # retired: a dead server's, or another loop's
            conn = None
        if conn is None:
            conn = self._connection = _Connection(self)
        try:
            # shielded: a caller that goes away must not stop a start others wait for
            await asyncio.wait_for(asyncio.shield(conn.ready), self.startup_timeout)
        except TimeoutError:
            self._forget(conn)
            raise ToolsetUnavailableError(
                f"MCP server {self.name!r} did not start and list its tools within {self.startup_timeout:g} s"
            ) from None
        except ToolsetUnavailableError:
            self._forget(conn)
            raise
        return conn

    def _forget(self, conn: _Connection) -> None:
        conn.stop()
        if self._connection is conn:
            self._connection = None

    async def list_tools(self) -> list[MCPTool]:
        """The server's tools, listed when the connection opened; opens it if needed."""
        return list((await self._connected()).tools)

    async def call(self, tool: MCPTool, args: dict[str, Any], report: ProgressReporter) -> Any:
        """Call `tool` on the server, reporting its progress; the runner calls this (see the module docs)."""
        try:
            conn = await self._connected()
        except ToolsetUnavailableError as exc:
            raise ToolError(exc.message) from exc
        client = conn.client
        assert client is not None
        updates: collections.deque[tuple[float, float | None, str | None]] = collections.deque()
        arrived = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            updates.append((progress, total, message))
            arrived.set()

        request = asyncio.ensure_future(client.call_tool(tool.remote_name, args, progress_callback=on_progress))
        try:
            while True:
                await self._relay(updates, report)
                if request.done():
                    break
                arrived.clear()
                waiter = asyncio.ensure_future(arrived.wait())
                try:
                    await asyncio.wait({request, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            await report.hold()  # a paused call's result waits for Resume too
            return self._outcome(conn, tool, request)
        except asyncio.CancelledError:
            # Cancel, a stopped turn or the timeout: cancelling the request makes the SDK
            # send notifications/cancelled; wait for that before the call ends.
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            raise

    @staticmethod
    async def _relay(
        updates: collections.deque[tuple[float, float | None, str | None]], report: ProgressReporter
    ) -> None:
        """Report the progress that arrived; while paused it is held, and on Resume only the latest is shown."""
        while updates:
            held = report.paused
            if held:
                await report.hold()
            progress, total, message = updates.popleft()
            if held:
                while updates:
                    progress, total, message = updates.popleft()
            percent = 100.0 * progress / total if total else None
            if message is None:
                message = f"{progress:g} of {total:g}" if total else f"{progress:g}"
            await report(message, percent=percent)

    def _outcome(self, conn: _Connection, tool: MCPTool, request: asyncio.Future[mcp_types.CallToolResult]) -> Any:
        """The call's result, or a `ToolError` the model reads."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        failure = request.exception()
        if failure is None:
            result = request.result()
            value = _result_value(result)
            if result.is_error:
                raise ToolError(value if isinstance(value, str) and value else f"{tool.remote_name} failed")
            return value
        if isinstance(failure, MCPError) and failure.code != CONNECTION_CLOSED:
            raise ToolError(f"MCP server {self.name!r}: {failure.message}") from failure
        # The transport ended or broke: the next call opens a new connection (a new server process).
        conn.lost = True
        self._forget(conn)
        if isinstance(failure, MCPError):
            again = "it is started again" if self.command is not None else "the connection is opened again"
            raise ToolError(
                f"MCP server {self.name!r} closed the connection during the call (it exited or crashed); "
                f"{again} at the next call"
            ) from failure
        raise ToolError(
            f"MCP server {self.name!r}: the call failed ({_describe(failure)}); the connection is opened "
            "again at the next call"
        ) from failure

    async def aclose(self) -> None:
        """Close the connection (a stdio server is stopped); the next use opens a new one."""
        conn, self._connection = self._connection, None
        if conn is None:
            return
        conn.stop()
        try:
            on_loop = asyncio.get_running_loop() is conn.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            await asyncio.gather(conn.task, return_exceptions=True)


def _result_value(result: mcp_types.CallToolResult) -> Any:
    """What the model reads: the text content, described non-text content, or the structured content."""
    from mcp_types import EmbeddedResource, ResourceLink, TextContent, TextResourceContents

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource) and isinstance(block.resource, TextResourceContents):
            parts.append(block.resource.text)
        elif isinstance(block, EmbeddedResource | ResourceLink):
            uri = block.resource.uri if isinstance(block, EmbeddedResource) else block.uri
            parts.append(f"[resource {uri}]")
        else:
            parts.append(f"[{block.type} content ({getattr(block, 'mime_type', '')})]")
    if parts:
        return "\n".join(parts)
    return result.structured_content if result.structured_content is not None else ""


def mcp_tools(
    server: str | Sequence[str] | Mapping[str, Any],
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    headers: Mapping[str, str] | None = None,
    prefix: str = "",
    timeout: float | None = None,
) -> MCPToolset:
    """The tools of an MCP server, for a session's ``tools=[...]``; nothing starts until a turn needs them.

    `server` is a command line (``"uvx mcp-server-time"``, or a list of arguments) run over
    stdio, an ``http://`` / ``https://`` URL spoken to over streamable HTTP, or one entry of
    the ``mcpServers`` JSON shape (``{"command": …, "args": […], "env": {…}}`` or
    ``{"url": …, "headers": {…}}``).

    Example:
        >>> from streamchat import ChatSession, mcp_tools
        >>> time_server = mcp_tools("uvx mcp-server-time", name="time")
        >>> session = ChatSession("demo", tools=[time_server])
    """
    if isinstance(server, Mapping):
        return _from_entry(name or "mcp", server, prefix=prefix, timeout=timeout)
    if isinstance(server, str) and urlsplit(server.strip()).scheme in ("http", "https"):
        url = server.strip()
        return MCPToolset(name=name or _url_name(url), url=url, headers=headers, prefix=prefix, timeout=timeout)
    command = shlex.split(server) if isinstance(server, str) else list(server)
    if not command:
        raise ConfigurationError("mcp_tools: give a command line or a URL")
    return MCPToolset(
        name=name or shlex.join(command),
        command=command,
        env=env,
        cwd=cwd,
        prefix=prefix,
        timeout=timeout,
    )


def _url_name(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


_ENTRY_KEYS = {"command", "args", "env", "cwd", "url", "headers", "type", "transport", "prefix", "timeout"}


def _from_entry(name: str, entry: Mapping[str, Any], *, prefix: str = "", timeout: float | None = None) -> MCPToolset:
    """One ``mcpServers`` entry → its toolset; a `ConfigurationError` names what is wrong."""
    where = f"mcpServers[{name!r}]"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where} must be an object with a 'command' or a 'url'")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {unknown}; known: {sorted(_ENTRY_KEYS)}")
    kind = entry.get("type", entry.get("transport"))
    if kind not in (None, "stdio", "http", "streamable-http", "streamable_http", "streamableHttp"):
        raise ConfigurationError(f"{where}: transport {kind!r} is not supported: use a command (stdio) or a URL")

    def typed(key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = entry.get(key)
        if value is not None and not isinstance(value, kind):
            raise ConfigurationError(f"{where}: {key!r} must be {what}")
        return value

    command = typed("command", str, "a string")
    args = typed("args", list, "a list of strings") or []
    url = typed("url", str, "a string")
    if any(not isinstance(a, str) for a in args):
        raise ConfigurationError(f"{where}: 'args' must be a list of strings")
    for key in ("env", "headers"):
        mapping = typed(key, Mapping, "an object of strings") or {}
        if any(not isinstance(k, str) or not isinstance(v, str) for k, v in mapping.items()):
            raise ConfigurationError(f"{where}: {key!r} must be an object of strings")
    if (command is None) == (url is None):
        raise ConfigurationError(f"{where}: give either 'command' (a stdio server) or 'url' (streamable HTTP)")
    entry_timeout = typed("timeout", (int, float), "a number of seconds")
    return MCPToolset(
        name=name,
        command=[command, *args] if command is not None else None,
        url=url,
        env=entry.get("env"),
        cwd=typed("cwd", str, "a string"),
        headers=entry.get("headers"),
        prefix=typed("prefix", str, "a string") or prefix,
        timeout=entry_timeout if entry_timeout is not None else timeout,
    )


def mcp_servers(config: Mapping[str, Any]) -> list[MCPToolset]:
    """One toolset per server of an ``mcpServers`` configuration (the wrapping ``{"mcpServers": …}`` is optional).

    Example:
        >>> from streamchat import mcp_servers
        >>> [t.name for t in mcp_servers({"time": {"command": "uvx", "args": ["mcp-server-time"]}})]
        ['time']
    """
    if not isinstance(config, Mapping):
        raise ConfigurationError('MCP servers are configured as an object: {"name": {"command": …} or {"url": …}}')
    if set(config) == {"mcpServers"}:
        config = config["mcpServers"]
        if not isinstance(config, Mapping):
            raise ConfigurationError('"mcpServers" must be an object: {"name": {"command": …} or {"url": …}}')
    return [_from_entry(str(name), entry) for name, entry in config.items()]
