"""Real models: llama-cpp-python's OpenAI-compatible server, and the in-process `LocalProvider`.

Both run the tiny Gemma 3 270M GGUF. It is a base model, so its answers are not useful;
with greedy decoding they are exact, so the streamed text is compared with the same
model's non-streamed answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
from pathlib import Path

import httpx
import pytest
from backends.llama_server import LlamaServer
from core_helpers import brief, check_invariants

from streamchat import ChatSession, ConfigurationError, DoneEvent, LocalProvider, OpenAIProvider, TokenEvent
from streamchat.messages import Message
from streamchat.providers import FinishDelta, ModelRequest, TextDelta, ThinkingDelta, ToolDefinition

QUESTION = "Name a fruit that is red."
GREEDY = {"temperature": 0.0, "max_tokens": 12, "seed": 7}
STATUS = ("thinking", "status", "Thinking…")


def reference_answer(server: LlamaServer) -> tuple[str, str]:
    """The server's own non-streamed answer to QUESTION, and its finish reason."""
    body = {"model": "gemma", "messages": [{"role": "user", "content": QUESTION}], **GREEDY}
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120)
    response.raise_for_status()
    choice = response.json()["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


async def test_openai_provider_streams_a_real_answer_from_llama_cpp_server(llama_server: LlamaServer) -> None:
    expected, finish = await asyncio.to_thread(reference_answer, llama_server)
    provider = OpenAIProvider("gemma", base_url=llama_server.base_url, **GREEDY)  # type: ignore[arg-type]
    request = ModelRequest(messages=(Message(role="user", content=QUESTION),))
    try:
        deltas = [delta async for delta in provider.stream(request)]
    finally:
        await provider.aclose()
    texts = [d.text for d in deltas if isinstance(d, TextDelta)]
    assert len(texts) > 1  # streamed piece by piece, not in one block
    assert "".join(texts) == expected and expected.strip()
    assert deltas[-1] == FinishDelta(reason="length" if finish == "length" else "stop")


async def test_chat_session_streams_the_real_server_answer(llama_server: LlamaServer) -> None:
    expected, finish = await asyncio.to_thread(reference_answer, llama_server)
    session = ChatSession(OpenAIProvider("gemma", base_url=llama_server.base_url, **GREEDY), tools=[])  # type: ignore[arg-type]
    try:
        events = [event async for event in session.stream(QUESTION)]
    finally:
        await session.aclose()
    check_invariants(events)
    tokens = [e.content for e in events if isinstance(e, TokenEvent)]
    assert brief(events) == [
        STATUS,
        *(("token", t) for t in tokens),
        ("done", "length" if finish == "length" else "stop", expected),
    ]
    assert len(tokens) > 1
    assert session.history[-1] == Message(role="assistant", content=expected)


# -- the in-process model ---------------------------------------------------------------------


def direct_answer(path: Path) -> str:
    """llama-cpp-python's own non-streamed answer, the same way LocalProvider configures it."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(path), n_ctx=512, verbose=False, chat_format="gemma")
    result = llama.create_chat_completion(messages=[{"role": "user", "content": QUESTION}], **GREEDY)
    return str(result["choices"][0]["message"]["content"])


async def test_local_provider_streams_real_tokens(gguf_path: Path) -> None:
    expected = await asyncio.to_thread(direct_answer, gguf_path)
    provider = LocalProvider(gguf_path, n_ctx=512, **GREEDY)
    session = ChatSession(provider, tools=[])
    try:
        events = [event async for event in session.stream(QUESTION)]
    finally:
        await session.aclose()
    check_invariants(events)
    tokens = [e.content for e in events if isinstance(e, TokenEvent)]
    assert len(tokens) > 1 and "".join(tokens) == expected and expected.strip()
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.reason == "length" and done.text == expected
    assert done.usage.completion_tokens == len(tokens)
    assert brief(events)[0] == STATUS


async def test_local_provider_says_once_that_it_answers_without_tools(gguf_path: Path) -> None:
    provider = LocalProvider(gguf_path, n_ctx=512, temperature=0.0, max_tokens=2)
    tools = (
        ToolDefinition(name="lookup", description="Look a key up.", parameters={"type": "object", "properties": {}}),
    )
    request = ModelRequest(messages=(Message(role="user", content="Hi"),), tools=tools)
    first = [d async for d in provider.stream(request)]
    second = [d async for d in provider.stream(request)]
    assert first[0] == ThinkingDelta(kind="status", text="the local model answers without tools")
    assert not any(isinstance(d, ThinkingDelta) for d in second)


async def test_cancelling_stops_local_generation_at_once(gguf_path: Path) -> None:
    provider = LocalProvider(gguf_path, n_ctx=512, temperature=0.0, max_tokens=400)
    session = ChatSession(provider, tools=[])
    seen = 0
    async with contextlib.aclosing(session.stream("Write a very long story about a dragon.")) as events:
        async for event in events:
            if isinstance(event, TokenEvent):
                seen += 1
                if seen == 3:
                    break
    # Leaving the stream waited for the worker thread: generation has stopped, the model is free.
    assert provider._lock.acquire(blocking=False)
    provider._lock.release()
    stopped_at = provider.generated_tokens
    assert seen <= stopped_at <= seen + 16  # at most the tokens already queued, plus the one in flight
    assert session.history[-1].interrupted
    # and the model answers the next turn normally
    provider.generate_options["max_tokens"] = 4
    result = await session.send("Hi")
    assert result.text and provider.generated_tokens > stopped_at


async def test_one_local_provider_serves_concurrent_turns_without_holding_the_default_pool(
    gguf_path: Path,
) -> None:
    provider = LocalProvider(gguf_path, n_ctx=512, temperature=0.0, max_tokens=4)
    request = ModelRequest(messages=(Message(role="user", content=QUESTION),))

    async def answer() -> str:
        return "".join([d.text async for d in provider.stream(request) if isinstance(d, TextDelta)])

    expected = await answer()
    default_pool = concurrent.futures.ThreadPoolExecutor(2)
    asyncio.get_running_loop().set_default_executor(default_pool)
    turns = [asyncio.create_task(answer()) for _ in range(3)]
    await asyncio.sleep(0)  # each turn's first step hands its generation to a thread
    # more turns than asyncio's default pool has threads: those waiting for the model queue in
    # the provider's own executor, so the default pool (DNS lookups, to_thread) stays free
    probe = asyncio.create_task(asyncio.to_thread(lambda: "free"))
    done, _ = await asyncio.wait([probe, *turns], return_when=asyncio.FIRST_COMPLETED)
    assert probe in done
    assert await asyncio.gather(*turns) == [expected] * len(turns)
    await provider.aclose()
    default_pool.shutdown()


def test_local_provider_without_a_model_file_says_how_to_configure_it(tmp_path: Path) -> None:
    from streamchat import Settings

    with pytest.raises(
        ConfigurationError, match=re.escape("pass model='path/to/model.gguf' or set STREAMCHAT_LOCAL_MODEL")
    ):
        LocalProvider(settings=Settings(local_model=None))
    with pytest.raises(ConfigurationError, match="no GGUF file at"):
        LocalProvider(tmp_path / "missing.gguf")
