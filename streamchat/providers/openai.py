"""`OpenAIProvider` (`provider="openai"`): any OpenAI-compatible `/v1/chat/completions`.

OpenAI, vLLM, llama.cpp's server, LM Studio and Ollama's `/v1` all stream Server-Sent
Events (cut by `_framing.SseDecoder`, which bounds each event): `data: {chunk}` lines whose `choices[0].delta` carries
`content`, `reasoning`/`reasoning_content`, and `tool_calls` fragments (id and name on
the first fragment of an `index`, `arguments` in pieces), then `finish_reason`, a usage
chunk with empty `choices` (`stream_options.include_usage`), and `data: [DONE]`.
Retries and timeouts live in `_http.HttpProvider`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from ..errors import BackendStreamError
from ..messages import Message
from ..settings import Settings
from ._framing import SseDecoder
from ._http import HttpProvider, StreamDecoder, function_tools
from ._parsing import ChunkParser
from .base import FinishDelta, ModelRequest, ProviderDelta, TextDelta, ThinkingDelta, ToolCallPart, UsageDelta

__all__ = ["DEFAULT_OPENAI_BASE_URL", "DEFAULT_OPENAI_MODEL", "OpenAIProvider", "OpenAIStreamParser"]

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
"""Used when neither `base_url=` nor `OPENAI_BASE_URL` is given."""
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
"""Used when no model is configured."""

_text_delta = TextDelta.__pydantic_validator__.validate_python
"""`TextDelta(text=…)` without its `__init__` frame: the same validation, on the hot path."""

_FINISH: dict[str, Literal["stop", "length", "tool_calls"]] = {
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def complete(self) -> ToolCallPart:
        call_id = self.call_id or f"call_{uuid.uuid4().hex[:12]}"
        raw = "".join(self.arguments)
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            return ToolCallPart(call_id=call_id, name=self.name, invalid_args=f"not valid JSON ({exc}): {raw!r:.200}")
        if not isinstance(args, dict):
            return ToolCallPart(call_id=call_id, name=self.name, invalid_args=f"not a JSON object: {raw!r:.200}")
        return ToolCallPart(call_id=call_id, name=self.name, args=args)


class OpenAIStreamParser(ChunkParser):
    """Turns the `data` of OpenAI-style SSE events into provider deltas; one per response."""

    source = "the server"
    unit = "an event"

    def __init__(self) -> None:
        self.done = False
        self.finish_reason: Literal["stop", "length", "tool_calls"] | None = None
        self._calls: dict[int, _PartialCall] = {}
        self._finished = False

    def feed_data(self, data: str) -> list[ProviderDelta]:
        """The deltas of one SSE event's `data`."""
        if data.strip() == "[DONE]":
            self.done = True
            return self.finish()
        return self.feed_text(data)

    def reads_numbers(self, chunk: dict[str, Any]) -> bool:
        """Usage (token counts), tool-call fragments (indexes, arguments) and errors use numbers."""
        if chunk.get("usage") or chunk.get("error"):
            return True
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                delta = choice.get("delta") or choice.get("message")
                if isinstance(delta, dict) and delta.get("tool_calls"):
                    return True
        return False

    def feed(self, chunk: dict[str, Any]) -> list[ProviderDelta]:
        """The deltas of one parsed chunk. Raises `BackendStreamError` for an `error` chunk."""
        if error := chunk.get("error"):
            message = error.get("message") if isinstance(error, dict) else error
            raise BackendStreamError(f"the server reported an error: {message}")
        out: list[ProviderDelta] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # only one completion is asked for
            delta = choice.get("delta") or choice.get("message") or {}
            if reasoning := delta.get("reasoning") or delta.get("reasoning_content"):
                out.append(ThinkingDelta(text=str(reasoning)))
            if content := delta.get("content"):
                out.append(_text_delta({"text": content if type(content) is str else str(content)}))
            for position, fragment in enumerate(delta.get("tool_calls") or ()):
                self._add_fragment(fragment, position)
            if reason := choice.get("finish_reason"):
                self.finish_reason = _FINISH.get(reason, "stop")
                out.extend(self._complete_calls())
        if usage := chunk.get("usage"):
            out.append(
                UsageDelta(prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))
            )
        return out

    def finish(self) -> list[ProviderDelta]:
        """The deltas owed at the end of the stream. Raises `BackendStreamError` if it was cut short."""
        if self._finished:
            return []
        if not self.done and self.finish_reason is None:
            raise BackendStreamError(
                "the stream ended before the model finished: the answer is incomplete", retryable=True
            )
        self._finished = True
        out = self._complete_calls()
        reason = self.finish_reason or ("tool_calls" if out else "stop")
        return [*out, FinishDelta(reason=reason)]

    def _add_fragment(self, fragment: Any, position: int) -> None:
        if not isinstance(fragment, dict):
            return
        index = fragment.get("index")
        if not isinstance(index, int):  # servers that send whole calls often leave `index` out
            index = position if fragment.get("id") or position not in self._calls else max(self._calls, default=-1)
        call = self._calls.setdefault(index, _PartialCall())
        if fragment.get("id") and not call.call_id:
            call.call_id = str(fragment["id"])
        function = fragment.get("function") or {}
        if function.get("name") and not call.name:
            call.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a server that sends objects rather than JSON text
            arguments = json.dumps(arguments)
        if arguments:
            call.arguments.append(str(arguments))

    def _complete_calls(self) -> list[ProviderDelta]:
        calls = [self._calls[i].complete() for i in sorted(self._calls)]
        self._calls.clear()
        return list(calls)


