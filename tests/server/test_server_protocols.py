"""The frontends' protocols on POST chat/stream against a real Jupyter server: the exact parts of scripted turns.

The Vercel AI SDK's UI message stream and AG-UI, chosen by ``?protocol=`` or by the
body's shape; every AG-UI event is validated by the `ag-ui-protocol` package's models.
The real clients (the `ai` and `@ag-ui/client` npm packages) read the same turns in
test_server_protocol_clients.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from protocol_helpers import (
    BAD_ARGS,
    CHAT,
    RICH_SCRIPT,
    agui_body,
    anonymized,
    stream,
    turn_ended,
    ui_body,
    validated,
)
from server_helpers import ALICE, BOB, GATE, SCRIPT, auth, error_of, server_config, session_providers, sse_events

from jupyter_server_extension.service import ChatService
from streamchat import ToolCall
from streamchat.providers.base import NoticeDelta

STATUS_UI = {"type": "data-status", "data": {"text": "Thinking…"}, "transient": True}
STATUS_AGUI = {"type": "CUSTOM", "name": "streamchat.status", "value": {"text": "Thinking…"}}
EXHAUSTED = "the scripted provider has 1 response(s) and was asked for response 2"
ERROR_SCRIPT = [
    [
        "Partial ",
        NoticeDelta(message="skipped a malformed line", code="bad_line"),
        "answer.",
        ToolCall("count_to", {"n": 1}, call_id="call-d"),
    ]
]
"""Text with a notice in it and a tool call; the second model call fails (the script has one response)."""
CANCEL_SCRIPT = [["Waiting.", ToolCall("wait_here", {"label": "w"}, call_id="call-w")], ["never"]]
"""A tool that waits until the test opens the gate (or the turn is stopped)."""


def progress_ui(call: str, step: int, of: int) -> dict[str, Any]:
    """The data-tool-progress part of `count_to` reporting `step` of `of`."""
    data = {"toolCallId": call, "toolName": "count_to", "message": f"step {step} of {of}", "stage": "count"}
    return {"type": "data-tool-progress", "id": call, "data": {**data, "percent": 100 * step / of}}


def tool_call_agui(call: str, args: str) -> list[dict[str, Any]]:
    """The events of a complete tool call in the step's message ``T-1``."""
    return [
        {"type": "TOOL_CALL_START", "toolCallId": call, "toolCallName": "count_to", "parentMessageId": "T-1"},
        {"type": "TOOL_CALL_ARGS", "toolCallId": call, "delta": args},
        {"type": "TOOL_CALL_END", "toolCallId": call},
    ]


def progress_snapshot(call: str, step: int, of: int) -> dict[str, Any]:
    """The ACTIVITY_SNAPSHOT of `count_to`'s first report."""
    content = {"toolCallId": call, "toolName": "count_to", "message": f"step {step} of {of}", "stage": "count"}
    return {
        "type": "ACTIVITY_SNAPSHOT",
        "messageId": f"T-{call}-progress",
        "activityType": "TOOL_PROGRESS",
        "content": {**content, "percent": 100 * step / of},
    }


def progress_delta(call: str, step: int, of: int) -> dict[str, Any]:
    """The ACTIVITY_DELTA of `count_to`'s later reports: message and percent change."""
    patch = [
        {"op": "replace", "path": "/message", "value": f"step {step} of {of}"},
        {"op": "replace", "path": "/percent", "value": 100 * step / of},
    ]
    return {
        "type": "ACTIVITY_DELTA",
        "messageId": f"T-{call}-progress",
        "activityType": "TOOL_PROGRESS",
        "patch": patch,
    }


def result_agui(call: str, content: str) -> dict[str, Any]:
    """A TOOL_CALL_RESULT."""
    return {
        "type": "TOOL_CALL_RESULT",
        "messageId": f"T-{call}-result",
        "toolCallId": call,
        "role": "tool",
        "content": content,
    }


