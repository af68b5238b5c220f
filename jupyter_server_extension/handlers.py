# jupyter_server's `authorized` decorator is untyped, and tornado's handler methods take *args:
# mypy: disable-error-code="untyped-decorator,override"
"""The REST, SSE and WebSocket routes (listed in docs/architecture.md).

Handlers are thin: parse, authorize, call the service, encode. The service is the
`ChatService` the extension put in the Tornado settings under `SERVICE_SETTING`; handlers
know nothing else of the extension (its class is configurable).

Streaming handlers write the events ready at once in one write, wait for the socket
only when it did not take a write at once (an SSE response) or before writing the next
batch (a WebSocket), and give the service a `ClientBuffer` per connection, so a client
that does not read is dropped once more than `max_buffered_bytes` wait for it. A WebSocket handles at most
`max_messages_in_flight` of its messages at once; more get an `error` reply.

Every route requires a Jupyter identity (`tornado.web.authenticated` + `authorized` on
the resource ``streamchat``; the WebSocket uses `ws_authenticated`), even when the
server allows unauthenticated access. Errors are JSON ``{"error": {"code", "message"}}``
with the error's own `status` (see `streamchat.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import inspect
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, assert_never

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from streamchat.analytics import recorder
from streamchat.errors import (
    ClientMessageError,
    MessageTooLargeError,
    ReplayGapError,
    StoreUnavailableError,
    StreamChatError,
    TooManyInFlightError,
)
from streamchat.events import Event
from streamchat.session import ToolAction

from . import wire
from .protocols import parse_stream_request
from .service import SERVICE_SETTING, ChatService, ClientBuffer, Follower, new_error_id

__all__ = ["RESOURCE", "owner_of", "page_policy", "routes"]

RESOURCE = "streamchat"
STATIC = Path(__file__).parent / "static"
SESSION = r"(?P<session_id>[^/]+)"


HTTP_HINTS = {
    401: "log in to Jupyter, or send an 'Authorization: token <token>' header",
    403: "log in to Jupyter, or send an 'Authorization: token <token>' header",
    404: "no such route: the API lives under api/streamchat/",
    405: "this route does not take that method",
}
"""What to do, for a refusal that carries no message of its own."""
XSRF_HINT = (
    "a browser must send the '_xsrf' cookie's value as the '_xsrf' argument or the X-XSRFToken header "
    "(scripts: send an 'Authorization: token ...' header)"
)

SERVER_TOKEN_OWNER = "\0server-token"  # cannot collide with a user name taken from a request


async def owner_of(handler: JupyterHandler) -> str:
    """The identity a session belongs to: the Jupyter user, or the holder of the server token.

    Precedence is jupyter_server's own: a login cookie's user stays that user even when
    the request also carries the server token. With jupyter_server's default identity
    provider a request carrying the shared server token but no login cookie gets a fresh
    anonymous user every time; all such requests come from whoever holds that one token,
    so they share one owner.
    """
    provider = handler.identity_provider
    token = provider.token
    given = provider.get_token(handler) or ""
    if token and provider.is_token_authenticated(handler) and hmac.compare_digest(given, token):
        cookie_user = provider.get_user_cookie(handler)
        if inspect.isawaitable(cookie_user):
            cookie_user = await cookie_user
        if cookie_user is None:
            return SERVER_TOKEN_OWNER
    return str(handler.current_user.username)


def _unsent_bytes(stream: IOStream | None) -> int:
    """Bytes written to `stream` that the client has not taken yet (0 once it is closed).

    tornado counts them in `IOStream._write_buffer` (since tornado 5) but has no public accessor.
    """
    if stream is None or stream.closed():
        return 0
    return len(stream._write_buffer)


def _send_chunk(handler: web.RequestHandler, stream: IOStream, data: bytes) -> bool:
    """Send `data` as the response's next body chunk straight to the socket; False when tornado must write it.

    What `RequestHandler.write` + `flush` do for a chunk of a response whose head is sent, without their
    futures and buffers: the chunk framing of `HTTP1Connection.write` (when it frames), then one `send`.
    The caller has checked that `stream` is open with nothing unsent (`_SseHandler._push`). Only on a
    plain socket, with nothing buffered in the handler and no output transform (e.g. gzip); bytes the
    socket does not take go to `IOStream.write`, which sends them in order and meets a broken connection
    as usual (it closes the stream).
    """
    connection = handler.request.connection
    if (
        type(stream) is not IOStream
        or not handler._headers_written
        or handler._write_buffer
        or handler._transforms
        or not isinstance(connection, HTTP1Connection)
        or connection._expected_content_remaining is not None
    ):
        return False
    if connection._chunking_output:
        data = b"%x\r\n%b\r\n" % (len(data), data)
    try:
        sent = stream.socket.send(data)
    except OSError:  # would block, or broken: tornado's write waits, or meets the error and closes the stream
        sent = 0
    if sent < len(data):
        stream.write(data[sent:])  # its future reports nothing a closed stream does not (tornado retrieves it)
    return True


def _outcome_seen(write: asyncio.Future[None]) -> None:
    """Retrieve a write's outcome: a socket that closed meanwhile is not an error worth reporting."""
    if not write.cancelled():
        write.exception()


