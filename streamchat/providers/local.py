"""`LocalProvider` (`provider="local"`): a GGUF model run in-process by llama-cpp-python.

Install with `pip install "streamchat[local]"`. The model file comes from `model=` or
`STREAMCHAT_LOCAL_MODEL`. Generation runs in the provider's own worker thread that feeds
an asyncio queue, so the event loop (a notebook kernel's, a server's) never blocks; leaving
the stream sets a flag the thread checks between tokens, so a cancelled turn stops
generating within one token. The model itself answers without tools.

One provider may serve several sessions at once (the server shares one): a llama.cpp
context runs one generation at a time, so requests queue in the provider's one-thread
executor, where a waiting request holds no thread of asyncio's default pool.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, Literal

from ..errors import BackendError, ConfigurationError
from ..settings import Settings
from .base import FinishDelta, ModelRequest, Provider, ProviderDelta, TextDelta, ThinkingDelta, UsageDelta

__all__ = ["LOAD_OPTIONS", "LocalProvider"]

LOAD_OPTIONS = frozenset(
    {
        "n_ctx",
        "n_threads",
        "n_threads_batch",
        "n_batch",
        "n_gpu_layers",
        "chat_format",
        "use_mmap",
        "use_mlock",
        "verbose",
    }
)
"""Keyword options given to `llama_cpp.Llama(...)`; every other one goes to `create_chat_completion`."""

_CHAT_FORMATS = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "qwen2": "chatml", "qwen3": "chatml"}
"""Chat formats for GGUF files that carry no chat template, by `general.architecture`."""

_Item = tuple[Literal["chunk", "error", "end"], Any]
_REMEMBERED_SESSIONS = 1024
"""How many sessions a provider remembers having told that it answers without tools."""


class LocalProvider(Provider):
    """An in-process GGUF model (llama-cpp-python); `model=` is the file's path.

    Options: `n_ctx` (default 2048), `n_threads`, `chat_format` … load the model;
    `max_tokens` (default 512), `temperature`, `seed`, `stop` … shape each answer.
    Without `model=`, `settings.local_model` (`STREAMCHAT_LOCAL_MODEL`) names the file.

    Example:
        >>> from streamchat import ChatSession, LocalProvider
        >>> session = ChatSession(LocalProvider("gemma-3-270m-q4_k_m.gguf", max_tokens=64))
    """

    name = "local"

    def __init__(self, model: str | Path | None = None, *, settings: Settings | None = None, **options: Any) -> None:
        settings = settings or Settings()
        path = model or settings.local_model
        if not path:
            raise ConfigurationError(
                "the local provider needs a GGUF file: pass model='path/to/model.gguf' or set STREAMCHAT_LOCAL_MODEL"
            )
        if not Path(path).is_file():
            raise ConfigurationError(f"no GGUF file at {str(path)!r} (from model= or STREAMCHAT_LOCAL_MODEL)")
        super().__init__(str(path))
        self.load_options: dict[str, Any] = {"n_ctx": 2048, "verbose": False}
        self.generate_options: dict[str, Any] = {"max_tokens": 512}
        for key, value in options.items():
            (self.load_options if key in LOAD_OPTIONS else self.generate_options)[key] = value
        self.generated_tokens = 0
        """Tokens produced by the model so far, counted in the worker thread (cancelled answers included)."""
        self._llama: Any = None
        self._lock = threading.Lock()  # a llama.cpp context runs one generation at a time
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._warned: collections.OrderedDict[str | None, None] = collections.OrderedDict()

    def describe(self) -> str:
        return f"local {Path(self.model).name} (in-process llama.cpp)"

    def _load(self) -> Any:
        """The loaded model (called in the worker thread, under the lock)."""
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ConfigurationError(
                    'the local provider needs llama-cpp-python: pip install "streamchat[local]"'
                ) from exc
            llama = Llama(model_path=self.model, **self.load_options)
            architecture = llama.metadata.get("general.architecture", "")
            if (
                "chat_format" not in self.load_options
                and "tokenizer.chat_template" not in llama.metadata
                and architecture in _CHAT_FORMATS
            ):
                llama.chat_format = _CHAT_FORMATS[architecture]
            self._llama = llama
        return self._llama

    async def aclose(self) -> None:
        """Let the worker thread end once its queued generations are done (or stopped)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def _tell_once(self, session_id: str | None) -> bool:
        """True the first time a session (one of the latest few hundred) asks with tools."""
        if session_id in self._warned:
            self._warned.move_to_end(session_id)
            return False
        self._warned[session_id] = None
        if len(self._warned) > _REMEMBERED_SESSIONS:
            self._warned.popitem(last=False)
        return True

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        if request.tools and self._tell_once(request.session_id):
            yield ThinkingDelta(kind="status", text="the local model answers without tools")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        stop = threading.Event()
        messages = [{"role": m.role if m.role != "tool" else "user", "content": m.content} for m in request.messages]
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="streamchat-local")
        job = self._executor.submit(self._generate, messages, stop, _sender(loop, queue))
        tokens = 0
        finish: Literal["stop", "length"] = "stop"
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    if isinstance(value, BackendError | ConfigurationError):
                        raise value
                    raise BackendError(f"the local model failed: {type(value).__name__}: {value}") from value
                choice = value["choices"][0]
                if content := choice["delta"].get("content"):
                    tokens += 1
                    yield TextDelta(text=content)
                if choice.get("finish_reason") == "length":
                    finish = "length"
            yield UsageDelta(completion_tokens=tokens)
            yield FinishDelta(reason=finish)
        finally:
            stop.set()  # the worker sees it before its next token
            if not job.cancel():  # a queued generation never starts; a running one is waited for
                await asyncio.shield(asyncio.wrap_future(job))  # a second cancel leaves the thread to stop by itself

    def _generate(self, messages: list[dict[str, str]], stop: threading.Event, send: Callable[[_Item], None]) -> None:
        """Worker thread: run one generation, sending chunks until done or `stop` is set."""
        try:
            with self._lock:
                llama = self._load()
                if stop.is_set():
                    return
                chunks = llama.create_chat_completion(messages=messages, stream=True, **self.generate_options)
                try:
                    for chunk in chunks:
                        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                            self.generated_tokens += 1
                        if stop.is_set():
                            break
                        send(("chunk", chunk))
                finally:
                    chunks.close()
        except Exception as exc:  # reported to the stream, which raises it on the loop
            send(("error", exc))
        finally:
            send(("end", None))


def _sender(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[_Item]) -> Callable[[_Item], None]:
    def send(item: _Item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the thread finished
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return send