async def turn_of(service: ChatService, session_id: str) -> str:
    """The id of the session's latest turn."""
    turn_id = await service.store.latest_turn_id(session_id)
    assert turn_id is not None
    return turn_id


# -- the scripted turns, part by part ------------------------------------------------------------


async def test_ui_message_stream_of_a_turn_with_reasoning_parallel_tools_and_a_failed_call(
    client: httpx.AsyncClient, chat_service: ChatService
) -> None:
    SCRIPT.turns = RICH_SCRIPT
    reply = await stream(client, ui_body("rich", "count"))  # useChat's body: no ?protocol= needed
    assert reply.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["cache-control"] == "no-cache" and reply.headers["x-accel-buffering"] == "no"
    assert anonymized(reply.parts, await turn_of(chat_service, "rich")) == [
        {"type": "start", "messageId": "T"},
        {"type": "start-step"},
        STATUS_UI,
        {"type": "reasoning-start", "id": "reasoning-1"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "Two counts"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": " and a bad call."},
        {"type": "reasoning-end", "id": "reasoning-1"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Let me "},
        {"type": "text-delta", "id": "text-1", "delta": "count."},
        {"type": "text-end", "id": "text-1"},
        {"type": "tool-input-available", "toolCallId": "call-a", "toolName": "count_to", "input": {"n": 2}},
        {"type": "tool-input-available", "toolCallId": "call-b", "toolName": "count_to", "input": {"n": 3}},
        {"type": "tool-input-available", "toolCallId": "call-c", "toolName": "count_to", "input": {"n": "many"}},
        progress_ui("call-a", 1, 2),
        progress_ui("call-a", 2, 2),
        progress_ui("call-b", 1, 3),
        progress_ui("call-b", 2, 3),
        progress_ui("call-b", 3, 3),
        {"type": "tool-output-error", "toolCallId": "call-c", "errorText": f"Error: {BAD_ARGS}"},
        {"type": "tool-output-available", "toolCallId": "call-a", "output": {"summary": "counted to 2", "n": 2}},
        {"type": "tool-output-available", "toolCallId": "call-b", "output": {"summary": "counted to 3", "n": 3}},
        {"type": "finish-step"},
        {"type": "start-step"},
        STATUS_UI,
        {"type": "text-start", "id": "text-2"},
        {"type": "text-delta", "id": "text-2", "delta": "Counted "},
        {"type": "text-delta", "id": "text-2", "delta": "to 2 and 3."},
        {"type": "text-end", "id": "text-2"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
        "[DONE]",
    ]
    history = (await client.get("api/streamchat/sessions/rich")).json()["history"]
    assert (history[0]["role"], history[0]["content"]) == ("user", "count")  # the session is the chat id


async def test_ag_ui_events_of_a_turn_with_reasoning_parallel_tools_and_a_failed_call(
    client: httpx.AsyncClient, chat_service: ChatService
) -> None:
    SCRIPT.turns = RICH_SCRIPT
    reply = await stream(client, agui_body("rich", "count"))  # RunAgentInput: no ?protocol= needed
    assert reply.headers["content-type"] == "text/event-stream"
    assert "x-vercel-ai-ui-message-stream" not in reply.headers
    events = [validated(event) for event in reply.parts]
    assert anonymized(events, await turn_of(chat_service, "rich")) == [
        {"type": "RUN_STARTED", "threadId": "rich", "runId": "run-1"},
        STATUS_AGUI,
        {"type": "REASONING_START", "messageId": "T-1-reasoning"},
        {"type": "REASONING_MESSAGE_START", "messageId": "T-1-reasoning", "role": "reasoning"},
        {"type": "REASONING_MESSAGE_CONTENT", "messageId": "T-1-reasoning", "delta": "Two counts"},
        {"type": "REASONING_MESSAGE_CONTENT", "messageId": "T-1-reasoning", "delta": " and a bad call."},
        {"type": "REASONING_MESSAGE_END", "messageId": "T-1-reasoning"},
        {"type": "REASONING_END", "messageId": "T-1-reasoning"},
        {"type": "TEXT_MESSAGE_START", "messageId": "T-1", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "T-1", "delta": "Let me "},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "T-1", "delta": "count."},
        {"type": "TEXT_MESSAGE_END", "messageId": "T-1"},
        *tool_call_agui("call-a", '{"n": 2}'),
        *tool_call_agui("call-b", '{"n": 3}'),
        *tool_call_agui("call-c", '{"n": "many"}'),
        progress_snapshot("call-a", 1, 2),
        progress_delta("call-a", 2, 2),
        progress_snapshot("call-b", 1, 3),
        progress_delta("call-b", 2, 3),
        progress_delta("call-b", 3, 3),
        result_agui("call-c", f"Error: {BAD_ARGS}"),
        result_agui("call-a", '{"summary": "counted to 2", "n": 2}'),
        result_agui("call-b", '{"summary": "counted to 3", "n": 3}'),
        STATUS_AGUI,
        {"type": "TEXT_MESSAGE_START", "messageId": "T-2", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "T-2", "delta": "Counted "},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "T-2", "delta": "to 2 and 3."},
        {"type": "TEXT_MESSAGE_END", "messageId": "T-2"},
        {"type": "RUN_FINISHED", "threadId": "rich", "runId": "run-1", "outcome": {"type": "success"}},
    ]


async def test_ui_message_stream_of_a_notice_and_a_failed_turn(
    client: httpx.AsyncClient, chat_service: ChatService
) -> None:
    SCRIPT.turns = ERROR_SCRIPT
    reply = await stream(client, ui_body("failing", "go"), protocol="ai-sdk")
    assert anonymized(reply.parts, await turn_of(chat_service, "failing")) == [
        {"type": "start", "messageId": "T"},
        {"type": "start-step"},
        STATUS_UI,
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Partial "},
        # the turn went on: a notice, not an `error` part (useChat ends the stream at one)
        {
            "type": "data-notice",
            "data": {"code": "bad_line", "message": "skipped a malformed line", "retryable": False},
        },
        {"type": "text-delta", "id": "text-1", "delta": "answer."},
        {"type": "text-end", "id": "text-1"},
        {"type": "tool-input-available", "toolCallId": "call-d", "toolName": "count_to", "input": {"n": 1}},
        progress_ui("call-d", 1, 1),
        {"type": "tool-output-available", "toolCallId": "call-d", "output": {"summary": "counted to 1", "n": 1}},
        {"type": "finish-step"},
        {"type": "start-step"},
        STATUS_UI,
        {"type": "finish-step"},
        {"type": "error", "errorText": EXHAUSTED},
        {"type": "finish", "finishReason": "error"},
        "[DONE]",
    ]


async def test_ag_ui_events_of_a_notice_and_a_failed_turn(client: httpx.AsyncClient, chat_service: ChatService) -> None:
    SCRIPT.turns = ERROR_SCRIPT
    reply = await stream(client, agui_body("failing", "go"), protocol="ag-ui")
    events = [validated(event) for event in reply.parts]
    assert anonymized(events, await turn_of(chat_service, "failing")) == [
        {"type": "RUN_STARTED", "threadId": "failing", "runId": "run-1"},
        STATUS_AGUI,
        {"type": "TEXT_MESSAGE_START", "messageId": "T-1", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "T-1", "delta": "Partial "},
        {
            "type": "CUSTOM",
            "name": "streamchat.notice",
            "value": {"code": "bad_line", "message": "skipped a malformed line", "retryable": False},
        },
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "T-1", "delta": "answer."},
        {"type": "TEXT_MESSAGE_END", "messageId": "T-1"},
        *tool_call_agui("call-d", '{"n": 1}'),
        progress_snapshot("call-d", 1, 1),
        result_agui("call-d", '{"summary": "counted to 1", "n": 1}'),
        STATUS_AGUI,
        {"type": "RUN_ERROR", "message": EXHAUSTED, "code": "script_exhausted"},  # the last event: nothing follows it
    ]