class OpenAIProvider(HttpProvider):
    """An OpenAI-compatible chat completions API, streamed.

    Extra keyword options (`temperature`, `max_tokens`, `tool_choice`, `reasoning_effort`
    …) go into the request body unchanged. `settings=` supplies the defaults
    (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `STREAMCHAT_MODEL`) and the timeouts and retries.

    Example:
        >>> from streamchat import ChatSession, OpenAIProvider
        >>> session = ChatSession(OpenAIProvider("qwen2.5", base_url="http://localhost:8000/v1"))
    """

    name = "openai"
    path = "/chat/completions"
    parser_class = OpenAIStreamParser

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        settings = settings or Settings()
        if api_key is None and settings.openai_api_key is not None:
            api_key = settings.openai_api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(
            model or settings.model or DEFAULT_OPENAI_MODEL,
            base_url or settings.openai_base_url or DEFAULT_OPENAI_BASE_URL,
            headers=headers,
            options=options,
            settings=settings,
        )

    def explain(self, status: int, detail: str) -> str:
        where = f"{self.base_url}"
        if status == 401:
            return f"{where} refused the API key (401: {detail}): set OPENAI_API_KEY or pass api_key="
        if status == 403:
            return f"{where} does not allow this request (403: {detail}): check the key's permissions"
        if status == 404:
            return (
                f"{where} has no model {self.model!r} or no {self.path} endpoint (404: {detail}): "
                f"check the model name (GET {where}/models lists them) and that the base URL ends in /v1"
            )
        return super().explain(status, detail)

    def unreachable_hint(self) -> str:
        from . import available_providers

        return (
            f"start the server, set OPENAI_BASE_URL, or choose another provider; {available_providers(self.settings)}"
        )

    def build_body(self, request: ModelRequest, *, with_tools: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if with_tools:
            body["tools"] = function_tools(request.tools)
        body.update(self.options)
        if not with_tools:
            body.pop("tool_choice", None)
        return body

    def stream_decoder(self, response: httpx.Response) -> StreamDecoder:
        media_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if media_type != "text/event-stream":
            raise BackendStreamError(f"{self.base_url} answered {media_type or 'no content type'}, not an event stream")
        return _SseDecoder(OpenAIStreamParser(), SseDecoder(self.policy.max_line_bytes, self.too_long))


class _SseDecoder(StreamDecoder):
    """An OpenAI-style body: Server-Sent Events whose `data` is a JSON chunk, then `[DONE]`."""

    def __init__(self, parser: OpenAIStreamParser, events: SseDecoder) -> None:
        self._parser = parser
        self._events = events

    def feed(self, chunk: bytes) -> list[ProviderDelta]:
        parser, events = self._parser, self._events
        out: list[ProviderDelta] = []
        try:
            for data in events.feed(chunk):
                out += parser.feed_data(data)
                if parser.done:
                    self.complete = True
                    return out
            if events.error is not None:
                raise events.error
        except BackendStreamError as exc:
            return self.fail_after(out, exc)
        return out

    def finish(self) -> list[ProviderDelta]:
        return self._parser.finish()


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.tool, "arguments": json.dumps(c.args, ensure_ascii=False)},
            }
            for c in message.tool_calls
        ]
    return out
