"""The server as a swappable manager: `service_class` and `store_class` pick the classes the handlers use."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest
from server_helpers import server_config

from jupyter_server_extension.service import ChatService
from streamchat.stores import MemoryStore, SessionRecord


class RecordingStore(MemoryStore):
    """A memory store that remembers every session created through it."""

    def __init__(self, **sizes: Any) -> None:
        super().__init__(**sizes)
        self.created: list[tuple[str, str]] = []

    async def create(self, session_id: str, *, owner: str) -> SessionRecord:
        self.created.append((session_id, owner))
        return await super().create(session_id, owner=owner)


class TaggedService(ChatService):
    """A chat service whose health answer names its class."""

    async def health(self) -> dict[str, Any]:
        body = await super().health()
        body["service"] = type(self).__name__
        return body


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return server_config(service_class=TaggedService, store_class=RecordingStore, replay_buffer_size=7)


async def test_configured_service_and_store_classes_serve_the_routes(
    client: httpx.AsyncClient, jp_serverapp: Any
) -> None:
    service = jp_serverapp.web_app.settings["streamchat_service"]
    assert type(service) is TaggedService and type(service.store) is RecordingStore
    assert service.store.replay_size == 7
    health = (await client.get("api/streamchat/health")).json()
    assert health["service"] == "TaggedService"
    answer = (await client.post("api/streamchat/chat", json={"message": "hi"})).json()
    assert answer["text"] == "Hello there"
    assert service.store.created == [(answer["session_id"], "alice")]


def test_the_handlers_do_not_import_the_app() -> None:
    code = "import sys, jupyter_server_extension.handlers; print('jupyter_server_extension.app' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.strip() == "False"
