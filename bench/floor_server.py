"""The floor of the serving benches: a bare asyncio server streaming the stamping model's tokens.

Any server in another process pays the loopback round trip and the wake-up of its idle
core before it can answer; this one pays nothing else. It reads each request (head and
Content-Length body) on a kept-alive connection and answers ``POST …/chat/stream``
``{"message": "COUNT INTERVAL [FIRST]"}`` as the stamping model of `bench/sse_load.py`
paces it (each token sleeps until it is due and carries its due time), in the extension's
chunked SSE frames; what is due at once goes out in one write with the head (a one-token
turn, "1 0", is one write of the whole response: ``token`` then ``done``). Any other
request gets ``200 {"status": "ok"}`` (so that `bench.server_streams.wait_ready` sees it
up). `bench/server_streams.py` and `bench/peers.py` start it pinned to the server's core
and measure it with the same client, gaps and load steps as the real servers: what a
server adds above it is its own (for the streams held: what one Python process can do on
this core with nothing but the model's timers and the socket writes).

    python -m bench.floor_server --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.sse_load import STREAM_PATH


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
"""The head of every chat/stream response."""
OTHER_RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"status": "ok"}'


def token_frame(seq: int, content: str) -> bytes:
    """A `token` event's chunk."""
    return chunk(
        b'id: t:%d\nevent: token\ndata: {"type":"token","seq":%d,"content":"%s"}\n\n' % (seq, seq, content.encode())
    )


def done_frame(seq: int) -> bytes:
    """The `done` event's chunk, then the end of the body."""
    return chunk(b'id: t:%d\nevent: done\ndata: {"type":"done","seq":%d}\n\n' % (seq, seq)) + b"0\r\n\r\n"


async def stream(writer: asyncio.StreamWriter, message: str) -> None:
    """Answer "COUNT INTERVAL [FIRST]" as `StampingModel` paces it: each token when due, stamped with its due time."""
    count, interval, *rest = (float(word) for word in message.split())
    first = rest[0] if rest else interval
    start = time.time()
    pending = [HEAD]  # what is due at once goes out in one write
    for i in range(int(count)):
        due = start + first + i * interval
        now = time.time()
        if due > now:
            writer.write(b"".join(pending))
            pending = []
            await asyncio.sleep(due - now)
        elif not interval and not first:
            due = now
        pending.append(token_frame(i + 1, f"{due:.6f}|{i} "))
    pending.append(done_frame(int(count) + 1))
    writer.write(b"".join(pending))


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer each request of one connection until the client closes it."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next((int(line[15:]) for line in lines if line.lower().startswith(b"content-length:")), 0)
            body = await reader.readexactly(length) if length else b""
            path = lines[0].split(b" ")[1]
            if path == STREAM_PATH.encode():
                await stream(writer, json.loads(body)["message"])
            else:
                writer.write(OTHER_RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:`port` until stopped."""
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