class _StreamChatMixin(JupyterHandler):
    """What every streamchat handler shares: the service, JSON errors."""

    auth_resource = RESOURCE

    @property
    def service(self) -> ChatService:
        """The chat service holding the sessions, which the extension put in the Tornado settings."""
        service: ChatService = self.settings[SERVICE_SETTING]
        return service

    _request_id: str | None = None

    @property
    def request_id(self) -> str:
        """An id for this request, given to the client with a failure and logged with its details."""
        if self._request_id is None:
            self._request_id = new_error_id()
        return self._request_id

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Answer ``{"error": {"code", "message"}}`` saying what to do; never a traceback or internals."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, StreamChatError) and exc.status < 500:
            status_code, code, message = exc.status, exc.code, exc.message
            self.set_status(status_code)
        elif isinstance(exc, StoreUnavailableError):  # its cause names the store's address: logged, not told
            self.set_status(exc.status)
            code = exc.code
            message = f"{exc.message} (request id {self.request_id} in the server log)"
        elif isinstance(exc, web.HTTPError):
            code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
                status_code, "http_error"
            )
            given = exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
            if given and "xsrf" in given.lower() and "X-XSRFToken" not in given:  # tornado's own check
                given += f": {XSRF_HINT}"
            message = given or HTTP_HINTS.get(status_code, self._reason)
        else:
            code = exc.code if isinstance(exc, StreamChatError) else "internal_error"
            message = (
                "the server failed to answer: try again; if it persists, tell the server's admin "
                f"(request id {self.request_id} in the server log)"
            )
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(wire.error_body(code, message)))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Log expected API errors in one line; keep tornado's traceback for real failures."""
        if isinstance(value, StreamChatError) and value.status < 500:
            # %r: the message may quote the client's input (a JSON key holding line breaks…)
            self.log.info(
                "streamchat: %s %r -> %s %r", self.request.method, self.request.path, value.code, value.message
            )
        elif isinstance(value, StoreUnavailableError):
            self.log.warning(
                "streamchat: request id %s: %s %r -> 503: %s: %s",
                self.request_id,
                self.request.method,
                self.request.path,
                value.message,
                value.__cause__,
            )
        elif not isinstance(value, web.HTTPError):
            self.log.error(
                "streamchat: request id %s failed: %s %r", self.request_id, self.request.method, self.request.path
            )
            super().log_exception(typ, value, tb)
        else:
            super().log_exception(typ, value, tb)


