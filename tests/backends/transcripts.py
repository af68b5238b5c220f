"""Backend responses in the backends' documented wire formats, as bytes.

Ollama `/api/chat`: NDJSON, one object per line, `done: true` on the last with
`done_reason`, counts and nanosecond durations. OpenAI-compatible: SSE `data: {chunk}`
events with `choices[0].delta`, a usage chunk with empty `choices`, `data: [DONE]`.
The texts use multi-byte UTF-8 (é, ö, 世界, emoji) so byte cuts land inside characters.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "OLLAMA_DONE_STATS",
    "ndjson",
    "ollama_chunk",
    "ollama_done",
    "openai_chunk",
    "openai_usage",
    "sse",
]

CREATED_AT = "2024-07-22T20:33:28.123648Z"

OLLAMA_DONE_STATS = {
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}
"""The final-chunk statistics from Ollama's API documentation."""


def ollama_chunk(
    content: str = "", *, thinking: str | None = None, tool_calls: list[Any] | None = None
) -> dict[str, Any]:
    """One `done: false` line of `/api/chat`."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {"model": "qwen3", "created_at": CREATED_AT, "message": message, "done": False}


def ollama_done(reason: str = "stop", *, tool_calls: list[Any] | None = None, **stats: int) -> dict[str, Any]:
    """The final `done: true` line, with the documented statistics (overridable)."""
    chunk = ollama_chunk("", tool_calls=tool_calls)
    chunk.update(done=True, done_reason=reason, **{**OLLAMA_DONE_STATS, **stats})
    return chunk


def ndjson(*objects: dict[str, Any] | str) -> bytes:
    """Objects as NDJSON lines (a str is written as a raw line)."""
    lines = [o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in objects]
    return "".join(line + "\n" for line in lines).encode()


def openai_chunk(
    delta: dict[str, Any] | None = None, *, finish_reason: str | None = None, model: str = "test-model"
) -> dict[str, Any]:
    """One `chat.completion.chunk`."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1722181065,
        "model": model,
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}],
    }


def openai_usage(prompt: int, completion: int) -> dict[str, Any]:
    """The usage chunk sent with `stream_options.include_usage` (empty `choices`)."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1722181065,
        "model": "test-model",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def sse(*objects: dict[str, Any] | str, done: bool = True) -> bytes:
    """Objects as SSE `data:` events, then `data: [DONE]` (a str is sent as raw data)."""
    events = [o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in objects]
    if done:
        events.append("[DONE]")
    return "".join(f"data: {e}\n\n" for e in events).encode()


def tool_fragment(
    index: int, *, call_id: str | None = None, name: str | None = None, arguments: str = ""
) -> dict[str, Any]:
    """One `delta.tool_calls` entry: id and name on the first fragment, then argument pieces."""
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        fragment.update(id=call_id, type="function")
    if name is not None:
        fragment["function"]["name"] = name
    return fragment
