"""The reliability layer shared by every HTTP backend (Ollama, OpenAI-compatible).

One implementation of: a pooled `httpx.AsyncClient` per provider, shared by every turn
that uses the provider (concurrent ones too); connect and read timeouts; a stall timeout
between chunks; retries with exponential backoff and jitter
(honouring `Retry-After`) for connection errors, 408, 409, 429 and 5xx, made only while
nothing of the response has been yielded yet, so a retry can never duplicate tokens;
actionable errors for 400/401/403/404; a retry without tools when a model rejects them;
a JSON body answered to a streaming request handled as a one-chunk stream; and bounds on
what a response may hold (one line or event, the whole body), so a broken or hostile
backend cannot grow the process's memory.

Subclasses only know their wire format: `build_body`, `stream_decoder` (the framing of
a streamed body, `_framing`, around their `ChunkParser`) and their `parser_class`. The
body is read here, one chunk at a time, in `stream` itself (no generator in between,
one stall timer per body rather than one per read): the per-chunk cost matters, as model
servers send every line in its own HTTP chunk.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

import httpx

from ..analytics import recorder
from ..errors import (
    BackendError,
    BackendResponseError,
    BackendStreamError,
    BackendTimeoutError,
    BackendUnreachableError,
)
from ..settings import Settings
from ._parsing import ChunkParser
from ._transport import HttpTransport, choose_transport, httpx_error, make_client, transport_errors
from .base import ModelRequest, Provider, ProviderDelta, ThinkingDelta, ToolDefinition

__all__ = ["HttpPolicy", "HttpProvider", "StreamDecoder"]

logger = logging.getLogger("streamchat.providers")

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""4xx statuses worth a retry (every 5xx is too)."""
MAX_RETRY_AFTER = 60.0
"""A `Retry-After` longer than this (seconds) fails the request instead of waiting."""
TOOLS_REJECTED = (
    "does not support tools",  # Ollama (400), also on its /v1
    "tools param requires",  # llama.cpp's server without --jinja (500)
    "unsupported param: tools",  # older llama.cpp servers (500)
    "tool choice requires",  # vLLM without --enable-auto-tool-choice (400)
)
"""Phrases of the errors servers answer when the model or server cannot take tools."""
MAX_ERROR_BODY = 64 * 1024
"""Bytes of an error response read for its message; the rest is not read."""


def function_tools(tools: Iterable[ToolDefinition]) -> list[dict[str, Any]]:
    """Tool definitions in the `{"type": "function", "function": {…}}` shape Ollama and OpenAI share."""
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts and retry rules of one HTTP provider."""

    connect_timeout: float = 5.0
    """Seconds to open a connection."""
    read_timeout: float = 300.0
    """Seconds to wait for the response to start."""
    stall_timeout: float = 60.0
    """Seconds a started stream may stay silent."""
    retries: int = 2
    """Retries before the first event of a response."""
    backoff: float = 0.5
    """First retry delay in seconds; doubled each retry, with jitter."""
    max_backoff: float = 8.0
    """Longest computed retry delay in seconds."""
    max_line_bytes: int = 1024 * 1024
    """Longest line or event of a streamed response."""
    max_response_bytes: int = 64 * 1024 * 1024
    """Most bytes of one response."""

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpPolicy:
        """The policy the settings describe: each field from the setting ``backend_<field>``, where there is one."""
        given = {field.name: f"backend_{field.name}" for field in dataclasses.fields(cls)}
        return cls(
            **{name: getattr(settings, setting) for name, setting in given.items() if setting in Settings.model_fields}
        )

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self.max_backoff, self.backoff * 2**retry)
        return random.uniform(ceiling / 2, ceiling)  # jitter: spread clients that failed together


def verify_tls(url: str) -> bool:
    """TLS verification for a one-off probe: plain HTTP needs no CA bundle (loading one costs more than a probe)."""
    return not url.startswith("http://")


class _ToolsRejected(Exception):
    """The backend answered 400 because the model cannot use tools."""


class _StatusError(BackendResponseError):
    """An HTTP error status, with the delay a `Retry-After` header asked for."""

    retry_after: float | None = None


class StreamDecoder(abc.ABC):
    """Turns a streamed body, fed chunk by chunk, into deltas: a backend's framing around its `ChunkParser`."""

    complete = False
    """True once the backend said the stream is over, or failed: the rest of the body is not read."""
    failure: BackendError | None = None
    """An error met after some deltas of a chunk: given by `end`, once those deltas are delivered."""

    @abc.abstractmethod
    def feed(self, chunk: bytes) -> list[ProviderDelta]:
        """The deltas of the lines or events that `chunk` completes."""

    @abc.abstractmethod
    def finish(self) -> list[ProviderDelta]:
        """The deltas owed when the body ends. Raises `BackendStreamError` if it was cut short."""

    def end(self) -> list[ProviderDelta]:
        """`finish`, or the failure kept for after the last deltas."""
        if self.failure is not None:
            raise self.failure
        return self.finish()

    def fail_after(self, out: list[ProviderDelta], error: BackendError) -> list[ProviderDelta]:
        """`out`, with `error` kept for `end` (so the deltas before it are delivered first); raised now if `out` is empty."""
        if not out:
            raise error
        self.failure = error
        self.complete = True
        return out


