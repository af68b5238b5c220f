"""The floor of the time to first token benches: a bare asyncio server answering with a canned SSE response.

Any server in another process pays the loopback round trip and the wake-up of its idle
core before it can answer; this one pays nothing else. It reads each request (head and
Content-Length body) on a kept-alive connection and answers ``POST …/chat/stream``
with one write of a whole one-token SSE response (``token`` then ``done``, chunked, the
fields the extension sends), and any other request with ``200 {"status": "ok"}`` (so
that `bench.server_streams.wait_ready` sees it up). `bench/server_streams.py` and
`bench/peers.py` start it pinned to the server's core and measure it with the same
client and gaps as the real servers: what a server adds above it is its own.

    python -m bench.floor_server --port PORT
"""

from __future__ import annotations

import argparse
import asyncio

from bench.sse_load import STREAM_PATH


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    + chunk(b'id: t:1\nevent: token\ndata: {"type":"token","seq":1,"content":"0|0 "}\n\n')
    + chunk(b'id: t:2\nevent: done\ndata: {"type":"done","seq":2}\n\n')
    + b"0\r\n\r\n"
)
"""The canned answer to every POST chat/stream: one token, then done."""
OTHER_RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"status": "ok"}'


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer each request of one connection until the client closes it."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next((int(line[15:]) for line in lines if line.lower().startswith(b"content-length:")), 0)
            if length:
                await reader.readexactly(length)
            path = lines[0].split(b" ")[1]
            writer.write(STREAM_RESPONSE if path == STREAM_PATH.encode() else OTHER_RESPONSE)
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