class ApiHandler(_StreamChatMixin, APIHandler):
    """Base of the REST and SSE routes."""

    _follower: Follower | None = None
    """The turn this request follows, if any: a disconnect stops following it."""

    def on_connection_close(self) -> None:
        """The client went away: stop following (the turn is cancelled after the grace window)."""
        if self._follower is not None:
            self._follower.close()
        super().on_connection_close()

    def chat_request(self) -> wire.ChatRequest:
        """The request body as a `ChatRequest`; 413 when too large, 400 when malformed."""
        return wire.parse_chat_request(self.request_body())

    def request_body(self) -> bytes:
        """The request body; 413 when too large."""
        if len(self.request.body) > self.service.limits.max_body_size:
            raise MessageTooLargeError(
                f"the request body is over {self.service.limits.max_body_size} bytes: send a shorter message "
                "(a useChat or AG-UI client sends the whole conversation: send only the newest message, see the README)"
            )
        return self.request.body

    owner: str
    """The identity owning the sessions this request may touch (set by `prepare`)."""

    _holding_login_cookie = False
    _held_login_cookie: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    async def prepare(self) -> None:
        """Authenticate as jupyter_server does, then find the request's `owner`.

        The login cookie jupyter_server sets while authenticating is held until the owner is
        known (`set_secure_cookie`), then set as it would have been, unless it is cleared.
        """
        self._holding_login_cookie = True
        try:
            await super().prepare()
            owner = await owner_of(self) if self.current_user else None
        except BaseException:
            self._set_held_login_cookie()
            raise
        if owner != SERVER_TOKEN_OWNER:
            self._set_held_login_cookie()
            if owner is not None:
                self.owner = owner
            return  # no user: the route refuses the request (403)
        self.owner = owner
        # jupyter_server would persist the one-off anonymous user it made for this request in a
        # login cookie; a script keeping cookies would then turn into that user on its next
        # request and lose its sessions. It stays the token holder: the cookie is not set (no
        # signing for nothing), and one the client sent (expired, or from another server) is cleared.
        self._holding_login_cookie = False
        self._held_login_cookie = None
        name = self.identity_provider.get_cookie_name(self)
        if name in self.request.cookies:
            self.clear_cookie(name, path=self.base_url)

    def set_secure_cookie(
        self, name: str, value: str | bytes, expires_days: float | None = 30, version: int | None = None, **kwargs: Any
    ) -> None:
        """Set a signed cookie; jupyter_server's login cookie waits while `prepare` authenticates."""
        if self._holding_login_cookie and name == self.identity_provider.get_cookie_name(self):
            self._held_login_cookie = ((name, value, expires_days, version), kwargs)
            return
        self.set_signed_cookie(name, value, expires_days, version, **kwargs)

    def _set_held_login_cookie(self) -> None:
        """Set the login cookie held during authentication, if any, as jupyter_server asked."""
        self._holding_login_cookie = False
        held, self._held_login_cookie = self._held_login_cookie, None
        if held is not None:
            args, kwargs = held
            self.set_signed_cookie(*args, **kwargs)

    def check_explicit_xsrf(self) -> None:
        """Refuse a cookie-authenticated request without the XSRF token itself; no Referer fallback.

        jupyter_server's `check_xsrf_cookie` lets a GET through on a same-host `Referer`
        alone, which any `<img src>` on a Jupyter page sends: a GET that starts a turn needs
        the `_xsrf` cookie's value in the `_xsrf` argument or the `X-XSRFToken` header, as a
        POST does, unless the request carries a token (Authorization header).
        """
        if self.token_authenticated or self.settings.get("disable_check_xsrf", False):
            return
        if not self.check_origin():
            raise web.HTTPError(404)
        try:
            web.RequestHandler.check_xsrf_cookie(self)
        except web.HTTPError as exc:
            raise web.HTTPError(403, f"starting a turn: {XSRF_HINT}") from exc


