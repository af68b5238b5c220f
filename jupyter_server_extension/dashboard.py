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

The figures come from the process's recorder (`streamchat.analytics`); the handlers only
choose the scope and encode.
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


class _MetricsMixin(ApiHandler):
    def summary(self) -> dict[str, Any]:
        """The caller's summary: their own sessions, or the whole process for the server's own identity."""
        everything = self.owner == SERVER_TOKEN_OWNER
        body = recorder().summary(None if everything else self.owner)
        body["scope"] = "server" if everything else "user"
        return body


class MetricsHandler(_MetricsMixin):
    """``GET api/streamchat/metrics``."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self) -> None:
        """The summary as JSON."""
        await self.finish(json.dumps(self.summary()))


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
        sent: str | None = None
        last = 0.0
        try:
            while not self._gone:
                delay = last + MIN_INTERVAL - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # changes meanwhile are in the summary sent next
                changed.clear()
                summary = self.summary()
                # the same figures again (another user's turn, a stream that opened) are not sent
                content = json.dumps({k: v for k, v in summary.items() if k not in ("version", "now")})
                if content != sent:
                    self.write(_sse("summary", json.dumps(summary)))
                    await self.flush()
                    sent, last = content, time.monotonic()
                try:
                    await asyncio.wait_for(changed.wait(), heartbeat)
                except TimeoutError:
                    self.write(wire.sse_comment("ping"))
                    await self.flush()  # the windows roll on: the next summary may differ too
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
