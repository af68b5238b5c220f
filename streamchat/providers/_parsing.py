"""What the HTTP backends' stream parsers share (`OllamaStreamParser`, `OpenAIStreamParser`).

A parser turns the JSON chunks of one response into provider deltas. Its backend frames
the chunks (NDJSON lines, SSE events); this base decodes one chunk's text, skipping a
malformed one with a `malformed_chunk` notice instead of failing the turn, and reads a
whole JSON body (a backend that ignored `stream: true`) as a stream of that one chunk.
"""

from __future__ import annotations

import abc
import json
from typing import Any, ClassVar

import orjson

from ..errors import BackendStreamError
from ._framing import loads
from .base import NoticeDelta, ProviderDelta

__all__ = ["ChunkParser"]


class ChunkParser(abc.ABC):
    """Turns the JSON chunks of one response into provider deltas; one parser per response."""

    source: ClassVar[str]
    """Who sends the chunks, as messages name it (`ollama`, `the server`)."""
    unit: ClassVar[str]
    """What one chunk comes in, as messages name it (`a line`, `an event`)."""

    @abc.abstractmethod
    def feed(self, chunk: dict[str, Any]) -> list[ProviderDelta]:
        """The deltas of one parsed chunk. Raises `BackendStreamError` for an `error` chunk."""

    @abc.abstractmethod
    def reads_numbers(self, chunk: dict[str, Any]) -> bool:
        """Whether `feed` uses a number of `chunk` (token counts, tool arguments): then it is read exactly."""

    @abc.abstractmethod
    def finish(self) -> list[ProviderDelta]:
        """The deltas owed at the end of the stream. Raises `BackendStreamError` if it was cut short."""

    def feed_text(self, text: str | bytes) -> list[ProviderDelta]:
        """The deltas of one chunk's JSON text; text that is not a JSON object is skipped with a notice."""
        try:
            chunk = loads(text)
            if type(chunk) is dict and self.reads_numbers(chunk):
                chunk = json.loads(text)  # `loads` reads an integer past 64 bits as a float
        except ValueError:  # UnicodeDecodeError is a ValueError too
            head = text[:80]
            preview = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
            return self.skipped(f"{self.unit} that is not JSON", repr(preview))
        if not isinstance(chunk, dict):
            return self.skipped(f"{self.unit} that is not an object", f"{chunk!r:.80}")
        return self.feed(chunk)

    def feed_fast(self, text: bytes) -> list[ProviderDelta] | None:
        """The deltas of one chunk's JSON text by the shortest path, or None where `feed_text` must read it.

        The shortest path is an object that orjson reads and whose numbers `feed` does not use
        (a token): the same deltas `feed_text` gives, with less work per chunk.
        """
        try:
            chunk = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if type(chunk) is not dict or self.reads_numbers(chunk):
            return None
        return self.feed(chunk)

    def feed_body(self, body: Any) -> list[ProviderDelta]:
        """The deltas of a whole JSON response, read as a stream of that one chunk."""
        if not isinstance(body, dict):
            raise BackendStreamError(f"{self.source} answered a JSON value that is not an object: {body!r:.80}")
        return [*self.feed(body), *self.finish()]

    def skipped(self, what: str, preview: str | None = None) -> list[ProviderDelta]:
        """A `malformed_chunk` notice saying that `what` the backend sent was skipped."""
        message = f"{self.source} sent {what}; skipped it" + ("" if preview is None else f": {preview}")
        return [NoticeDelta(message=message, code="malformed_chunk")]
