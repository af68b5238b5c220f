"""The terminal surface: ``streamchat chat "message"`` and an interactive prompt.

Tool progress prints as ``[tool] message`` lines, then the answer streams token by token:

    [calculate] Evaluating...
    [calculate] Done: 12 * (3 + 4) = 84
    12 * (3 + 4) = 84

``--json`` prints every event as one JSON line instead. Ctrl-C stops the running turn.
``--mcp`` adds an MCP server's tools (a command, a URL, or a JSON file in the ``mcpServers``
shape); it may be given several times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO, assert_never

from . import events
from ._version import __version__
from .errors import ConfigurationError, StreamChatError
from .providers import choose_provider
from .session import ChatSession
from .tools.builtin import BUILTIN_TOOLS
from .tools.mcp import mcp_servers, mcp_tools
from .tools.toolsets import Toolset

__all__ = ["TextRenderer", "main", "mcp_option"]


class TextRenderer:
    """Renders events as plain text: `[tool] message` lines and the streamed answer.

    Shared by the CLI and by `chat()` outside a widget frontend.
    """

    def __init__(self, out: TextIO, *, err: TextIO | None = None, show_metrics: bool = True) -> None:
        self.out = out
        self.err = err
        self.show_metrics = show_metrics
        self._mid_line = False

    def _line(self, text: str) -> None:
        if self._mid_line:
            self.out.write("\n")
            self._mid_line = False
        self.out.write(text + "\n")
        self.out.flush()

    def render(self, event: events.Event) -> None:
        """Write one event."""
        match event:
            case events.TokenEvent():
                self.out.write(event.content)
                self.out.flush()
                self._mid_line = not event.content.endswith("\n")
            case events.ToolProgressEvent():
                percent = f" ({event.percent:.0f}%)" if event.percent not in (None, 0) else ""
                self._line(f"[{event.tool}] {event.message}{percent}")
            case events.ToolResultEvent():
                self._line(f"[{event.tool}] {event.summary}")
            case events.ErrorEvent():
                self._line(f"[error] {event.message}")
            case events.ThinkingEvent():
                if event.kind == "reasoning" and self.err is not None:
                    self.err.write(event.text)
                    self.err.flush()
            case events.DoneEvent():
                self._done(event)
            case events.ToolCallEvent():
                pass  # the call shows up with its first progress line or its result
            case _:
                assert_never(event)

    def _done(self, event: events.DoneEvent) -> None:
        if self._mid_line:
            self.out.write("\n")
            self._mid_line = False
        if event.reason == "cancelled":
            self._line("[stopped]")
        elif event.reason in ("max_turns", "length"):
            self._line(f"[ended: {event.reason}]")
        self.out.flush()
        if self.show_metrics and self.err is not None:
            m = event.metrics
            parts = [f"{m.duration_ms / 1000:.2f} s"]
            if m.ttft_ms is not None:
                parts.insert(0, f"first token {m.ttft_ms:.0f} ms")
            if m.tokens_per_s is not None:
                parts.append(f"{m.tokens_per_s:.1f} tokens/s")
            self.err.write(f"({', '.join(parts)})\n")
            self.err.flush()


async def _run_turn(session: ChatSession, message: str, *, as_json: bool) -> events.DoneEvent:
    """Stream one turn to stdout; SIGINT cancels it. Returns its `done` event."""
    loop = asyncio.get_running_loop()
    renderer = TextRenderer(sys.stdout, err=sys.stderr)
    try:
        loop.add_signal_handler(signal.SIGINT, session.cancel)
    except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
        pass
    done: events.DoneEvent | None = None
    try:
        async for event in session.stream(message):
            if as_json:
                sys.stdout.write(event.model_dump_json() + "\n")
                sys.stdout.flush()
            else:
                renderer.render(event)
            if isinstance(event, events.DoneEvent):
                done = event
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError):
            pass
    assert done is not None
    return done


def mcp_option(value: str) -> list[Toolset]:
    """The toolsets one ``--mcp`` names: a JSON file in the ``mcpServers`` shape, or one server's command or URL."""
    if value.endswith(".json"):
        try:
            with open(value, encoding="utf-8") as config:
                return list(mcp_servers(json.load(config)))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"--mcp {value}: cannot read it as an mcpServers JSON file: {exc}") from exc
    return [mcp_tools(value)]


async def _chat(args: argparse.Namespace) -> int:
    toolsets = [toolset for value in args.mcp for toolset in mcp_option(value)]
    choice = await choose_provider(args.provider, model=args.model)
    session = ChatSession(choice.provider, system=args.system, tools=[*BUILTIN_TOOLS, *toolsets])
    try:
        if not args.json:
            print(f"streamchat: {choice.announcement}", file=sys.stderr)
        if args.message:
            done = await _run_turn(session, " ".join(args.message), as_json=args.json)
            return {"stop": 0, "cancelled": 130, "error": 1}.get(done.reason, 0)
        return await _interactive(session, as_json=args.json)
    finally:
        await session.aclose()


async def _interactive(session: ChatSession, *, as_json: bool) -> int:
    loop = asyncio.get_running_loop()
    print("Type a message and press Enter. Ctrl-C stops an answer; Ctrl-D or /exit quits.", file=sys.stderr)
    while True:
        try:
            line = await loop.run_in_executor(None, input, "> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        message = line.strip()
        if message in ("/exit", "/quit"):
            return 0
        if message == "/clear":
            session.clear()
            continue
        if message:
            await _run_turn(session, message, as_json=as_json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `streamchat` command."""
    parser = argparse.ArgumentParser(prog="streamchat", description="Stream LLM chat with live tool progress.")
    parser.add_argument("--version", action="version", version=f"streamchat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="send a message (or start an interactive prompt)")
    chat.add_argument("message", nargs="*", help="the message; omit it for an interactive prompt")
    chat.add_argument("--provider", help="backend: demo, ollama, openai, local (default: STREAMCHAT_PROVIDER or auto)")
    chat.add_argument("--model", help="model name (default: STREAMCHAT_MODEL or the backend's default)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--json", action="store_true", help="print the events as NDJSON")
    chat.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="SERVER",
        help="an MCP server whose tools the model may call: a command ('uvx mcp-server-time'), a streamable HTTP "
        "URL, or a JSON file in the mcpServers shape; repeat for several",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `streamchat` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_chat(args))
    except StreamChatError as exc:
        print(f"streamchat: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `streamchat chat --json … | head`: the reader left
        sys.stdout = open(os.devnull, "w")
        return 141


if __name__ == "__main__":
    sys.exit(main())
