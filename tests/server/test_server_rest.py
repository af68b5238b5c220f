"""REST routes against a real Jupyter server: health, tools, chat, history, delete, bad input, limits."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from server_helpers import BOB, GATE, SCRIPT, auth, error_of, server_config, session_providers, sse_events
from traitlets import TraitError
from traitlets.config import Config

from jupyter_server_extension.app import StreamChat, load_tools
from jupyter_server_extension.service import ChatService
from streamchat import ConfigurationError, Settings, ToolCall
from streamchat.tools.builtin import BUILTIN_TOOLS


async def test_health_and_tools(client: httpx.AsyncClient) -> None:
    health = (await client.get("api/streamchat/health")).json()
    assert health["status"] == "ok" and health["reachable"] is True
    assert health["provider"] == {"name": "scripted", "model": "script", "description": "scripted script"}
    tools = (await client.get("api/streamchat/tools")).json()
    assert [t["name"] for t in tools] == ["count_to", "wait_here", "calculate"]
    assert tools[0]["parameters"]["properties"] == {"n": {"description": "How far to count.", "type": "integer"}}
    assert tools[0]["description"] == "Count to n, reporting progress at each step."


class _Ollama(BaseHTTPRequestHandler):
    """Answers like Ollama: its model list at /api/tags, a one-line answer at /api/chat."""

    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        if self.path == "/api/tags":
            self._send(b'{"models": [{"name": "qwen3:0.6b", "model": "qwen3:0.6b"}]}', "application/json")
        else:
            self._send(b"Ollama is running", "text/plain", status=200 if self.path == "/" else 404)

    def do_POST(self) -> None:
        type(self).paths.append(self.path)
        self.rfile.read(int(self.headers["Content-Length"]))
        line = b'{"message": {"role": "assistant", "content": "Hi"}, "done": true, "done_reason": "stop"}\n'
        self._send(line, "application/x-ndjson")

    def _send(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def ollama() -> Iterator[str]:
    """An Ollama look-alike on 127.0.0.1; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ollama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Ollama.paths = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def nobody_listening() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class TestHealthOfOllama:
    @pytest.fixture
    def jp_server_config(self, ollama: str) -> dict[str, Any]:
        return server_config(provider_factory="", provider="ollama", model="qwen3:0.6b", ollama_host=ollama)

    async def test_ollama_that_lists_its_models_is_reachable(self, client: httpx.AsyncClient, ollama: str) -> None:
        response = await client.get("api/streamchat/health")
        health = response.json()
        assert health["reachable"] is True
        assert health["provider"] == {"name": "ollama", "model": "qwen3:0.6b", "description": "ollama qwen3:0.6b"}
        assert ollama not in response.text  # the backend's address stays in the server log
        assert _Ollama.paths == ["/api/tags"]  # the probe the automatic choice makes


class TestHealthOfOllamaNotRunning:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(provider_factory="", provider="ollama", ollama_host=nobody_listening())

    async def test_ollama_that_does_not_answer_is_unreachable(self, client: httpx.AsyncClient) -> None:
        health = (await client.get("api/streamchat/health")).json()
        assert health["status"] == "ok" and health["reachable"] is False
        assert health["provider"]["name"] == "ollama"


class TestAutomaticChoice:
    @pytest.fixture
    def jp_server_config(self, ollama: str) -> dict[str, Any]:
        return server_config(provider_factory="", provider="", ollama_host=ollama, tools=[])

    async def test_the_backends_are_probed_once_and_each_session_gets_the_chosen_kind(
        self, client: httpx.AsyncClient, ollama: str
    ) -> None:
        first = (await client.post("api/streamchat/chat", json={"message": "hi"})).json()
        second = (await client.post("api/streamchat/chat", json={"message": "hi"})).json()
        assert (first["text"], second["text"]) == ("Hi", "Hi") and first["session_id"] != second["session_id"]
        health = (await client.get("api/streamchat/health")).json()
        assert health["provider"]["description"] == "ollama qwen3:0.6b"
        # one probe to choose, one chat per session, then the health route's own probe
        assert _Ollama.paths == ["/api/tags", "/api/chat", "/api/chat", "/api/tags"]


