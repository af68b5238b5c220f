"""Fixtures of the server extension tests: a real Jupyter server with streamchat loaded.

pytest-jupyter's fixtures are imported by name here rather than registered with
``pytest_plugins`` or a star import: those would also register its autouse cleanup for
every test of the suite and its coroutine-test hooks (`pytest_pycollect_makeitem`,
`pytest_pyfunc_call`), which would take the async tests away from pytest-asyncio. A
conftest's fixtures only apply to the tests in its directory, so only the server tests
get the server. `jp_asyncio_loop` is overridden so the server runs on pytest-asyncio's
loop, the one the async tests run on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

# The server fixtures the tests use and every fixture they depend on; `jp_server_cleanup`
# is autouse: it stops the server after each test.
from pytest_jupyter.jupyter_server import (  # noqa: F401  (fixtures, found by name)
    echo_kernel_spec,
    http_server,
    http_server_client,
    http_server_port,
    jp_argv,
    jp_auth_header,
    jp_base_url,
    jp_config_dir,
    jp_configurable_serverapp,
    jp_data_dir,
    jp_env_config_path,
    jp_env_jupyter_path,
    jp_environ,
    jp_fetch,
    jp_home_dir,
    jp_http_port,
    jp_kernel_dir,
    jp_logging_stream,
    jp_nbconvert_templates,
    jp_root_dir,
    jp_runtime_dir,
    jp_server_cleanup,
    jp_serverapp,
    jp_system_config_path,
    jp_system_jupyter_path,
    jp_web_app,
    jp_ws_fetch,
)
from server_helpers import ALICE, SCRIPT, auth, server_config

from jupyter_server_extension.service import ChatService


@pytest.fixture
async def jp_asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """Run the Jupyter server on pytest-asyncio's loop (pytest-jupyter would make its own)."""
    yield asyncio.get_running_loop()


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    """streamchat loaded with the scripted backend (tests override it for other settings)."""
    return server_config()


@pytest.fixture(autouse=True)
def fresh_script() -> None:
    """Each test starts with the default script and an empty provider list."""
    SCRIPT.turns = [["Hello", " there"]]
    SCRIPT.token_delay = 0.0
    SCRIPT.providers = []


@pytest.fixture
def base_url(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> str:
    """The live server's URL, ending in its base URL (`http_server` makes it listen)."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the live server, authenticated as alice (token header)."""
    async with httpx.AsyncClient(base_url=base_url, headers=auth(ALICE), timeout=20) as c:
        yield c


@pytest.fixture
async def ws(jp_ws_fetch: Any) -> AsyncIterator[Any]:
    """A WebSocket to ``api/streamchat/ws`` authenticated with the server token; closed afterwards."""
    connection = await jp_ws_fetch("api", "streamchat", "ws")
    yield connection
    connection.close()


@pytest.fixture
def chat_service(jp_serverapp: Any) -> ChatService:
    """The live server's chat service (its sessions, turns and store)."""
    service: ChatService = jp_serverapp.web_app.settings["streamchat"].service
    return service


CHROMIUM = os.environ.get("STREAMCHAT_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium; Playwright cannot download a browser here."""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium, offline apart from the test server on 127.0.0.1 (the page tests)."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield chromium
        await chromium.close()
