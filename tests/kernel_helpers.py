"""A real ipykernel for tests: start one, and run code in it collecting the request's iopub messages."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager


@contextlib.contextmanager
def running_kernel(display: str) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """A python3 kernel with `STREAMCHAT_DISPLAY=display`, and a client with its channels started."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env={**os.environ, "STREAMCHAT_DISPLAY": display})
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run_cell(
    kc: BlockingKernelClient, code: str, *, on_message: Callable[[dict[str, Any]], object] | None = None
) -> list[dict[str, Any]]:
    """Execute `code`; return the iopub messages of this request until it is idle (`on_message` sees each)."""
    msg_id = kc.execute(code)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if on_message is not None:
            on_message(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