class _SseHandler(ApiHandler):
    """Writes a followed turn as Server-Sent Events, with heartbeats; a disconnect stops following."""

    _client: ClientBuffer | None = None

    @property
    def client(self) -> ClientBuffer:
        """This response's byte budget: past it, the response is dropped."""
        if self._client is None:
            self._client = self.service.client_buffer(unsent=self._unsent, drop=self._drop)
        return self._client

    def _socket(self) -> IOStream | None:
        stream: IOStream | None = getattr(self.request.connection, "stream", None)
        return stream

    def _unsent(self) -> int:
        return _unsent_bytes(self._socket())

    def _drop(self) -> None:
        self.log.warning(
            "streamchat: dropped a client of %s that does not read: over %d bytes were waiting for it",
            self.request.path,
            self.service.limits.max_buffered_bytes,
        )
        socket = self._socket()
        if socket is not None:
            socket.close()  # the pending flush fails, which ends `stream`

    @property
    def retry_ms(self) -> int:
        """The `retry:` of our SSE: a browser's EventSource reconnects after it, well within the grace window."""
        return int(self.service.limits.disconnect_grace * 500)

    async def _send(self) -> None:
        """Flush what was written; wait for the socket only when it did not take everything at once.

        tornado hands the bytes to the socket at once (one send); its future resolves on a later turn of the loop.
        When nothing is left unsent, waiting for that future would only cost a round trip of the loop per event:
        the next write goes on. Bytes the socket did not take (a client reading slowly) are waited for.
        """
        sent = self.flush()
        if sent.done() or self._unsent():
            await sent  # a closed socket raises StreamClosedError here

    def _push(self, encoder: wire.NativeSse, event: Event) -> bool:
        """Write a live event at once, from the turn's task, when the socket has nothing unsent (`Follower.pushed`).

        The response's task is not woken for it (one wake-up less per token). A socket still sending
        (a client reading slowly) gets its events through the follower's inbox and byte budget instead.
        """
        socket = self._socket()
        if socket is None or socket.closed() or _unsent_bytes(socket):
            return False
        data = encoder.encode((event,))
        if _send_chunk(self, socket, data):
            return True
        self.write(data)
        sent = self.flush()
        if sent.done():
            _outcome_seen(sent)
        else:
            sent.add_done_callback(_outcome_seen)
        return True

    async def stream(self, follower: Follower, encoder: wire.SseEncoder | None = None) -> None:
        """Send the turn's events from the follower's position until `done` (in our protocol by default)."""
        self._follower = follower
        heartbeat = self.service.limits.heartbeat_interval or None
        if encoder is None:
            encoder = wire.NativeSse(self.retry_ms)
        for name, value in encoder.headers.items():
            self.set_header(name, value)
        if isinstance(encoder, wire.NativeSse):
            encoder.frame = follower.frame  # each event's frame is encoded once, for all its followers
            native = encoder
            follower.push = lambda event: self._push(native, event)
        socket = self._socket()
        if socket is not None:
            # each event at once, as the WebSocket sends: with Nagle's algorithm a token waits for the client to
            # acknowledge the previous segment (tornado turns it back on once the response ends)
            socket.set_nodelay(True)
        recorder().stream_opened("sse", self.owner)
        try:
            await self._send()
            while not follower.ended:
                events = await follower.next_events(timeout=heartbeat)
                if events:
                    self.write(encoder.encode(events))
                elif not follower.ended:
                    self.write(wire.sse_comment("ping"))
                else:
                    break
                await self._send()
        except (StreamClosedError, ReplayGapError):
            pass  # the client left, or fell too far behind: it may resume with Last-Event-ID
        finally:
            follower.close()
            recorder().stream_closed("sse", self.owner)
        if not self.request.connection.stream.closed():  # type: ignore[union-attr]
            await self.finish(set_content_type="text/event-stream")


class HealthHandler(ApiHandler):
    """``GET api/streamchat/health``."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self) -> None:
        """Status, version, provider and reachability."""
        await self.finish(json.dumps(await self.service.health()))


class ToolsHandler(ApiHandler):
    """``GET api/streamchat/tools``."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self) -> None:
        """The tools the model may call."""
        await self.finish(json.dumps(await self.service.tool_definitions()))


class ChatHandler(ApiHandler):
    """``POST api/streamchat/chat``: the whole answer as JSON."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def post(self) -> None:
        """Run a turn and answer its `ChatResult`."""
        request = self.chat_request()
        self._follower = await self.service.start_turn(self.owner, request.session_id, request.message)
        result = await self.service.collect(self._follower)
        await self.finish(result.model_dump_json())


class ChatStreamHandler(_SseHandler):
    """``POST api/streamchat/chat/stream``: the turn as SSE, in our protocol, the AI SDK's or AG-UI's."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def post(self) -> None:
        """Run a turn and stream its events in the request's protocol (`protocols.choose_protocol`)."""
        protocol = self.get_query_argument("protocol", None)
        request = parse_stream_request(self.request_body(), protocol, retry_ms=self.retry_ms)
        follower = await self.service.start_turn(
            self.owner, request.session_id, request.message, create_missing=request.create_missing, client=self.client
        )
        await self.stream(follower, request.encoder)


