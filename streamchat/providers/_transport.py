"""Which HTTP transport the HTTP providers read their backends with, and what its failures mean.

httpx is the providers' HTTP API either way; below it, one of two transports:

- `aiohttp`: the `httpx-aiohttp` package's transport, on aiohttp's HTTP parser (llhttp,
  in C). A dependency of streamchat, taken whenever it can be imported: a streamed body comes
  as the bytes that arrived, however many HTTP chunks they hold, where httpx's own
  transport gives one chunk at a time, each through several Python layers (h11,
  httpcore). Model servers send every line or event in its own HTTP chunk, so this is most
  of a client's cost per token.
- `httpx`: httpx's own transport (httpcore and h11, pure Python), always there.

The setting `backend_http_transport` chooses: `auto` (aiohttp when installed), `aiohttp`
(an error if not installed) or `httpx`. aiohttp is imported only when its transport is used.

httpx-aiohttp turns most aiohttp errors into httpx's, but not all of them into the right
ones (a dropped connection becomes a `ConnectTimeout`), and some not at all;
`httpx_error` says what each one is, in httpx's terms, so the reliability layer
(`_http`) handles both transports' failures alike.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from typing import Any, Literal

import httpx

from ..errors import ConfigurationError

__all__ = ["TRANSPORTS", "HttpTransport", "choose_transport", "httpx_error", "make_client", "transport_errors"]

HttpTransport = Literal["aiohttp", "httpx"]
"""The transports a provider can read its backend with."""
TRANSPORTS = ("auto", "aiohttp", "httpx")
"""The values of the setting `backend_http_transport`."""
INSTALL_HINT = "pip install httpx-aiohttp"


def aiohttp_installed() -> bool:
    """Whether the aiohttp transport (`httpx-aiohttp`) can be imported."""
    return importlib.util.find_spec("httpx_aiohttp") is not None


def choose_transport(setting: str) -> HttpTransport:
    """The transport `backend_http_transport = setting` names. Raises `ConfigurationError` for one that cannot be had."""
    choice = setting.strip().lower() or "auto"
    if choice not in TRANSPORTS:
        raise ConfigurationError(
            f"backend_http_transport is {setting!r}: set it to one of {', '.join(TRANSPORTS)} "
            "(auto takes aiohttp when it is installed)"
        )
    if choice == "httpx":
        return "httpx"
    if aiohttp_installed():
        return "aiohttp"
    if choice == "aiohttp":
        raise ConfigurationError(
            f"backend_http_transport is aiohttp but httpx-aiohttp is not installed: {INSTALL_HINT}, "
            "or set it to auto or httpx"
        )
    return "httpx"


def make_client(
    transport: HttpTransport, *, base_url: str, headers: dict[str, str], timeout: httpx.Timeout
) -> httpx.AsyncClient:
    """A pooled `httpx.AsyncClient` on `transport` (proxies from the environment, as httpx's own, on both)."""
    if transport == "aiohttp":
        return _aiohttp_client(base_url=base_url, headers=headers, timeout=timeout)
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)


def _aiohttp_client(*, base_url: str, headers: dict[str, str], timeout: httpx.Timeout) -> httpx.AsyncClient:
    """httpx-aiohttp's client, whose aiohttp sessions close with it when it is dropped unclosed.

    An `httpx.AsyncClient` dropped without `aclose()` goes quietly; an aiohttp session
    logs "Unclosed client session" (and its connector "Unclosed connector") as an error.
    A provider whose client is dropped (a session never closed, a client retired from an
    event loop that ended) must not print that: when the client is collected, its sessions
    are closed on their loop if it still runs, and let go quietly if it has ended (their
    sockets are then left to the collector, as httpx's own transport leaves them).
    """
    import asyncio
    import weakref

    import aiohttp
    from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient

    loop = asyncio.get_running_loop()
    transports: list[AiohttpTransport] = []

    class Client(HttpxAiohttpClient):
        def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
            made = super()._init_transport(*args, **kwargs)
            if isinstance(made, AiohttpTransport):
                transports.append(made)
            return made

        def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
            made = super()._init_proxy_transport(*args, **kwargs)
            if isinstance(made, AiohttpTransport):
                transports.append(made)
            return made

    def release(transports: list[AiohttpTransport], loop: asyncio.AbstractEventLoop) -> None:
        for made in transports:
            session = made.client
            if not isinstance(session, aiohttp.ClientSession) or session.closed:
                continue
            if loop.is_closed():  # its sockets went with the loop: only the bookkeeping is left
                connector = session.connector
                session.detach()
                if connector is not None:
                    with contextlib.suppress(StopIteration):  # on a closed loop, closing finishes at once
                        connector.close().__await__().send(None)
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop)

    client = Client(base_url=base_url, headers=headers, timeout=timeout)
    weakref.finalize(client, release, transports, loop)
    return client


def transport_errors(transport: HttpTransport) -> tuple[type[Exception], ...]:
    """The exceptions that mean the connection failed, on `transport`: httpx's, and aiohttp's that get through."""
    if transport == "aiohttp":
        import aiohttp

        return (httpx.TransportError, aiohttp.ClientError)
    return (httpx.TransportError,)


def httpx_error(exc: Exception) -> httpx.TransportError:
    """`exc`, a failure of the connection on either transport, as the httpx error it is.

    An aiohttp error (raised as it is, or the cause of httpx-aiohttp's error) becomes:
    a refused or failed connection `ConnectError`, a connection not made in time
    `ConnectTimeout`, a read that waited too long `ReadTimeout`, and anything else
    (a dropped connection, a broken or malformed response) `ReadError`.
    """
    if "aiohttp" not in sys.modules:  # httpx's own transport: its errors are httpx's
        assert isinstance(exc, httpx.TransportError), exc
        return exc
    import aiohttp

    cause = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
    if not isinstance(cause, aiohttp.ClientError):
        assert isinstance(exc, httpx.TransportError), exc
        return exc
    message = str(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    return httpx.ReadError(message)
