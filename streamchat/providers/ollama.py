"""`OllamaProvider` (`provider="ollama"`): Ollama's streaming `/api/chat` (NDJSON).

Each line of the response is one JSON object: `message.content` is answer text,
`message.thinking` reasoning (with `think=True`), `message.tool_calls` whole tool calls
with object arguments (on any line, the final `done: true` one included), and the final
line carries `done_reason`, token counts and nanosecond durations. A `{"error": "…"}`
line ends the stream with an error. Retries and timeouts live in `_http.HttpProvider`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import orjson

from ..errors import BackendStreamError
from ..messages import Message
from ..settings import Settings
from ._framing import LineSplitter
from ._http import HttpProvider, StreamDecoder, function_tools, verify_tls
from ._parsing import ChunkParser
from .base import FinishDelta, ModelRequest, ProviderDelta, TextDelta, ThinkingDelta, ToolCallPart, UsageDelta

__all__ = ["DEFAULT_OLLAMA_MODEL", "OllamaProvider", "OllamaStreamParser"]

DEFAULT_OLLAMA_MODEL = "llama3.2"
"""The model used when none is configured."""

_text_delta = TextDelta.__pydantic_validator__.validate_python
"""`TextDelta(text=…)` without its `__init__` frame: the same validation, on the hot path."""

TOP_LEVEL_OPTIONS = frozenset({"think", "format", "keep_alive", "options", "tool_choice"})
"""Keyword options sent at the top of the request; every other one goes into `options`."""


class OllamaStreamParser(ChunkParser):
    """Turns Ollama's NDJSON lines into provider deltas; one parser per response."""

    source = "ollama"
    unit = "a line"

    def __init__(self) -> None:
        self.done = False
        self._saw_tool_call = False

    def feed_line(self, line: bytes) -> list[ProviderDelta]:
        """The deltas of one complete line (without its newline)."""
        text = line.strip()
        if not text:
            return self.skipped("a blank line")
        return self.feed_text(text)

    def reads_numbers(self, chunk: dict[str, Any]) -> bool:
        """The final chunk (token counts, durations), tool calls (arguments) and errors use numbers."""
        message = chunk.get("message")
        return "error" in chunk or bool(chunk.get("done")) or (isinstance(message, dict) and "tool_calls" in message)

    def feed_fast(self, text: bytes) -> list[ProviderDelta] | None:
        """`ChunkParser.feed_fast` for the line Ollama sends most, a piece of answer text, in one step.

        Any other line (thinking, tool calls, the final one, an error, after the end) is left
        to `feed_line`.
        """
        try:
            chunk = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if type(chunk) is not dict or self.done or "error" in chunk or chunk.get("done"):
            return None
        message = chunk.get("message")
        if type(message) is not dict or "tool_calls" in message or "thinking" in message:
            return None
        if content := message.get("content"):
            return [_text_delta({"text": content if type(content) is str else str(content)})]
        return []

    def feed(self, chunk: dict[str, Any]) -> list[ProviderDelta]:
        """The deltas of one parsed chunk. Raises `BackendStreamError` for an `error` chunk."""
        if "error" in chunk:
            raise BackendStreamError(f"ollama reported an error: {chunk['error']}")
        if self.done:
            return []
        out: list[ProviderDelta] = []
        message = chunk.get("message")
        if isinstance(message, dict):
            if thinking := message.get("thinking"):
                out.append(ThinkingDelta(text=str(thinking)))
            if content := message.get("content"):
                out.append(_text_delta({"text": content if type(content) is str else str(content)}))
            for call in message.get("tool_calls") or ():
                out.append(self._tool_call(call))
        if chunk.get("done"):
            self.done = True
            out.append(
                UsageDelta(
                    prompt_tokens=_int(chunk.get("prompt_eval_count")),
                    completion_tokens=_int(chunk.get("eval_count")),
                    backend_duration_ms=_ms(chunk.get("total_duration")),
                    generation_ms=_ms(chunk.get("eval_duration")),
                )
            )
            if self._saw_tool_call:
                out.append(FinishDelta(reason="tool_calls"))
            else:
                out.append(FinishDelta(reason="length" if chunk.get("done_reason") == "length" else "stop"))
        return out

    def finish(self) -> list[ProviderDelta]:
        """Check the stream ended properly. Raises `BackendStreamError` if the final chunk never came."""
        if not self.done:
            raise BackendStreamError(
                "the ollama stream ended before its final chunk (`done: true`): the answer is incomplete",
                retryable=True,
            )
        return []

    def _tool_call(self, call: Any) -> ToolCallPart:
        self._saw_tool_call = True
        function = call.get("function", {}) if isinstance(call, dict) else {}
        call_id = (call.get("id") if isinstance(call, dict) else None) or f"ollama_{uuid.uuid4().hex[:12]}"
        name = str(function.get("name") or "")
        arguments = function.get("arguments")
        if isinstance(arguments, str):  # some models' templates leave the arguments as JSON text
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                return ToolCallPart(
                    call_id=call_id, name=name, invalid_args=f"not valid JSON ({exc}): {arguments!r:.200}"
                )
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return ToolCallPart(call_id=call_id, name=name, invalid_args=f"not a JSON object: {arguments!r:.200}")
        return ToolCallPart(call_id=call_id, name=name, args=arguments)