@pytest.mark.parametrize("protocol", ["ai-sdk", "ag-ui"])
async def test_a_turn_stopped_on_our_own_route_ends_with_the_cancelled_outcome(
    client: httpx.AsyncClient, chat_service: ChatService, protocol: str
) -> None:
    GATE.reset()
    SCRIPT.turns = CANCEL_SCRIPT
    body = ui_body("stopped", "wait") if protocol == "ai-sdk" else agui_body("stopped", "wait")
    reading = asyncio.ensure_future(stream(client, body))
    assert GATE.started is not None
    await asyncio.wait_for(GATE.started.wait(), timeout=10)
    turn_id = await turn_of(chat_service, "stopped")
    assert (await client.delete("api/streamchat/sessions/stopped")).status_code == 204  # stops the turn
    parts = anonymized((await asyncio.wait_for(reading, timeout=10)).parts, turn_id)
    assert GATE.cancelled == ["w"]
    if protocol == "ai-sdk":
        assert parts == [
            {"type": "start", "messageId": "T"},
            {"type": "start-step"},
            STATUS_UI,
            {"type": "text-start", "id": "text-1"},
            {"type": "text-delta", "id": "text-1", "delta": "Waiting."},
            {"type": "text-end", "id": "text-1"},
            {"type": "tool-input-available", "toolCallId": "call-w", "toolName": "wait_here", "input": {"label": "w"}},
            {
                "type": "data-tool-progress",
                "id": "call-w",
                "data": {
                    "toolCallId": "call-w",
                    "toolName": "wait_here",
                    "message": "w waiting",
                    "stage": None,
                    "percent": 10.0,
                },
            },
            {"type": "tool-output-error", "toolCallId": "call-w", "errorText": "Cancelled: cancelled"},
            {"type": "finish-step"},
            {"type": "abort", "reason": "cancelled"},
            "[DONE]",
        ]
    else:
        assert [validated(event) for event in parts] == [
            {"type": "RUN_STARTED", "threadId": "stopped", "runId": "run-1"},
            STATUS_AGUI,
            {"type": "TEXT_MESSAGE_START", "messageId": "T-1", "role": "assistant"},
            {"type": "TEXT_MESSAGE_CONTENT", "messageId": "T-1", "delta": "Waiting."},
            {"type": "TEXT_MESSAGE_END", "messageId": "T-1"},
            {"type": "TOOL_CALL_START", "toolCallId": "call-w", "toolCallName": "wait_here", "parentMessageId": "T-1"},
            {"type": "TOOL_CALL_ARGS", "toolCallId": "call-w", "delta": '{"label": "w"}'},
            {"type": "TOOL_CALL_END", "toolCallId": "call-w"},
            {
                "type": "ACTIVITY_SNAPSHOT",
                "messageId": "T-call-w-progress",
                "activityType": "TOOL_PROGRESS",
                "content": {
                    "toolCallId": "call-w",
                    "toolName": "wait_here",
                    "message": "w waiting",
                    "stage": None,
                    "percent": 10.0,
                },
            },
            result_agui("call-w", "Cancelled: cancelled"),
            {"type": "RUN_FINISHED", "threadId": "stopped", "runId": "run-1", "outcome": {"type": "cancelled"}},
        ]


