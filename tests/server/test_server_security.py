"""Authentication, XSRF, WebSocket origin and user isolation, against a real Jupyter server."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import tornado.httpclient
import tornado.websocket
from server_helpers import ALICE, BOB, auth, error_of, receive, server_config, session_providers, sse_events

API_ROUTES = [
    ("GET", "api/streamchat/health", {}),
    ("GET", "api/streamchat/tools", {}),
    ("POST", "api/streamchat/chat", {}),
    ("POST", "api/streamchat/chat/stream", {}),
    ("GET", "api/streamchat/sessions/taken/stream?message=hi", {}),
    ("GET", "api/streamchat/sessions/fresh/stream?message=hi", {}),
    ("GET", "api/streamchat/sessions/taken/stream", {"Last-Event-ID": "1"}),
    ("GET", "api/streamchat/sessions/taken", {}),
    ("DELETE", "api/streamchat/sessions/taken", {}),
    ("GET", "api/streamchat/ws", {}),
]
PAGE_ROUTES = ["streamchat/", "streamchat", "streamchat/static/chat.js", "streamchat/static/vendor/purify.es.js"]
OTHER_METHODS = ["PUT", "PATCH", "POST", "DELETE", "HEAD"]


@pytest.fixture(params=[False, True], ids=["auth-required", "unauthenticated-allowed"])
def jp_server_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    config = server_config()
    config["ServerApp"]["allow_unauthenticated_access"] = request.param
    return config


async def test_every_route_refuses_requests_without_credentials(
    client: httpx.AsyncClient, base_url: str, jp_http_port: int, jp_base_url: str
) -> None:
    await sse_events(client, "GET", "api/streamchat/sessions/taken/stream", params={"message": "mine"})
    made = len(session_providers())
    async with httpx.AsyncClient(base_url=base_url) as anonymous:
        for method, route, headers in API_ROUTES:
            response = await anonymous.request(method, route, headers=headers, json={"message": "hi"})
            assert response.status_code == 403, (method, route, response.status_code)
            assert error_of(response)["code"] == "forbidden"
            for other in OTHER_METHODS:
                response = await anonymous.request(other, route.split("?")[0], headers=headers)
                assert response.status_code in (403, 405), (other, route, response.status_code)
        for route in PAGE_ROUTES:  # pages refuse too, and their body takes a browser to the login page
            response = await anonymous.get(route)
            assert response.status_code == 403, (route, response.status_code)
            assert f'<meta http-equiv="refresh" content="0; url={jp_base_url}login?next=' in response.text
            assert "<script" not in response.text and "streamchat.js" not in response.text
            for other in OTHER_METHODS:
                response = await anonymous.request(other, route)
                assert response.status_code in (403, 405), (other, route, response.status_code)
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/streamchat/ws")
    assert refused.value.code == 403
    assert len(session_providers()) == made  # no turn ran, no session was created
    history = (await client.get("api/streamchat/sessions/taken")).json()["history"]
    assert [m["content"] for m in history] == ["mine", "Hello there"]


@contextlib.asynccontextmanager
async def logged_in(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client for alice: it logged in once with her token and now has only cookies."""
    async with httpx.AsyncClient(base_url=base_url) as browser:
        page = await browser.get("streamchat/", headers=auth(ALICE))
        assert page.status_code == 200 and "<title>streamchat</title>" in page.text
        assert "_xsrf" in browser.cookies and any(name.startswith("username-") for name in browser.cookies)
        yield browser


async def test_cookie_authenticated_requests_need_the_xsrf_token(base_url: str) -> None:
    async with logged_in(base_url) as browser:
        xsrf = browser.cookies["_xsrf"]
        refused = await browser.post("api/streamchat/chat", json={"message": "hi"})
        assert refused.status_code == 403
        refused = await browser.get("api/streamchat/sessions/x/stream", params={"message": "hi"})
        assert refused.status_code == 403  # a GET that starts a turn is checked like a POST
        accepted = await browser.post("api/streamchat/chat", json={"message": "hi"}, headers={"X-XSRFToken": xsrf})
        assert accepted.status_code == 200 and accepted.json()["text"] == "Hello there"
        frames = await sse_events(
            browser, "GET", "api/streamchat/sessions/x/stream", params={"message": "hi", "_xsrf": xsrf}
        )
        assert frames[-1].event.text == "Hello there"
        assert (await browser.get(f"api/streamchat/sessions/{accepted.json()['session_id']}")).status_code == 200


async def test_a_websocket_from_a_foreign_origin_is_refused(base_url: str, jp_http_port: int, jp_base_url: str) -> None:
    async with logged_in(base_url) as browser:
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/streamchat/ws"
    foreign = tornado.httpclient.HTTPRequest(url, headers={"Cookie": cookie, "Origin": "http://evil.example"})
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(foreign)
    assert refused.value.code == 403
    same = tornado.httpclient.HTTPRequest(url, headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{jp_http_port}"})
    ws = await tornado.websocket.websocket_connect(same)
    await ws.write_message(json.dumps({"type": "chat.message", "message": "hi"}))
    assert [(await receive(ws))["type"] for _ in range(4)][-1] == "chat.complete"
    ws.close()


async def test_one_user_cannot_read_stream_or_delete_another_users_session(
    client: httpx.AsyncClient, base_url: str, jp_ws_fetch: Any
) -> None:
    session_id = (await client.post("api/streamchat/chat", json={"message": "secret"})).json()["session_id"]
    made = len(session_providers())
    async with httpx.AsyncClient(base_url=base_url, headers=auth(BOB)) as bob:
        attempts = [
            await bob.get(f"api/streamchat/sessions/{session_id}"),
            await bob.delete(f"api/streamchat/sessions/{session_id}"),
            await bob.get(f"api/streamchat/sessions/{session_id}/stream", params={"message": "hi"}),
            await bob.get(f"api/streamchat/sessions/{session_id}/stream", headers={"Last-Event-ID": "0"}),
            await bob.post("api/streamchat/chat", json={"message": "hi", "session_id": session_id}),
            await bob.post("api/streamchat/chat/stream", json={"message": "hi", "session_id": session_id}),
        ]
        for response in attempts:
            assert response.status_code == 404
            assert error_of(response) == {
                "code": "session_not_found",
                "message": f"no session {session_id!r} (it may have expired or been deleted): start a new session",
            }
    ws = await jp_ws_fetch("api", "streamchat", "ws", headers=auth(BOB))
    for message in (
        {"type": "chat.message", "message": "hi", "session_id": session_id},
        {"type": "chat.cancel", "session_id": session_id},
        {"type": "chat.clear", "session_id": session_id},
        {"type": "tool.cancel", "call_id": "call_1", "session_id": session_id},
    ):
        await ws.write_message(json.dumps(message))
        assert (await receive(ws))["code"] == "session_not_found"
    ws.close()
    assert len(session_providers()) == made
    history = (await client.get(f"api/streamchat/sessions/{session_id}")).json()["history"]
    assert [m["content"] for m in history] == ["secret", "Hello there"]
