"""Live events written straight to a caught-up SSE client by the turn's task (`Follower.pushed`)."""

from __future__ import annotations

import httpx
import pytest
from server_helpers import SCRIPT, comparable, sse_events

from jupyter_server_extension.service import Follower
from streamchat import ChatSession, ScriptedProvider
from streamchat.events import Event


async def test_tokens_to_a_caught_up_client_are_pushed_in_order_and_done_ends_the_response(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed: list[str] = []
    returned: list[str] = []
    original_pushed, original_next = Follower.pushed, Follower.next_events

    def recording_pushed(self: Follower, event: Event) -> bool:
        written = original_pushed(self, event)
        if written:
            pushed.append(event.type)
        return written

    async def recording_next(self: Follower, timeout: float | None = None) -> list[Event]:
        events = await original_next(self, timeout)
        returned.extend(event.type for event in events)
        return events

    monkeypatch.setattr(Follower, "pushed", recording_pushed)
    monkeypatch.setattr(Follower, "next_events", recording_next)
    script = [[f"t{i} " for i in range(20)]]
    SCRIPT.token_delay = 0.01  # each token comes while the response waits for the next
    SCRIPT.turns = script
    frames = await sse_events(client, "POST", "api/streamchat/chat/stream", json={"message": "go"})
    direct = [comparable(event) async for event in ChatSession(ScriptedProvider(script)).stream("go")]
    assert [comparable(f.event) for f in frames] == direct
    assert [f.id for f in frames] == [f"{frames[0].event.turn_id}:{n}" for n in range(1, len(frames) + 1)]
    assert pushed and set(pushed) == {"token"}  # most tokens went straight to the socket
    assert returned[-1] == "done" and "done" not in pushed  # done wakes the response, which ends
    assert len(pushed) + len(returned) == len(frames)  # each event written once
