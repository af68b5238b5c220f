"""A real `redis-server` for the tests: started on 127.0.0.1 and a free port, never a system service.

`RedisServer` runs Debian's ``redis-server`` (``.ci/run`` installs it) with nothing
persisted (``--save '' --appendonly no``), so a restart starts empty, as a Redis whose
data were lost does. `stop` and `start` again on the same port are how the tests restart
Redis under a running server. `redis_server` is the fixture; a conftest imports it by
name (``from redis_helpers import redis_server``) so both the store's contract tests and
the two-process tests (`tests/scale/`) use this one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["REDIS_SERVER", "RedisServer", "free_port", "redis_server"]

REDIS_SERVER = os.environ.get("STREAMCHAT_REDIS_SERVER", "redis-server")
"""The `redis-server` executable (Debian's, on PATH)."""

STARTUP_SECONDS = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pong(port: int) -> bool:
    """Whether a Redis answers PING on `port` (RESP spoken by hand: one line each way)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A `redis-server` subprocess on 127.0.0.1: `url`, `start`, `stop` (start again to restart)."""

    def __init__(self, port: int | None = None) -> None:
        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError(f"{REDIS_SERVER!r} is not installed: apt-get install -y redis-server")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="streamchat-redis-"))
        self.log_path = self._dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING (fails with its log)."""
        assert self.process is None, "already running"
        command = [
            REDIS_SERVER,
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",
            "--dir", str(self._dir), "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _pong(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.log()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and wait until its port is free."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """The server's log so far (the last 4000 characters)."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty `redis-server` on a free port for one test; stopped afterwards."""
    with RedisServer() as server:
        yield server