class SessionStreamHandler(_SseHandler):
    """``GET api/streamchat/sessions/{id}/stream?message=…``: SSE for `EventSource`, resumable."""

    @web.authenticated
    @authorized(action="write", resource=RESOURCE)
    async def get(self, session_id: str) -> None:
        """Resume with `Last-Event-ID`, or start a turn (creating the named session if needed)."""
        last_event_id = self.request.headers.get("Last-Event-ID")
        if last_event_id is not None:
            turn_id, last_seq = wire.parse_last_event_id(last_event_id)
            follower = await self.service.resume(self.owner, session_id, last_seq, turn_id, client=self.client)
            if follower is None:
                self.set_status(204)  # nothing left to send: tells EventSource to stop reconnecting
                await self.finish(set_content_type="text/event-stream")
                return
        else:
            self.check_explicit_xsrf()  # starting a turn changes state: an <img> must not be able to do it
            message = self.get_query_argument("message", None)
            follower = await self.service.start_turn(
                self.owner, session_id, message, create_missing=True, client=self.client
            )
        await self.stream(follower)


class SessionHandler(ApiHandler):
    """``GET`` / ``DELETE api/streamchat/sessions/{id}``."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self, session_id: str) -> None:
        """The session's history."""
        history = await self.service.history(self.owner, session_id)
        body = {"session_id": session_id, "history": [m.model_dump(mode="json") for m in history]}
        await self.finish(json.dumps(body))

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def delete(self, session_id: str) -> None:
        """Stop the running turn, if any, and forget the session."""
        await self.service.delete(self.owner, session_id)
        self.set_status(204)
        await self.finish()