class TestDisconnect:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(disconnect_grace=0.2)

    @pytest.mark.parametrize("protocol", ["ai-sdk", "ag-ui"])
    async def test_a_client_leaving_cancels_the_tool_within_a_second(
        self, client: httpx.AsyncClient, protocol: str
    ) -> None:
        GATE.reset()
        SCRIPT.turns = CANCEL_SCRIPT
        body = ui_body("left", "wait") if protocol == "ai-sdk" else agui_body("left", "wait")
        progress = {"data-tool-progress", "ACTIVITY_SNAPSHOT"}
        reply = await stream(client, body, stop=lambda part: part["type"] in progress)  # then the connection drops
        assert reply.parts[-1]["type"] in progress
        assert GATE.cancelled_event is not None
        await asyncio.wait_for(GATE.cancelled_event.wait(), timeout=1.0)  # acceptance: within a second
        assert GATE.cancelled == ["w"]
        await turn_ended("left")  # the cancelled turn saves its partial answer as it ends
        history = (await client.get("api/streamchat/sessions/left")).json()["history"]
        assert [(m["role"], m.get("interrupted")) for m in history] == [
            ("user", False),
            ("assistant", True),
            ("tool", False),
        ]
        assert [len(p.requests) for p in session_providers()] == [1]


# -- sessions ----------------------------------------------------------------------------------------