class HttpProvider(Provider):
    """Base class of providers that stream a chat completion over HTTP."""

    path: ClassVar[str]
    """The chat endpoint, relative to the base URL."""
    parser_class: ClassVar[type[ChunkParser]]
    """The parser of the backend's chunks (one per response); `parse_body` reads a whole body with one."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__(model)
        self.base_url = base_url.rstrip("/")
        self.options: dict[str, Any] = dict(options or {})
        self.settings = settings or Settings()
        self.policy = HttpPolicy.from_settings(self.settings)
        self._headers = dict(headers or {})
        self.http_transport: HttpTransport = choose_transport(self.settings.backend_http_transport)
        """The transport this provider reads its backend with (`_transport`): `aiohttp` or `httpx`."""
        self._transport_errors = transport_errors(self.http_transport)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._tools_rejected = False

    # -- what a backend defines -------------------------------------------------------------

    @abc.abstractmethod
    def build_body(self, request: ModelRequest, *, with_tools: bool) -> dict[str, Any]:
        """The JSON request body for `request`."""

    @abc.abstractmethod
    def stream_decoder(self, response: httpx.Response) -> StreamDecoder:
        """The decoder of a streamed response's body (raises `BackendStreamError` if the response cannot be one)."""

    def parse_body(self, body: Any) -> Iterable[ProviderDelta]:
        """Deltas of a whole JSON response (a backend that ignored `stream: true`)."""
        return self.parser_class().feed_body(body)

    def explain(self, status: int, detail: str) -> str:
        """The user-facing message for an HTTP error status, saying what to do."""
        where = f"{self.name} at {self.base_url}"
        if status in (401, 403):
            return f"{where} refused the request ({status}: {detail}): check the API key"
        if status == 404:
            return f"{where} has no model {self.model!r} or no endpoint {self.path} (404: {detail})"
        if status == 400:
            return f"{where} rejected the request (400: {detail})"
        return f"{where} answered {status}: {detail}"

    def unreachable_hint(self) -> str:
        """What to do when the backend cannot be reached."""
        return "check that the server is running and the base URL is right"

    # -- the pooled client --------------------------------------------------------------------

    def client(self) -> httpx.AsyncClient:
        """This provider's pooled client, bound to the running event loop.

        An `httpx.AsyncClient`'s pooled connections belong to the loop that opened them.
        A session may be driven from a notebook's loop and, through a sync entry point,
        from streamchat's private loop; so a client made on another loop is retired
        (closed on its own loop) and a new one made for this loop.
        """
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            _retire(self._client, self._client_loop)
            self._client = None
        if self._client is None or self._client.is_closed:
            timeout = httpx.Timeout(
                connect=self.policy.connect_timeout,
                read=None,  # `stream` bounds the wait for the response's start, and the stall watch each later one
                write=self.policy.read_timeout,
                pool=self.policy.connect_timeout,
            )
            self._client = make_client(
                self.http_transport, base_url=self.base_url, headers=self._headers, timeout=timeout
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the pooled connections. Safe to call more than once."""
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is not None:
            if loop is asyncio.get_running_loop():
                await client.aclose()
            else:
                _retire(client, loop)

    def describe(self) -> str:
        return f"{self.name} {self.model} at {self.base_url}"

    async def reachable(self, timeout: float) -> bool:
        """Whether anything answers HTTP at the base URL (any status: a 401 or 404 still answers)."""
        try:
            async with httpx.AsyncClient(timeout=timeout, verify=verify_tls(self.base_url)) as client:
                await client.get(self.base_url)
        except httpx.HTTPError:
            return False
        return True

    # -- streaming ------------------------------------------------------------------------------

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderDelta, None]:
        with_tools = bool(request.tools) and not self._tools_rejected
        if request.tools and not with_tools:
            yield self._tools_notice()
        body = self.build_body(request, with_tools=with_tools)
        # The request, its retries, the fallback without tools and the reading of the body are
        # one loop in this one generator: each generator between httpx and the consumer would
        # cost a step per delta.
        retry = 0
        while True:
            yielded = False
            try:
                try:
                    # One deadline for the response to start (`read_timeout`), lifted once it has: from then
                    # on the stall watch bounds each wait, and no timer is set and cancelled per read.
                    answer = asyncio.timeout(self.policy.read_timeout)
                    async with answer, self.client().stream("POST", self.path, json=body) as response:
                        answer.reschedule(None)
                        if response.status_code >= 400:
                            raise await self._status_error(response, tools_sent="tools" in body)
                        media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                        if media_type == "application/json":
                            raw = await self._read_all(response)
                            try:
                                whole = json.loads(raw)
                            except ValueError as exc:
                                raise BackendStreamError(
                                    f"{self.name} answered JSON that does not parse: {exc}"
                                ) from exc
                            for delta in self.parse_body(whole):
                                yielded = True
                                yield delta
                        else:
                            # The hot loop: one step per network chunk, no generator between httpx and
                            # this one (each would cost a step per chunk), one stall timer for the body.
                            decoder = self.stream_decoder(response)
                            feed, limit, received = decoder.feed, self.policy.max_response_bytes, 0
                            watch = _StallWatch(self.policy.stall_timeout)
                            now = watch.loop.time
                            try:
                                async with contextlib.aclosing(_raw_chunks(response)) as chunks:
                                    watch.start()
                                    async for chunk in chunks:
                                        watch.since = None
                                        received += len(chunk)
                                        if received > limit:
                                            raise self._too_big()
                                        for delta in feed(chunk):
                                            yielded = True
                                            yield delta
                                        if decoder.complete:
                                            break  # the backend said the stream is over
                                        watch.since = now()
                            except asyncio.CancelledError:
                                if watch.timed_out():
                                    raise self._stalled() from None
                                raise
                            finally:
                                watch.close()
                            for delta in decoder.end():
                                yielded = True
                                yield delta
                    return
                except self._transport_errors as exc:
                    raise self._transport_error(httpx_error(exc)) from exc
                except TimeoutError:
                    if not answer.expired():
                        raise
                    raise BackendTimeoutError(
                        f"{self.name} at {self.base_url} did not answer within {self.policy.read_timeout:g} s"
                    ) from None
            except _ToolsRejected:
                self._tools_rejected = True
                yield self._tools_notice()
                body, retry = self.build_body(request, with_tools=False), 0
            except BackendError as exc:
                if yielded or not exc.retryable or retry >= self.policy.retries:
                    if retry:
                        exc.message = f"{exc.message} (after {retry + 1} attempts)"
                        exc.args = (exc.message,)
                    raise
                retry_after = exc.retry_after if isinstance(exc, _StatusError) else None
                if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                    raise
                delay = self.policy.delay(retry, retry_after)
                retry += 1
                recorder().retry(self.name)  # counted in streamchat_retries_total
                logger.info("%s: %s; retry %d/%d in %.2f s", self.name, exc.message, retry, self.policy.retries, delay)
                await asyncio.sleep(delay)

    def _tools_notice(self) -> ThinkingDelta:
        return ThinkingDelta(kind="status", text=f"{self.model} does not support tools: answering without them")

    def _transport_error(self, exc: httpx.TransportError) -> BackendError:
        """What a failure of the connection means for the user."""
        if isinstance(exc, httpx.ConnectError):
            return BackendUnreachableError(
                f"cannot reach {self.name} at {self.base_url} ({exc}): {self.unreachable_hint()}"
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return BackendUnreachableError(
                f"{self.name} at {self.base_url} did not accept a connection within "
                f"{self.policy.connect_timeout:g} s: {self.unreachable_hint()}"
            )
        if isinstance(exc, httpx.PoolTimeout):  # every pooled connection is busy with other turns
            return BackendTimeoutError(
                f"every connection to {self.name} at {self.base_url} stayed busy for "
                f"{self.policy.connect_timeout:g} s: too many turns at once, try again in a moment"
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeoutError(
                f"{self.name} at {self.base_url} did not answer within {self.policy.read_timeout:g} s"
            )
        # connection dropped, broken chunked framing…
        return BackendStreamError(
            f"the connection to {self.name} at {self.base_url} broke: {exc or type(exc).__name__}", retryable=True
        )

    async def _read_all(self, response: httpx.Response) -> bytes:
        limit, received, parts = self.policy.max_response_bytes, 0, []
        async with contextlib.aclosing(self.guard_stalls(response.aiter_bytes())) as chunks:
            async for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise self._too_big()
                parts.append(chunk)
        return b"".join(parts)

    async def _status_error(self, response: httpx.Response, *, tools_sent: bool) -> Exception:
        head = bytearray()
        async with contextlib.aclosing(self.guard_stalls(response.aiter_bytes())) as chunks:
            async for chunk in chunks:
                head += chunk
                if len(head) >= MAX_ERROR_BODY:
                    break  # enough for a message; closing the response drops the rest
        raw = bytes(head[:MAX_ERROR_BODY])
        detail = error_detail(raw) or response.reason_phrase or "no details"
        status = response.status_code
        if status in (400, 500) and tools_sent and any(phrase in detail.lower() for phrase in TOOLS_REJECTED):
            return _ToolsRejected(detail)
        retryable = status in RETRYABLE_STATUSES or status >= 500
        error = _StatusError(
            self.explain(status, detail), status_code=status, code=f"http_{status}", retryable=retryable
        )
        error.retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return error

    def _too_big(self) -> BackendStreamError:
        return BackendStreamError(
            f"{self.name} at {self.base_url} sent more than {self.policy.max_response_bytes} bytes in one response: "
            "ended the turn (the bound is the setting backend_max_response_bytes)"
        )

    def too_long(self, what: str = "a line") -> BackendStreamError:
        """The error for a line or event longer than `max_line_bytes`."""
        return BackendStreamError(
            f"{self.name} at {self.base_url} sent {what} of more than {self.policy.max_line_bytes} bytes: "
            "ended the turn (the bound is the setting backend_max_line_bytes)"
        )

    def _stalled(self) -> BackendTimeoutError:
        return BackendTimeoutError(
            f"{self.name} at {self.base_url} stopped sending for {self.policy.stall_timeout:g} s: ended the turn"
        )

    async def guard_stalls(self, items: AsyncIterable[T]) -> AsyncGenerator[T, None]:
        """Re-yield `items`, failing with `BackendTimeoutError` if one takes longer than the stall timeout."""
        watch = _StallWatch(self.policy.stall_timeout)
        iterator = aiter(items)
        try:
            now = watch.loop.time
            watch.start()
            async for item in iterator:
                watch.since = None
                yield item
                watch.since = now()
        except asyncio.CancelledError:
            if watch.timed_out():
                raise self._stalled() from None
            raise
        finally:
            watch.close()
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()


class _StallWatch:
    """One timer for a whole body, which cancels the reading task when one read waits longer than `stall` s.

    Cheaper than an `asyncio.timeout` around each read (a timer made and cancelled per
    chunk): a read notes when it starts waiting (`since = loop.time()`) and clears the note
    when it gets its chunk (`since = None`); the timer, when it fires, checks the note and
    sets itself again. The cancellation it causes is told from any other by `timed_out`, as
    `asyncio.timeout` does. A body is read by one task (the one of the first read, `start`).
    """

    def __init__(self, stall: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.stall = stall
        self.since: float | None = None
        """When the read in progress started waiting; None between reads."""
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._expired = False
        self._handle = self.loop.call_at(self.loop.time() + stall, self._check)

    def start(self) -> None:
        """The first read starts waiting, in the task that reads the body; later ones set `since = loop.time()`."""
        task = self._task = asyncio.current_task()
        if task is not None:
            self._cancelling = task.cancelling()
        self.since = self.loop.time()

    def _check(self) -> None:
        since, now = self.since, self.loop.time()
        if since is not None and now - since >= self.stall and self._task is not None:
            self._expired = True
            self._task.cancel()
            return
        self._handle = self.loop.call_at((now if since is None else since) + self.stall, self._check)

    def timed_out(self) -> bool:
        """After a `CancelledError`: True if the watch caused it and nothing else cancelled the task (then it is taken back)."""
        if not self._expired or self._task is None:
            return False
        return self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        """Stop the timer."""
        self._handle.cancel()


def _raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body's chunks as httpx's transport gives them.

    A body sent as is (no `Content-Encoding`) is read from `response.stream` itself:
    `aiter_bytes` and `aiter_raw` would each add a generator step per chunk (to decode
    nothing, and to count bytes this module counts). Any other body is decoded by
    `aiter_bytes`.
    """
    if response.headers.get("content-encoding", "identity").strip().lower() in ("identity", ""):
        return cast(AsyncGenerator[bytes, None], aiter(cast(httpx.AsyncByteStream, response.stream)))
    return cast(AsyncGenerator[bytes, None], response.aiter_bytes())


def _retire(client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop | None) -> None:
    """Close `client` on the loop that owns its connections, if that loop still runs.

    A loop that is already closed took its connections with it; one that exists but is
    not running cannot be reached from here, and its connections close with it.
    """
    if loop is not None and loop.is_running() and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(client.aclose(), loop)


def error_detail(raw: bytes) -> str:
    """The message inside an error body: Ollama's `{"error": "…"}`, OpenAI's `{"error": {"message": …}}`, or text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return error
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            if isinstance(message, str):
                return message
        detail = data.get("detail") or data.get("message")
        if isinstance(detail, str):
            return detail
    return text[:500]


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