class ChatWebSocketHandler(_StreamChatMixin, WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``WS api/streamchat/ws``: full duplex chat on any number of the user's sessions."""

    owner: str
    _pumps: dict[str, tuple[Follower, asyncio.Task[None]]]
    _tasks: set[asyncio.Task[None]]
    _client: ClientBuffer
    _last_session: str | None = None
    _counted = False  # in the recorder's open streams

    def set_default_headers(self) -> None:
        """No page headers on a WebSocket upgrade (as jupyter_server's kernel socket)."""

    @property
    def max_message_size(self) -> int:
        """Frames over this size are refused by tornado (the socket closes with 1009)."""
        return self.service.limits.max_body_size

    @ws_authenticated
    @authorized(action="write", resource=RESOURCE)
    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authenticate and authorize, then upgrade."""
        self.owner = await owner_of(self)
        self._pumps = {}
        self._tasks = set()
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Send each message at once: tokens are small, and Nagle's algorithm would hold them ~40 ms."""
        super().open(*args, **kwargs)
        self.set_nodelay(True)
        self._client = self.service.client_buffer(unsent=self._unsent, drop=self._drop)
        recorder().stream_opened("websocket", self.owner)
        self._counted = True

    def on_message(self, message: str | bytes) -> None:
        """Handle a client message in a task; bad ones, and ones past the in-flight limit, get an `error` reply."""
        try:
            parsed = wire.parse_client_message(message)
        except ClientMessageError as exc:
            self._reply_soon(wire.ws_error(exc.code, exc.message))
            return
        limit = self.service.limits.max_messages_in_flight
        if len(self._tasks) >= limit:
            refused = TooManyInFlightError(
                f"{limit} messages of this socket are still being handled: wait for their replies before sending more"
            )
            self._reply_soon(wire.ws_error(refused.code, refused.message))
            return
        self._spawn(self._handle(parsed), self._tasks)

    def _spawn(self, work: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]] | None) -> asyncio.Task[None]:
        """Run `work` in a task whose failure, if any, is logged (a socket's tasks never fail silently)."""
        task = asyncio.get_running_loop().create_task(work)
        if tasks is not None:
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        task.add_done_callback(self._log_failure)
        return task

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("streamchat: a WebSocket task failed", exc_info=exc)

    async def _handle(self, message: wire.ClientMessage) -> None:
        try:
            await self._dispatch(message)
        except StreamChatError as exc:
            await self._send(wire.ws_error(exc.code, exc.message))

    async def _dispatch(self, message: wire.ClientMessage) -> None:
        service = self.service
        if isinstance(message, wire.ChatMessage):
            follower = await service.start_turn(self.owner, message.session_id, message.message, client=self._client)
            self._last_session = follower.session_id
            self._pumps[follower.session_id] = (follower, self._spawn(self._pump(follower), None))
        elif isinstance(message, wire.ToolsList):
            tools = await service.tool_definitions()
            await self._send(json.dumps({"type": "tools.list", "tools": tools}))
        elif isinstance(message, wire.ChatClear):
            await service.clear(self.owner, self._session(message.session_id))
        elif isinstance(message, wire.ChatCancel):
            session_id = self._session(message.session_id)
            if not await service.cancel(self.owner, session_id):
                raise StreamChatError(f"no turn is running in session {session_id!r}", code="not_running")
        else:
            await self._control_tool(message)

    async def _control_tool(self, message: wire.ToolControl) -> None:
        if message.session_id is not None:
            await self.service.open_session(self.owner, message.session_id)
            sessions = [message.session_id]
        else:
            sessions = list(self._pumps)
        action: ToolAction
        match message.type:
            case "tool.cancel":
                action = "cancel"
            case "tool.pause":
                action = "pause"
            case "tool.resume":
                action = "resume"
            case unknown:
                assert_never(unknown)
        for session_id in sessions:
            if await self.service.control_tool(session_id, message.call_id, action):
                return
        raise StreamChatError(f"no running tool call {message.call_id!r} to {action}", code="not_running")

    def _session(self, session_id: str | None) -> str:
        chosen = session_id or self._last_session
        if chosen is None:
            raise StreamChatError("no session: give a session_id", code="bad_message")
        return chosen

    async def _pump(self, follower: Follower) -> None:
        try:
            while not follower.ended:
                writes = []
                gone = False
                for event in await follower.next_events():
                    sent = self._write(wire.ws_event(event))
                    if sent is None:
                        gone = True
                        break
                    writes.append(sent)
                # one wait per batch paces the turn to the client; every write's outcome is collected
                results = await asyncio.gather(*writes, return_exceptions=True)
                if gone or any(isinstance(r, Exception) for r in results):
                    break
        except ReplayGapError:
            pass
        finally:
            follower.close()
            if self._pumps.get(follower.session_id, (None,))[0] is follower:
                del self._pumps[follower.session_id]

    def _unsent(self) -> int:
        connection = self.ws_connection
        return _unsent_bytes(connection.stream if connection is not None else None)

    def _drop(self) -> None:
        self.log.warning(
            "streamchat: dropped a WebSocket that does not read: over %d bytes were waiting for it",
            self.service.limits.max_buffered_bytes,
        )
        connection = self.ws_connection
        if connection is not None and connection.stream is not None:
            connection.stream.close()  # tornado then aborts the socket and calls on_close

    def _write(self, text: str) -> asyncio.Future[None] | None:
        """Start writing one message; None when the socket is gone, or over its byte budget (then dropped)."""
        if not self._client.admit():
            return None
        try:
            return self.write_message(text)
        except WebSocketClosedError:
            return None

    async def _send(self, text: str) -> None:
        """Write one message and wait until the socket has taken it (or is gone)."""
        sent = self._write(text)
        if sent is not None:
            with contextlib.suppress(WebSocketClosedError, StreamClosedError):
                await sent

    def _reply_soon(self, text: str) -> None:
        """Write one message without waiting for it (the byte budget bounds such replies)."""
        sent = self._write(text)
        if sent is not None:
            sent.add_done_callback(_outcome_seen)

    def on_close(self) -> None:
        """The socket closed: stop following its turns (they are cancelled after the grace window)."""
        if self._counted:
            self._counted = False
            recorder().stream_closed("websocket", self.owner)
        for follower, pump in list(getattr(self, "_pumps", {}).values()):
            follower.close()
            pump.cancel()