async def test_the_chat_id_is_the_session_and_only_the_newest_user_message_is_read(client: httpx.AsyncClient) -> None:
    SCRIPT.turns = [["First."], ["Second."], ["Third."]]
    first = await stream(client, ui_body("kept", "one"))
    assert [p["delta"] for p in first.parts if isinstance(p, dict) and p["type"] == "text-delta"] == ["First."]
    conversation = [
        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "one"}]},
        {"id": "m2", "role": "assistant", "parts": [{"type": "text", "text": "an answer the server never gave"}]},
        {"id": "m3", "role": "user", "parts": [{"type": "text", "text": "two, "}, {"type": "text", "text": "then"}]},
    ]
    second = await stream(client, {"id": "kept", "messages": conversation, "trigger": "submit-message"})
    assert [p["delta"] for p in second.parts if isinstance(p, dict) and p["type"] == "text-delta"] == ["Second."]
    only_newest = {"id": "kept", "message": {"id": "m5", "role": "user", "parts": [{"type": "text", "text": "three"}]}}
    await stream(client, only_newest)  # a client sending only the newest message
    history = (await client.get("api/streamchat/sessions/kept")).json()["history"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "one"),
        ("assistant", "First."),
        ("user", "two, then"),
        ("assistant", "Second."),
        ("user", "three"),
        ("assistant", "Third."),
    ]
    (provider,) = session_providers()  # the model saw the server's history, not the client's copy
    assert [m.content for m in provider.requests[1].messages] == ["one", "First.", "two, then"]


async def test_ag_ui_thread_is_the_session_and_another_users_thread_is_not_found(
    client: httpx.AsyncClient, base_url: str
) -> None:
    await stream(client, agui_body("alices", "hi"))
    async with httpx.AsyncClient(base_url=base_url, headers=auth(BOB)) as bob:
        for body in (agui_body("alices", "mine now"), ui_body("alices", "mine now")):
            refused = await bob.post(CHAT, json=body)
            assert refused.status_code == 404 and error_of(refused)["code"] == "session_not_found"
    history = (await client.get("api/streamchat/sessions/alices")).json()["history"]
    assert [m["content"] for m in history] == ["hi", "Hello there"]


# -- choosing the protocol, and what is refused --------------------------------------------------------


