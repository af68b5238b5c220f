"""The two-process harness: real `jupyter server` subprocesses sharing one real `redis-server`.

`JupyterProcess` runs ``python -m jupyter_server`` on 127.0.0.1 and a free port with a
token, a root, config, data and runtime directories of its own, this checkout first on
`PYTHONPATH` and streamchat configured by a ``jupyter_server_config.json`` (the paced
backend of `scale_provider`, the Redis store). It can be stopped (SIGTERM: the server shuts
down as it does for an admin), killed (SIGKILL, as ``kill -9``) and started again with the
same configuration. Its whole output goes to a log file the tests read for tracebacks.

`Cluster` is two such processes, A and B, with the same token, store URL and key prefix;
`SseReader` follows an SSE response in a task, timestamping each event as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from redis_helpers import RedisServer, free_port
from scale_provider import TOOLS

from streamchat import Event, parse_event

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

STARTUP_SECONDS = 120.0  # a shared 2-core machine can be slow to import jupyter_server
LEASE = 2.0
"""Seconds of the running turn's lease in these tests (short, so a killed owner is noticed soon)."""
LEASE_TRAIT = "turn_lease"
"""The `StreamChat` trait holding the lease, in seconds."""
DISCONNECT_GRACE = 2.0
"""Seconds a turn without any follower survives: long enough to resume on the other process."""


def new_session_id() -> str:
    """A fresh session id (tests name their sessions: the store is shared by every test of a cluster)."""
    return f"s-{uuid.uuid4().hex[:16]}"


def streamchat_config(store_url: str, prefix: str, **more: Any) -> dict[str, Any]:
    """The `StreamChat` settings of the processes: the paced backend and the Redis store."""
    return {
        "provider_factory": "scale_provider:make_provider",
        "tools": TOOLS,
        "store_url": store_url,
        "store_prefix": prefix,
        LEASE_TRAIT: LEASE,
        "disconnect_grace": DISCONNECT_GRACE,
        **more,
    }


