"""A real OpenAI-compatible server for the tests: llama-cpp-python's, serving Gemma 3 270M.

Started as a subprocess on 127.0.0.1 and a free port; ready when uvicorn says it is
listening and `/v1/models` answers; killed at the end of the test session (the
`llama_server` fixture in `tests/conftest.py`).
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

__all__ = ["LlamaServer"]

STARTUP_SECONDS = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """A running `python -m llama_cpp.server`; `base_url` ends in `/v1`."""

    def __init__(self, model: Path) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log: list[str] = []
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model), "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", "512", "--n_threads", "2", "--chat_format", "gemma",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        """Read the server's log (always, so its pipe never fills), handing lines to `wait_ready`."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self) -> None:
        """Block until the server listens and lists its model; raise with its log if it dies first."""
        while True:
            try:
                line = self._lines.get(timeout=STARTUP_SECONDS)
            except queue.Empty:
                raise RuntimeError("llama_cpp.server did not start:\n" + "".join(self.log[-30:])) from None
            if line is None:
                raise RuntimeError("llama_cpp.server exited:\n" + "".join(self.log[-30:]))
            if "Uvicorn running on" in line:
                break
        response = httpx.get(f"{self.base_url}/models", timeout=10)
        response.raise_for_status()
        assert response.json()["data"], "the server lists no model"

    def stop(self) -> None:
        """Kill the server and wait for it."""
        self.process.kill()
        self.process.wait(30)
        self._drainer.join(30)
        assert self.process.stderr is not None
        self.process.stderr.close()