class OllamaProvider(HttpProvider):
    """Ollama's `/api/chat`, streamed.

    Extra keyword options go into the request as Ollama names them: `think`, `format`,
    `keep_alive` at the top, the rest (`temperature`, `num_ctx`, `seed` …) in `options`.
    `settings=` supplies the defaults (`OLLAMA_HOST`, `STREAMCHAT_MODEL`) and the timeouts
    and retries.

    Example:
        >>> from streamchat import ChatSession, OllamaProvider
        >>> session = ChatSession(OllamaProvider("llama3.2", temperature=0))
    """

    name = "ollama"
    path = "/api/chat"
    parser_class = OllamaStreamParser

    def __init__(
        self, model: str | None = None, base_url: str | None = None, *, settings: Settings | None = None, **options: Any
    ) -> None:
        settings = settings or Settings()
        super().__init__(
            model or settings.model or DEFAULT_OLLAMA_MODEL,
            _with_scheme(base_url or settings.ollama_host),
            options=options,
            settings=settings,
        )

    async def installed_models(self, timeout: float) -> list[str] | None:
        """Names of the models this Ollama has (`GET /api/tags`), or None if it does not answer within `timeout` s."""
        try:
            async with httpx.AsyncClient(timeout=timeout, verify=verify_tls(self.base_url)) as client:
                response = await client.get(f"{self.base_url}/api/tags")
                response.raise_for_status()
                models = response.json().get("models") or []
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]

    async def reachable(self, timeout: float) -> bool:
        """Whether Ollama lists its models: the probe the automatic choice makes."""
        return await self.installed_models(timeout) is not None

    def explain(self, status: int, detail: str) -> str:
        if status == 404 and "not found" in detail.lower():
            return f"model {self.model!r} is not available in ollama at {self.base_url}: run `ollama pull {self.model}`"
        return super().explain(status, detail)

    def unreachable_hint(self) -> str:
        from . import available_providers

        return f"start it with `ollama serve`, set OLLAMA_HOST, or choose another provider; {available_providers(self.settings)}"

    def build_body(self, request: ModelRequest, *, with_tools: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
        }
        if with_tools:
            body["tools"] = function_tools(request.tools)
        options = dict(self.options.get("options") or {})
        for key, value in self.options.items():
            if key in TOP_LEVEL_OPTIONS:
                if key != "options":
                    body[key] = value
            else:
                options[key] = value
        if options:
            body["options"] = options
        return body

    def stream_decoder(self, response: httpx.Response) -> StreamDecoder:
        return _NdjsonDecoder(OllamaStreamParser(), LineSplitter(self.policy.max_line_bytes, self.too_long))


class _NdjsonDecoder(StreamDecoder):
    """Ollama's body: one JSON object a line.

    Lines are split at LF bytes only (`LineSplitter`): httpx's `aiter_lines()` would also
    split at U+0085, U+2028 …, which JSON allows raw inside a string.
    """

    def __init__(self, parser: OllamaStreamParser, lines: LineSplitter) -> None:
        self._parser = parser
        self._lines = lines

    def feed(self, chunk: bytes) -> list[ProviderDelta]:
        parser, splitter = self._parser, self._lines
        feed_line = parser.feed_line
        if (
            not splitter.pending
            and splitter.error is None
            and chunk.endswith(b"\n")
            and chunk.count(b"\n") == 1
            and len(chunk) <= splitter.limit
        ):  # the usual chunk: one whole line (`feed_line` strips its end)
            fast = parser.feed_fast(chunk)
            return feed_line(chunk) if fast is None else fast
        lines = splitter.feed(chunk)
        out: list[ProviderDelta] = []
        feed_fast = parser.feed_fast
        try:
            for line in lines:  # many, when the transport gives what arrived at once (aiohttp)
                fast = feed_fast(line)
                out += feed_line(line) if fast is None else fast
            if splitter.error is not None:
                raise splitter.error
        except BackendStreamError as exc:
            return self.fail_after(out, exc)
        return out

    def finish(self) -> list[ProviderDelta]:
        last = self._lines.end()
        return [*(() if last is None else self._parser.feed_line(last)), *self._parser.finish()]


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.call_id, "function": {"name": c.tool, "arguments": c.args}} for c in message.tool_calls
        ]
    if message.role == "tool" and message.tool:
        out["tool_name"] = message.tool
    return out


def _with_scheme(url: str) -> str:
    """`OLLAMA_HOST` may be `host` or `host:port` without a scheme, as Ollama's own CLI accepts."""
    url = url.strip().rstrip("/")
    if "://" in url:
        return url
    parsed = httpx.URL(f"http://{url}")
    return str(parsed if parsed.port else parsed.copy_with(port=11434)).rstrip("/")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ms(nanoseconds: Any) -> float | None:
    return nanoseconds / 1e6 if isinstance(nanoseconds, int | float) and not isinstance(nanoseconds, bool) else None