class JupyterProcess:
    """One `jupyter server` subprocess with streamchat: `url`, `client()`, `start`, `stop`, `kill`, `log`."""

    def __init__(
        self,
        name: str,
        base: Path,
        *,
        token: str,
        streamchat: dict[str, Any],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.token = token
        self.dir = base / name
        for sub in ("root", "config", "data", "runtime"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        config = {"ServerApp": {"jpserver_extensions": {"streamchat": True}}, "StreamChat": streamchat}
        (self.dir / "config" / "jupyter_server_config.json").write_text(json.dumps(config, indent=1))
        self.log_path = self.dir / "server.log"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""
        self.starts = 0

    def start(self) -> JupyterProcess:
        """Start the server (on a new free port); `wait_ready` waits for it."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("STREAMCHAT_", "JUPYTER_", "JPY_")) and key != "PYTHONPATH"
        }
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
            JUPYTER_CONFIG_DIR=str(self.dir / "config"),
            JUPYTER_DATA_DIR=str(self.dir / "data"),
            JUPYTER_RUNTIME_DIR=str(self.dir / "runtime"),
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        command = [
            sys.executable, "-m", "jupyter_server",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.dir / 'root'}",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ]  # fmt: skip
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"\n==== start {self.starts} of {self.name} on port {self.port} ====\n")
            log.flush()
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        return self

    def wait_ready(self) -> None:
        """Wait until the server answers its status API (raises with its log if it exits or takes too long)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        with httpx.Client(base_url=self.url, headers=self.auth, timeout=5) as http:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-6000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("api/status").status_code == 200:
                        return
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {STARTUP_SECONDS:.0f} s:\n{self.log()[-6000:]}")

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header of the server token."""
        return {"Authorization": f"token {self.token}"}

    def client(self, timeout: float = 30) -> httpx.AsyncClient:
        """An httpx client for this server, authenticated with its token."""
        return httpx.AsyncClient(base_url=self.url, headers=self.auth, timeout=timeout)

    def ws_url(self) -> str:
        """The chat WebSocket's URL."""
        return f"ws://127.0.0.1:{self.port}/api/streamchat/ws"

    def stop(self) -> None:
        """Stop the server as an admin does (SIGTERM) and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)

    def kill(self) -> None:
        """``kill -9`` the server: nothing of it runs afterwards, no shutdown code."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def log(self) -> str:
        """Everything the server printed, over all its starts."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def tracebacks(self) -> list[str]:
        """The tracebacks in the server's log (each with the 3 lines before it and the rest of its block)."""
        lines = self.log().splitlines()
        found = []
        for i, line in enumerate(lines):
            if "Traceback (most recent call last)" in line:
                end = i + 1
                while end < len(lines) and (lines[end].startswith((" ", "\t")) or end == i + 1):
                    end += 1
                found.append("\n".join(lines[max(0, i - 3) : end + 1]))
        return found


@dataclass
class Cluster:
    """Two `jupyter server` processes (A and B) sharing one `redis-server`, one token and one key prefix."""

    redis: RedisServer
    a: JupyterProcess
    b: JupyterProcess
    prefix: str

    @classmethod
    def start(cls, redis: RedisServer, base: Path, **streamchat: Any) -> Cluster:
        """Start A and B (in parallel) and wait until both answer."""
        token = uuid.uuid4().hex
        prefix = f"test-{uuid.uuid4().hex[:8]}:"
        config = streamchat_config(redis.url, prefix, **streamchat)
        a = JupyterProcess("a", base, token=token, streamchat=config)
        b = JupyterProcess("b", base, token=token, streamchat=config)
        cluster = cls(redis, a, b, prefix)
        cluster.restart()
        return cluster

    @property
    def servers(self) -> tuple[JupyterProcess, JupyterProcess]:
        """A and B."""
        return self.a, self.b

    def restart(self) -> None:
        """Start both servers again (after `stop`), in parallel, and wait until both answer."""
        for server in self.servers:
            server.start()
        for server in self.servers:
            server.wait_ready()

    def stop(self) -> None:
        """Stop both servers (SIGTERM)."""
        for server in self.servers:
            server.stop()

    def tracebacks(self) -> dict[str, list[str]]:
        """Each server's tracebacks, for the servers that logged any."""
        return {s.name: found for s in self.servers if (found := s.tracebacks())}

    def logs(self) -> str:
        """Both logs' last lines, for a failure message."""
        return "\n".join(f"---- {s.name} ----\n{s.log()[-5000:]}" for s in self.servers)


# -- reading SSE ---------------------------------------------------------------------------------


@dataclass
class Frame:
    """One SSE event as received: its id, its event name, its raw data, the parsed event, when it came."""

    id: str
    name: str
    data: str
    event: Event
    at: float
    """`time.monotonic()` when the client read it."""


@dataclass
class SseReader:
    """Reads one SSE response in a task; `frames` grows as events arrive."""

    status: int | None = None
    body: str = ""
    frames: list[Frame] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def open(
        cls,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        stop: Callable[[Frame], bool] | None = None,
        **kwargs: Any,
    ) -> SseReader:
        """Start reading `method url` (until it ends, or until `stop` says so: then the connection is dropped)."""
        reader = cls()
        reader.task = asyncio.get_running_loop().create_task(reader._read(client, method, url, stop, kwargs))
        return reader

    async def _read(
        self, client: httpx.AsyncClient, method: str, url: str, stop: Callable[[Frame], bool] | None, kwargs: Any
    ) -> None:
        try:
            async with aconnect_sse(client, method, url, **kwargs) as source:
                self.status = source.response.status_code
                if self.status != 200:
                    self.body = (await source.response.aread()).decode(errors="replace")
                    return
                async for sse in source.aiter_sse():
                    frame = Frame(sse.id, sse.event, sse.data, parse_event(sse.data), time.monotonic())
                    self.frames.append(frame)
                    self._arrived.set()
                    if stop is not None and stop(frame):
                        return
        finally:
            self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 30) -> list[Frame]:
        """Wait until `count` events have arrived (fails if the response ends first or after `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            assert self.task is not None
            if self.task.done():
                self.task.result()
                raise AssertionError(
                    f"the stream ended after {len(self.frames)} events (status {self.status} {self.body}), "
                    f"expected {count}"
                )
            self._arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.frames)} events within {timeout} s, expected {count}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self.frames[:count]

    async def finish(self, timeout: float = 60) -> list[Frame]:
        """Wait until the response ends; its events."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.frames

    async def close(self) -> None:
        """Drop the connection (if still open); a connection that broke meanwhile is no error here."""
        if self.task is None:
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await self.task


def seqs(frames: list[Frame]) -> list[int]:
    """The `seq` of each event."""
    return [f.event.seq for f in frames]


def text_of(frames: list[Frame]) -> str:
    """The token contents, concatenated."""
    return "".join(f.event.content for f in frames if f.event.type == "token")  # type: ignore[union-attr]


def counted(tokens: int) -> str:
    """What `scale_provider` answers to ``count <tokens> every …``."""
    return "".join(f"{i} " for i in range(1, tokens + 1))


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a JSON error response."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    error: dict[str, Any] = body["error"]
    return error


def lines_matching(log: str, pattern: str) -> list[str]:
    """The log's lines matching a regular expression."""
    return [line for line in log.splitlines() if re.search(pattern, line)]
