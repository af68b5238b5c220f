"""The serving benchmark's peer: a FastAPI + sse-starlette app streaming `ChatSession` as the extension does.

``POST /api/streamchat/chat/stream`` with JSON ``{"message": …}`` and the header
``Authorization: token bench-token`` starts a new `ChatSession` on the `StampingModel` of
`bench/sse_load.py` (kept in a dict, as the extension keeps its sessions) and answers its
events with sse-starlette's `EventSourceResponse`, each event one frame with the fields
the extension sends: ``id: <turn_id>:<seq>``, ``event: <type>``, ``data: <event JSON>``
(pydantic's `model_dump_json`: the extension's JSON, but for non-ASCII text sent as UTF-8
rather than ``\\u`` escapes).
sse-starlette ends lines with "\\r\\n" and pings every 15 s, as the extension's heartbeat.
``GET /api/streamchat/health`` answers which HTTP and loop implementations uvicorn runs.

`bench/peers.py` runs it under uvicorn, one process, one worker:

    python -m bench.starlette_app --port PORT [--http auto|h11|httptools] [--loop asyncio|uvloop|auto]

By default uvicorn parses HTTP with httptools when it is installed (h11 otherwise) and
runs on asyncio's own event loop, as the Jupyter server does.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from bench.sse_load import TOKEN, StampingModel
from streamchat import ChatSession

app = FastAPI()
model = StampingModel("stamping")
sessions: dict[str, ChatSession] = {}
implementations: dict[str, str] = {}
"""The HTTP and loop implementations uvicorn was told to use (set by `main`)."""


class ChatRequest(BaseModel):
    """The body of POST chat/stream."""

    message: str


def check_token(authorization: str | None) -> None:
    """401 unless the request carries the benchmark's token."""
    if authorization != f"token {TOKEN}":
        raise HTTPException(status_code=401, detail="send 'Authorization: token bench-token'")


@app.get("/api/streamchat/health")
async def health(authorization: str | None = Header(default=None)) -> dict[str, Any]:
    """Ready, and with which implementations."""
    check_token(authorization)
    return {"status": "ok", **implementations}


@app.post("/api/streamchat/chat/stream")
async def chat_stream(request: ChatRequest, authorization: str | None = Header(default=None)) -> EventSourceResponse:
    """The turn's events as SSE."""
    check_token(authorization)
    session = ChatSession(model, tools=[])
    sessions[session.session_id] = session

    async def frames() -> AsyncIterator[ServerSentEvent]:
        async for event in session.stream(request.message):
            yield ServerSentEvent(data=event.model_dump_json(), event=event.type, id=f"{event.turn_id}:{event.seq}")

    return EventSourceResponse(frames(), ping=15)


def main() -> None:
    """Serve on 127.0.0.1 under uvicorn, one process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument(
        "--loop", choices=["auto", "asyncio", "uvloop"], default="asyncio", help="asyncio: the extension's own"
    )
    args = parser.parse_args()
    http, loop = args.http, args.loop
    if http == "auto":  # uvicorn's own choice, made here so that /health can tell it
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    implementations.update(http=http, loop=loop)
    uvicorn.run(app, host="127.0.0.1", port=args.port, http=http, loop=loop, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