def page_policy(*, remote_images: bool) -> str:
    """The page's Content-Security-Policy: its own scripts, styles and API only, no inline code.

    Model output is sanitized before it is shown; the policy is the second wall: even
    markup that got through cannot run a script, load an image from elsewhere (unless
    remote images are on), submit a form, restyle the page inline or re-base its links.
    """
    images = "https:" if remote_images else "'none'"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "connect-src 'self'",  # the API and its WebSocket ('self' covers ws: and wss: of this origin)
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'self'",
        ]
    )


class _LoginPageMixin(JupyterHandler):
    """Pages answer a visitor without credentials 403, never a redirect or a 200.

    `tornado.web.authenticated` (and jupyter_server's own check when unauthenticated
    access is off) would answer GET/HEAD with a 302 to the login page. The 403 keeps every
    route's answer to an anonymous request a refusal, and its body still takes a browser
    to the login page (a link, and an immediate refresh to it).
    """

    def redirect(self, url: str, permanent: bool = False, status: int | None = None) -> None:
        """Turn the login redirect of an anonymous request into a 403; other redirects pass."""
        if self.current_user:
            super().redirect(url, permanent, status)
            return
        target = html.escape(url, quote=True)
        self.clear()
        self.set_status(403)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            f'<!doctype html><meta http-equiv="refresh" content="0; url={target}">'
            f'<title>streamchat: log in</title><p>Log in to Jupyter to use streamchat: <a href="{target}">log in</a>.</p>'
        )


class _PageMixin(_LoginPageMixin, _StreamChatMixin, JupyterHandler):
    """The page and its assets: the login refusal, and the strict `page_policy`."""

    @property
    def content_security_policy(self) -> str:
        """The page's own policy, in place of jupyter_server's (which allows any source)."""
        return page_policy(remote_images=self.service.settings.remote_images)


class PageHandler(_PageMixin):
    """``GET streamchat/``: the chat page."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self) -> None:
        """The page; it also makes sure the `_xsrf` cookie the page sends back is set."""
        if not self.request.path.endswith("/"):
            self.redirect(self.request.path + "/")  # the page's links are relative to the directory
            return
        self.xsrf_token  # noqa: B018  (sets the cookie)
        page = (STATIC / "index.html").read_bytes()
        if self.service.settings.remote_images:
            page = page.replace(b'data-remote-images="off"', b'data-remote-images="on"', 1)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        await self.finish(page)


class AssetHandler(_PageMixin, web.StaticFileHandler):
    """``GET streamchat/static/…``: the page's script and vendored libraries, for logged-in users."""

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def get(self, path: str, include_body: bool = True) -> None:
        """Serve one static file."""
        await web.StaticFileHandler.get(self, path, include_body)

    @web.authenticated
    @authorized(resource=RESOURCE)
    async def head(self, path: str) -> None:
        """Headers of one static file."""
        await web.StaticFileHandler.get(self, path, include_body=False)


def routes() -> list[tuple[str, type, dict[str, Any]] | tuple[str, type]]:
    """The extension's routes, relative to the server's base URL."""
    return [
        (r"api/streamchat/health", HealthHandler),
        (r"api/streamchat/tools", ToolsHandler),
        (r"api/streamchat/chat", ChatHandler),
        (r"api/streamchat/chat/stream", ChatStreamHandler),
        (rf"api/streamchat/sessions/{SESSION}/stream", SessionStreamHandler),
        (rf"api/streamchat/sessions/{SESSION}", SessionHandler),
        (r"api/streamchat/ws", ChatWebSocketHandler),
        (r"streamchat/?", PageHandler),
        (r"streamchat/static/(.*)", AssetHandler, {"path": str(STATIC)}),
    ]