async def test_protocol_parameter_and_our_own_protocol_on_the_same_route(client: httpx.AsyncClient) -> None:
    frames = await sse_events(client, "POST", CHAT, json={"message": "hi"}, params={"protocol": "streamchat"})
    assert [f.event.type for f in frames] == ["thinking", "token", "token", "done"]
    frames = await sse_events(client, "POST", CHAT, json={"message": "hi"})  # our body: our protocol
    assert frames[-1].event.type == "done" and frames[-1].event.text == "Hello there"
    refused = await client.post(CHAT, json={"message": "hi"}, params={"protocol": "openai"})
    assert refused.status_code == 400
    assert error_of(refused) == {
        "code": "bad_protocol",
        "message": "unknown protocol 'openai': use ?protocol= with one of streamchat, ai-sdk, ag-ui",
    }
    refused = await client.post(CHAT, json={"message": "hi"}, params={"protocol": "ag-ui"})
    assert refused.status_code == 400
    assert error_of(refused)["message"].startswith("invalid AG-UI run input: threadId: Field required; runId: Field")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"id": "x", "messages": [{"role": "assistant", "parts": [{"type": "text", "text": "hi"}]}]},
            "useChat request: the last message must be the user's (it is assistant)",
        ),
        (
            {**ui_body("x", "hi"), "trigger": "regenerate-message"},
            "the trigger 'regenerate-message' is not supported",
        ),
        (
            {
                "id": "x",
                "messages": [{"role": "user", "parts": [{"type": "file", "url": "data:,", "mediaType": "text/plain"}]}],
            },
            "useChat request: the user's message holds file parts: send text only",
        ),
        ({"id": "x", "messages": []}, "useChat request: the last message must be the user's (it is missing)"),
        ({"id": 7, "messages": []}, "invalid useChat request: id: Input should be a valid string"),
        (
            {
                **agui_body("x", "hi"),
                "messages": [{"id": "m", "role": "user", "content": [{"type": "image", "url": "x"}]}],
            },
            "AG-UI run input: the user's message holds image parts: send text only",
        ),
        (
            {**agui_body("x", "hi"), "messages": [{"id": "m", "role": "tool", "content": "4", "toolCallId": "c"}]},
            "AG-UI run input: the last message must be the user's (it is tool)",
        ),
    ],
    ids=["assistant-last", "regenerate", "file", "no-messages", "bad-id", "image", "tool-last"],
)
async def test_bad_requests_are_refused_saying_what_to_send(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    refused = await client.post(CHAT, json=body)
    assert refused.status_code == 400
    assert error_of(refused)["message"].startswith(message), error_of(refused)
    assert session_providers() == []  # no turn ran


@pytest.mark.parametrize("body", [ui_body("bad id!", "hi"), agui_body("x" * 65, "hi")], ids=["ai-sdk", "ag-ui"])
async def test_session_ids_are_checked_as_ours(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    refused = await client.post(CHAT, json=body)
    assert refused.status_code == 400 and error_of(refused)["code"] == "bad_session_id"


class TestLimits:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(max_message_size=100)

    @pytest.mark.parametrize("protocol", ["ai-sdk", "ag-ui"])
    async def test_the_size_limits_apply(self, client: httpx.AsyncClient, protocol: str) -> None:
        make = ui_body if protocol == "ai-sdk" else agui_body
        refused = await client.post(CHAT, json=make("big", "x" * 101))  # the message is over the limit
        assert refused.status_code == 413 and error_of(refused)["code"] == "message_too_large"
        refused = await client.post(CHAT, json={**make("big", "hi"), "padding": "x" * 5000})  # the body is
        assert refused.status_code == 413
        assert "send only the newest message" in error_of(refused)["message"]
        assert session_providers() == []


async def test_authentication_and_xsrf_are_required_as_on_our_protocol(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as anonymous:
        for body in (ui_body("a", "hi"), agui_body("a", "hi")):
            refused = await anonymous.post(CHAT, json=body)
            assert refused.status_code == 403 and error_of(refused)["code"] == "forbidden"
    async with httpx.AsyncClient(base_url=base_url) as browser:
        assert (await browser.get("streamchat/", headers=auth(ALICE))).status_code == 200  # logs in: cookies
        for body in (ui_body("b", "hi"), agui_body("b", "hi")):
            refused = await browser.post(CHAT, json=body)
            assert refused.status_code == 403 and "X-XSRFToken" in error_of(refused)["message"]
        xsrf = {"X-XSRFToken": browser.cookies["_xsrf"]}
        async with browser.stream("POST", CHAT, json=ui_body("b", "hi"), headers=xsrf) as response:
            assert response.status_code == 200
            assert [line async for line in response.aiter_lines() if line][-1] == "data: [DONE]"
    assert session_providers() != []
