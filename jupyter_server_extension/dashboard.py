# jupyter_server's `authorized` decorator is untyped, and tornado's handler methods take *args:
# mypy: disable-error-code="untyped-decorator,override"
"""The analytics routes: the metrics summary as JSON and as a live SSE stream, and the dashboard page.

- ``GET api/streamchat/metrics``: `Recorder.summary` of the caller's own sessions; the
  holder of the server token (the server's own identity) gets the whole process's;
- ``GET api/streamchat/metrics/stream``: the same summary as SSE (``event: summary``), sent
  at once, then again after each change, at most every `MIN_INTERVAL` (0.45) seconds; a
  ``: ping`` comment when nothing changed for `heartbeat_interval`;
- ``GET streamchat/dashboard``: the page (`static/dashboard.html`), under the chat page's
  strict Content-Security-Policy.

The figures come from the process's recorder (`streamchat.analytics`), or with the Redis
store from every process's (`ChatService.metrics`, a `SharedMetrics`; the live stream then
also looks again every `SHARED_POLL` seconds); the handlers only choose the scope and encode.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from streamchat.analytics import recorder

from . import wire
from .handlers import RESOURCE, SERVER_TOKEN_OWNER, STATIC, ApiHandler, _PageMixin

__all__ = ["MIN_INTERVAL", "DashboardHandler", "MetricsHandler", "MetricsStreamHandler", "routes"]

MIN_INTERVAL = 0.45
"""Shortest time between two summaries on the live stream, in seconds.

A change right after a summary waits this long; 0.45 s leaves the page 50 ms to receive
and draw it, so a dashboard shows a finished turn within 500 ms of its end."""


SHARED_POLL = 1.0
"""With the Redis store, how often the live stream reads the other processes' figures again, in seconds."""


class _MetricsMixin(ApiHandler):
    async def summary(self) -> dict[str, Any]:
        """The caller's summary: their own sessions, or everything for the server's own identity.

        With the Redis store (``shared: true``) these are every server process's figures
        (``partial: true`` when Redis cannot be reached and only this process's are in it)."""
        everything = self.owner == SERVER_TOKEN_OWNER
        scope = None if everything else self.owner
        shared = self.service.metrics
        if shared is not None:
            body = await shared.summary(scope)
        else:
            body = recorder().summary(scope)
            body["partial"] = False
        body["shared"] = shared is not None
        body["scope"] = "server" if everything else "user"
        return body


class MetricsHandler(_MetricsMixin):
    """``GET api/streamchat/metrics``."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self) -> None:
        """The summary as JSON."""
        await self.finish(json.dumps(await self.summary()))


class MetricsStreamHandler(_MetricsMixin):
    """``GET api/streamchat/metrics/stream``: the summary, pushed as it changes."""

    _changed: asyncio.Event | None = None
    _gone = False

    def on_connection_close(self) -> None:
        """The client left: end the stream."""
        self._gone = True
        if self._changed is not None:
            self._changed.set()
        super().on_connection_close()

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self) -> None:
        """Send the summary now and after each change, at most every `MIN_INTERVAL` seconds."""
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        changed = self._changed = asyncio.Event()
        loop, loop_thread = asyncio.get_running_loop(), threading.get_ident()

        def wake() -> None:  # turns may be recorded on other threads (a provider's own loop)
            if threading.get_ident() == loop_thread:
                changed.set()
            else:
                loop.call_soon_threadsafe(changed.set)

        unsubscribe = recorder().subscribe(wake)
        heartbeat = self.service.limits.heartbeat_interval or None
        # other processes' changes wake nothing here: with shared metrics, look again every `SHARED_POLL`
        wait = heartbeat if self.service.metrics is None else min(heartbeat or SHARED_POLL, SHARED_POLL)
        sent: str | None = None
        last = written = 0.0
        try:
            while not self._gone:
                delay = last + MIN_INTERVAL - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # changes meanwhile are in the summary sent next
                changed.clear()
                summary = await self.summary()
                # the same figures again (another user's turn, a stream that opened) are not sent
                content = json.dumps({k: v for k, v in summary.items() if k not in ("version", "now")})
                if content != sent:
                    self.write(_sse("summary", json.dumps(summary)))
                    await self.flush()
                    sent, last = content, time.monotonic()
                    written = last
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    if heartbeat is not None and time.monotonic() - written >= heartbeat - 0.01:
                        self.write(wire.sse_comment("ping"))
                        await self.flush()  # the windows roll on: the next summary may differ too
                        written = time.monotonic()
        except StreamClosedError:
            pass
        finally:
            unsubscribe()
        if not self._gone:
            await self.finish()


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


class DashboardHandler(_PageMixin):
    """``GET streamchat/dashboard``: the analytics page."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self) -> None:
        """The page (its links are relative to ``streamchat/``)."""
        self.xsrf_token  # noqa: B018  (sets the cookie, as the chat page does)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        await self.finish((STATIC / "dashboard.html").read_bytes())


def routes() -> list[tuple[str, type]]:
    """The analytics routes, relative to the server's base URL."""
    return [
        (r"api/streamchat/metrics", MetricsHandler),
        (r"api/streamchat/metrics/stream", MetricsStreamHandler),
        (r"streamchat/dashboard", DashboardHandler),
    ]
