"""How a streamed response body is cut into lines and Server-Sent Events, chunk by chunk.

The HTTP providers read a body as the network delivers it: a read may end anywhere, in
the middle of a line or of a UTF-8 character. `LineSplitter` keeps the unfinished line
between reads and gives the complete ones, without their ends (LF only, as NDJSON and
JSON allow U+2028 and friends raw inside strings; with `sse`, also CRLF and CR).
`SseDecoder` gives the `data` of each complete event. Both are synchronous and do one
pass over each chunk, so the per-chunk cost of a stream (every line in its own HTTP
chunk, as model servers send them) stays a few bytes operations. A line or event longer
than the limit sets `error` (the one the caller supplies), before it is all read; `feed`
still gives what came before it, and nothing after.

`loads` is the JSON decoder of the hot path: orjson, and `json.loads` for what orjson
refuses. Their values are equal except for integers past 64 bits, which orjson reads as
floats: a `ChunkParser` reads again with `json.loads` a chunk whose numbers it uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["LineSplitter", "SseDecoder", "loads"]

_SSE_LINE_END = re.compile(rb"\r\n?|\n")  # SSE lines end in CRLF, LF or CR


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`, faster, except that an integer past 64 bits comes as a float.

    What orjson refuses (lone surrogates, NaN, infinite numbers, a byte order mark, other
    encodings) goes to `json.loads`, so the value or the error is the standard library's.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class LineSplitter:
    """Cuts a body, fed chunk by chunk, into its lines (without their ends)."""

    def __init__(self, limit: int, too_long: Callable[[], Exception], *, sse: bool = False) -> None:
        self.limit = limit
        """Longest line, in bytes."""
        self._too_long = too_long
        self._sse = sse
        self.pending: list[bytes] = []
        """The unfinished line, in pieces of chunks."""
        self.pending_size = 0
        self._after_cr = False  # (sse) a CR ended the last chunk: an LF starting the next one belongs to it
        self.error: Exception | None = None
        """Set once a line was too long; the body is not read further."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines that `chunk` completes, in order (those before a line too long, which sets `error`)."""
        if self.error is not None or not chunk:
            return []
        if self._sse:
            if self._after_cr and chunk.startswith(b"\n"):
                chunk = chunk[1:]
            self._after_cr = chunk.endswith(b"\r")
            if b"\r" in chunk:
                parts = _SSE_LINE_END.split(chunk)
            else:
                parts = chunk.split(b"\n")
        else:
            parts = chunk.split(b"\n")
        tail = parts.pop()
        if parts and self.pending:
            self.pending.append(parts[0])
            parts[0] = b"".join(self.pending)
            self.pending.clear()
            self.pending_size = 0
        limit = self.limit
        for index, line in enumerate(parts):
            if len(line) > limit:
                self.error = self._too_long()
                return parts[:index]
        if tail:
            self.pending.append(tail)
            self.pending_size += len(tail)
            if self.pending_size > limit:
                self.error = self._too_long()
        return parts

    def end(self) -> bytes | None:
        """The last line, left without its end when the body ended; None if there is none or it is blank."""
        line = b"".join(self.pending)
        self.pending.clear()
        self.pending_size = 0
        return line if line.strip() else None


class SseDecoder:
    """The `data` of each Server-Sent Event of a body fed chunk by chunk (its `data:` lines joined by LF).

    Comments and other fields are skipped; an event left without its blank line at the end
    of the body is dropped, as the SSE specification says. A line or event longer than the
    limit sets `error`.
    """

    def __init__(self, limit: int, too_long: Callable[[str], Exception]) -> None:
        self._lines = LineSplitter(limit, lambda: too_long("a line"), sse=True)
        self._limit = limit
        self._too_long = too_long
        self._data: list[bytes] = []
        self._size = 0
        self.error: Exception | None = None
        """Set once a line or an event was too long; the body is not read further."""

    def feed(self, chunk: bytes) -> list[str]:
        """The data of the events that `chunk` completes, in order (those before one too long, which sets `error`)."""
        if self.error is not None:
            return []
        out: list[str] = []
        data = self._data
        for line in self._lines.feed(chunk):
            if not line:
                if data:
                    out.append(b"\n".join(data).decode("utf-8", "replace"))
                    data.clear()
                    self._size = 0
                continue
            if line.startswith(b"data:") or line == b"data":
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
                self._size += len(value)
                if self._size > self._limit:
                    self.error = self._too_long("an event")
                    return out
        self.error = self._lines.error
        return out
