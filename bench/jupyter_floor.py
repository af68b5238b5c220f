"""The jupyter_server floor of the serving benches: the stamping model's tokens from a bare jupyter_server handler.

A Jupyter Server extension (``jpserver_extensions: {"bench.jupyter_floor": true}``) with one
handler, on the route and with the body of the streamchat extension's ``POST chat/stream``
(``{"message": "COUNT INTERVAL [FIRST]"}``). It is what any extension on jupyter_server
pays and nothing of streamchat's: jupyter_server's request (routing, token
authentication, XSRF and origin checks, default headers, its request log and metrics)
around a body that paces the tokens exactly as `bench/floor_server.py` does (each token
sleeps until it is due and carries its due time) and writes each chunk with one
``socket.send`` once the response head is out: no session, turn, store, events or JSON
encoding, and no login cookie (the extension sets none for the server token's holder).
The frames are `bench/floor_server.py`'s, byte for byte. A one-token turn, "1 0", is one
write of head, token and ``done``, then tornado's end of the body.

Its process is set up as the extension's is: once the server runs, the garbage collector
is tuned alike (`jupyter_server_extension.gc_tuning`; without it, full collections of
jupyter_server's heap stalled all its streams for 150–210 ms now and then).

`bench/server_streams.py` starts it in its own `jupyter server` process, pinned to the
server's core, and measures it with the same client, gaps and load steps as the
extension: the extension's figure over this one is streamchat's own; this one's over
`bench/floor_server.py`'s is jupyter_server's.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from bench.floor_server import done_frame, token_frame
from bench.sse_load import STREAM_PATH
from jupyter_server_extension.gc_tuning import tune_gc


class FloorStreamHandler(APIHandler):
    """``POST`` `STREAM_PATH`: the stamping model's tokens as SSE, with nothing but jupyter_server around them.

    Like the extension's handlers for a request with the server token, it sets no login
    cookie (jupyter_server would sign one for the one-off anonymous user it makes): the
    rest of jupyter_server's request is whole.
    """

    def set_signed_cookie(self, *args: Any, **kwargs: Any) -> None:
        """Set no login cookie (the extension sets none for the server token's holder)."""

    set_secure_cookie = set_signed_cookie  # the name jupyter_server calls (tornado's alias)

    @web.authenticated
    async def post(self) -> None:
        count, interval, *rest = (float(word) for word in json.loads(self.request.body)["message"].split())
        first = rest[0] if rest else interval
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        start = time.time()
        pending: list[bytes] = []  # chunks due at once: one write
        for i in range(int(count)):
            due = start + first + i * interval
            now = time.time()
            if due > now:
                await self._send(pending)
                pending = []
                await asyncio.sleep(due - now)
            elif not interval and not first:
                due = now
            pending.append(token_frame(i + 1, f"{due:.6f}|{i} "))
        pending.append(done_frame(int(count) + 1)[: -len(b"0\r\n\r\n")])  # tornado's finish ends the body
        await self._send(pending)
        self.finish()

    async def _send(self, chunks: list[bytes]) -> None:
        """Write `chunks` (already chunk-framed): the first time with the response head, then straight to the socket."""
        if not self._headers_written:
            # tornado frames what it flushes itself: hand it the payloads, unframed
            self.write(b"".join(_payload(framed) for framed in chunks))
            await self.flush()
            return
        data = b"".join(chunks)
        stream = self.request.connection.stream  # type: ignore[union-attr]
        sent = 0
        if not stream.writing():
            try:
                sent = stream.socket.send(data)
            except BlockingIOError:
                sent = 0
        if sent < len(data):
            stream.write(data[sent:])


def _payload(framed: bytes) -> bytes:
    """The data of one chunk made by `bench.floor_server.chunk`."""
    size, _, rest = framed.partition(b"\r\n")
    return rest[: int(size, 16)]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "bench.jupyter_floor"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.web_app.add_handlers(".*$", [(STREAM_PATH, FloorStreamHandler)])


async def _start_jupyter_server_extension(serverapp: Any) -> None:
    """Tune the garbage collector as the extension does once the server runs (the same process, but for the code)."""
    tune_gc()
