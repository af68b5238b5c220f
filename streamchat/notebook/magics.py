"""`%load_ext streamchat` → the `%chat` line magic and the `%%chat` cell magic."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..errors import UsageError
from ..result import ChatResult
from ..session import ChatSession
from .chat import DisplayMode, chat, session_now

__all__ = ["load_ipython_extension"]

_SESSIONS: dict[str, ChatSession] = {}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the kernel's process
        raise UsageError(f"%chat: {message}. Usage: %chat [--provider P] [--model M] [--session NAME] [--text] message")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%%chat", add_help=False)
    parser.add_argument("--provider", "-p", help="backend name (demo, ollama, openai, local)")
    parser.add_argument("--model", "-m", help="model name")
    parser.add_argument("--session", "-s", help="a named session kept for follow-ups (default: the kernel's)")
    parser.add_argument("--text", action="store_true", help="plain text instead of the widget")
    parser.add_argument("words", nargs="*", help="the message (line magic)")
    return parser


def run_magic(line: str, cell: str | None = None) -> ChatResult:
    """Run `%chat line` or `%%chat line` + `cell`: options on the line, the message after them."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%chat: {exc} in {line!r}") from exc
    args = _parser().parse_args(words)
    message = cell if cell is not None and cell.strip() else " ".join(args.words)
    if cell is not None and cell.strip() and args.words:
        raise UsageError("%%chat: put the message in the cell body, options on the %%chat line")
    display: DisplayMode | None = "text" if args.text else None
    if args.session:
        session = _SESSIONS.get(args.session)
        if session is None:
            session = _SESSIONS[args.session] = session_now(args.provider, model=args.model)
        return chat(message, session=session, display=display)
    return chat(message, provider=args.provider, model=args.model, display=display)


def load_ipython_extension(ipython: Any) -> None:
    """Register `%chat` and `%%chat` (called by ``%load_ext streamchat``)."""

    def chat_magic(line: str, cell: str | None = None) -> ChatResult:
        return run_magic(line, cell)

    chat_magic.__doc__ = "Chat with the model: `%chat message` or a `%%chat [--provider P] [--model M]` cell."
    ipython.register_magic_function(chat_magic, magic_kind="line_cell", magic_name="chat")