async def test_chat_history_and_delete(client: httpx.AsyncClient) -> None:
    SCRIPT.turns = [[ToolCall("calculate", {"expression": "6 * 7"}, call_id="k")], ["It is ", "42."], ["Still 42."]]
    first = (await client.post("api/streamchat/chat", json={"message": "6 times 7?"})).json()
    assert first["text"] == "It is 42." and first["reason"] == "stop"
    calculated = {"expression": "6 * 7", "result": 42, "summary": "6 * 7 = 42"}
    assert [(c["tool"], c["status"], c["result"]) for c in first["tool_calls"]] == [("calculate", "ok", calculated)]
    assert set(first) >= {"session_id", "text", "tool_calls", "usage", "metrics"}
    session_id = first["session_id"]
    second = (await client.post("api/streamchat/chat", json={"message": "sure?", "session_id": session_id})).json()
    assert second["text"] == "Still 42." and second["session_id"] == session_id
    history = (await client.get(f"api/streamchat/sessions/{session_id}")).json()
    assert history["session_id"] == session_id
    assert [(m["role"], m["content"]) for m in history["history"]] == [
        ("user", "6 times 7?"),
        ("assistant", ""),
        ("tool", json.dumps(calculated)),
        ("assistant", "It is 42."),
        ("user", "sure?"),
        ("assistant", "Still 42."),
    ]
    assert (await client.delete(f"api/streamchat/sessions/{session_id}")).status_code == 204
    gone = await client.get(f"api/streamchat/sessions/{session_id}")
    assert gone.status_code == 404 and error_of(gone)["code"] == "session_not_found"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[]", 400, "bad_request"),
        (b"{}", 400, "bad_request"),
        (b'{"message": ""}', 400, "bad_message"),
        (b'{"message": " \\n "}', 400, "bad_message"),
        (b'{"message": 5}', 400, "bad_request"),
        (b'{"message": "hi", "session_id": 7}', 400, "bad_request"),
        (b'{"message": "hi", "session_id": "has space"}', 400, "bad_request"),
        (b'{"message": "hi", "extra": 1}', 400, "bad_request"),
        (b'{"message": "hi", "session_id": "unknown"}', 404, "session_not_found"),
        (json.dumps({"message": "x" * 1001}).encode(), 413, "message_too_large"),
        (json.dumps({"message": "é" * 501}).encode(), 413, "message_too_large"),
        (b'{"message": "' + b"y" * 11_000 + b'"}', 413, "message_too_large"),
    ],
)
@pytest.mark.parametrize("route", ["api/streamchat/chat", "api/streamchat/chat/stream"])
async def test_bad_requests_get_json_errors(
    client: httpx.AsyncClient, route: str, body: bytes, status: int, code: str
) -> None:
    response = await client.post(route, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = error_of(response)
    assert error["code"] == code and error["message"] and "Traceback" not in error["message"]
    assert session_providers() == []  # nothing reached the model


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return server_config(max_message_size=1000, max_sessions_per_user=2)


async def test_a_busy_session_answers_409(client: httpx.AsyncClient, chat_service: ChatService) -> None:
    GATE.reset()
    SCRIPT.turns = [[ToolCall("wait_here", {"label": "b"})], ["done"]]
    first = asyncio.create_task(client.post("api/streamchat/chat", json={"message": "one", "session_id": None}))
    assert GATE.started is not None and GATE.opened is not None
    await GATE.started.wait()
    (session_id,) = chat_service.store._records
    busy = await client.post("api/streamchat/chat", json={"message": "two", "session_id": session_id})
    assert busy.status_code == 409
    assert error_of(busy) == {
        "code": "session_busy",
        "message": "this session is already answering a message: wait for it or cancel it",
    }
    busy_stream = await client.get(f"api/streamchat/sessions/{session_id}/stream", params={"message": "two"})
    assert busy_stream.status_code == 409
    GATE.opened.set()
    assert (await first).json()["text"] == "done"


async def test_sessions_per_user_are_limited(client: httpx.AsyncClient, base_url: str) -> None:
    for n in range(2):
        await sse_events(client, "GET", f"api/streamchat/sessions/mine{n}/stream", params={"message": "hi"})
    third = await client.post("api/streamchat/chat", json={"message": "hi"})
    assert third.status_code == 429 and error_of(third)["code"] == "too_many_sessions"
    async with httpx.AsyncClient(base_url=base_url, headers=auth(BOB)) as bob:  # another user has his own quota
        assert (await bob.post("api/streamchat/chat", json={"message": "hi"})).status_code == 200


class TestIdleExpiry:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config()  # the default idle timeout, an hour: the server's own sweep stays out of the test

    async def test_idle_sessions_expire_and_running_ones_do_not(
        self, client: httpx.AsyncClient, chat_service: ChatService
    ) -> None:
        await client.post("api/streamchat/chat", json={"message": "hi"})
        GATE.reset()
        SCRIPT.turns = [[ToolCall("wait_here", {"label": "e"})], ["end"]]
        running = asyncio.create_task(client.post("api/streamchat/chat", json={"message": "hi"}))
        assert GATE.started is not None and GATE.opened is not None
        await GATE.started.wait()
        (idle_id, running_id) = list(chat_service.store._records)
        an_hour_later = time.time() + chat_service.limits.idle_timeout + 1
        assert await chat_service.expire_idle(now=an_hour_later) == [idle_id]
        assert (await client.get(f"api/streamchat/sessions/{idle_id}")).status_code == 404
        GATE.opened.set()
        assert (await running).json()["session_id"] == running_id


class TestDefaultIdentityProvider:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        config = server_config()
        del config["ServerApp"]["identity_provider_class"]
        return config

    async def test_requests_with_the_server_token_share_their_sessions(self, jp_fetch: Any) -> None:
        # jupyter_server invents a new anonymous user for every token request without a cookie
        first = json.loads((await jp_fetch("api/streamchat/chat", method="POST", body='{"message": "hi"}')).body)
        history = json.loads((await jp_fetch("api/streamchat/sessions", first["session_id"])).body)
        assert [m["content"] for m in history["history"]] == ["hi", "Hello there"]


class TestBadConfiguration:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(tools=["streamchat.tools.builtin:calculate", "server_helpers:no_such_tool"])

    async def test_an_unknown_tool_is_a_clear_startup_error(
        self, capsys: pytest.CaptureFixture[str], client: httpx.AsyncClient
    ) -> None:
        server_log = capsys.readouterr().err  # the server logs to stderr while it starts
        assert (
            "streamchat: the extension cannot start: StreamChat.tools: module 'server_helpers' has no "
            "'no_such_tool' ('server_helpers:no_such_tool')\n" in server_log
        )
        assert (await client.get("api/streamchat/health")).status_code == 404  # not loaded


def test_load_tools_names_what_fails() -> None:
    with pytest.raises(ConfigurationError, match=r"cannot import module 'nowhere' for 'nowhere:tool'"):
        load_tools(["nowhere:tool"])
    with pytest.raises(ConfigurationError, match=r"'calculate' is not of the form 'module:name'"):
        load_tools(["calculate"])
    assert [t.name for t in load_tools(["streamchat.tools.builtin:calculate"])] == ["calculate"]


def test_the_settings_traits_are_the_settings_fields() -> None:
    traits = StreamChat.class_traits(config=True)
    for name, field in Settings.model_fields.items():
        if name == "display":  # the notebook's alone
            assert name not in traits
            continue
        assert traits[name].help == field.description
        assert traits[name].default() is None  # unset: the environment and the defaults decide
    config = Config()
    config.StreamChat.provider = "demo"
    config.StreamChat.max_turns = 3
    config.StreamChat.weather_url = "http://127.0.0.1:1/v1/forecast"
    settings = StreamChat(config=config)._settings()
    assert (settings.provider, settings.max_turns, settings.weather_url) == (
        "demo",
        3,
        "http://127.0.0.1:1/v1/forecast",
    )
    with pytest.raises(TraitError):
        StreamChat(max_turns="many")


def test_the_default_tools_are_the_built_in_tools() -> None:
    assert load_tools(StreamChat().tools) == list(BUILTIN_TOOLS)
