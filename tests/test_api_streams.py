"""Server-Sent Events against a real server process, read with an independent SSE
client (httpx-sse)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from httpx_sse import EventSource, connect_sse

from chat.models import SUBSTRATE_FIELDS, ApiToken, Turn
from chat.realtime.async_db import db_call
from tests.conftest import use_slow_model, wait_for
from tests.processes import live_servers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with live_servers("uvicorn", 1) as hosts:
        yield f"http://{hosts[0]}"


def without_presence(source):
    """Presence comes whenever counts change; these tests look at the numbered events."""
    return (event for event in source.iter_sse() if event.event != "presence")


def auth(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {ApiToken.issue(user)}"}


def test_the_event_stream_starts_with_history_then_follows(server, channel, alice):
    with (
        httpx.Client(base_url=server, timeout=10) as client,
        connect_sse(client, "GET", "/api/channels/lobby/events") as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["cache-control"] == "no-cache"
        assert source.response.headers["x-accel-buffering"] == "no"
        events = without_presence(source)
        history = next(events)
        assert history.event == "history" and json.loads(history.data)["mode"] == "watch"
        seq = json.loads(history.data)["seq"]
        httpx.post(
            f"{server}/api/channels/lobby/inject", json={"role": "user", "text": "hey"}, headers=auth(alice)
        )
        turn = next(events)
        assert turn.event == "turn" and turn.id == str(seq + 1)
        assert json.loads(turn.data)["text"] == "hey"


def test_last_event_id_replays_exactly_the_missed_events(server, channel, alice):
    with httpx.Client(base_url=server, timeout=10) as client:
        with connect_sse(client, "GET", "/api/channels/lobby/events") as source:
            seq = json.loads(next(without_presence(source)).data)["seq"]
        for text in ("a", "b", "c"):
            client.post(
                "/api/channels/lobby/inject", json={"role": "user", "text": text}, headers=auth(alice)
            )
        with connect_sse(
            client, "GET", "/api/channels/lobby/events", headers={"Last-Event-ID": str(seq)}
        ) as source:
            events = without_presence(source)
            missed = [next(events) for _ in range(3)]
        assert [e.event for e in missed] == ["turn"] * 3
        assert [e.id for e in missed] == [str(seq + 1), str(seq + 2), str(seq + 3)]
        assert [json.loads(e.data)["text"] for e in missed] == ["a", "b", "c"]
        with connect_sse(
            client, "GET", "/api/channels/lobby/events", headers={"Last-Event-ID": "999999"}
        ) as source:
            assert next(source.iter_sse()).event == "history"  # not kept (or never sent): start afresh


def test_private_channel_streams_follow_the_watch_rules(server, private_channel, carol):
    with httpx.Client(base_url=server, timeout=10) as client:
        assert client.get("/api/channels/backroom/events", headers=auth(carol)).status_code == 404
        assert client.get("/api/channels/backroom/events").status_code == 404
        with connect_sse(
            client, "GET", f"/api/channels/backroom/events?key={private_channel.watch_key}"
        ) as source:
            assert next(source.iter_sse()).event == "history"


def test_posting_with_event_stream_streams_that_exchange_only(server, channel, alice):
    with (
        httpx.Client(base_url=server, timeout=20) as client,
        connect_sse(
            client, "POST", "/api/channels/lobby/messages", json={"text": "I feel lucky"}, headers=auth(alice)
        ) as source,
    ):
        events = list(without_presence(source))  # the stream ends by itself after done
    kinds = [e.event for e in events]
    assert kinds[0] == "turn" and kinds[1] == "thinking" and kinds[-2:] == ["turn", "done"]
    assert set(kinds[2:-2]) <= {"token", "reasoning"}
    bot = json.loads(events[-2].data)
    assert "".join(json.loads(e.data)["data"] for e in events if e.event == "token") == bot["text"]
    ids = [int(e.id) for e in events]
    assert ids == sorted(ids)


def test_stream_1_works_without_the_accept_header(server, channel, alice):
    response = httpx.post(
        f"{server}/api/channels/lobby/messages?stream=1", json={"text": "hi"}, headers=auth(alice), timeout=20
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: done" in response.text


def test_the_sync_call_returns_the_turn_the_watchers_saw(server, channel, alice):
    async def scenario():
        host = server.removeprefix("http://")
        async with websockets.connect(f"ws://{host}/ws/lobby?watch=1", origin=server) as watcher:
            await watcher.recv()
            answer = await asyncio.to_thread(
                httpx.post,
                f"{server}/api/channels/lobby/messages",
                json={"text": "hello"},
                headers=await db_call(auth)(alice),
                timeout=20,
            )
            while True:
                event = json.loads(await watcher.recv())
                if event["type"] == "turn" and event["role"] == "bot":
                    return answer.json(), event

    answer, seen = asyncio.run(scenario())
    seen = {k: v for k, v in seen.items() if k not in ("type", "channel", "seq")}
    # The answer has the substrate too; the event leaves it out (clients fetch it).
    assert {k: v for k, v in answer["bot_turn"].items() if k not in SUBSTRATE_FIELDS} == seen
    assert set(SUBSTRATE_FIELDS) <= set(answer["bot_turn"])


def test_leaving_a_stream_does_not_stop_the_generation(server, channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.01, tokens=[" w"] * 60, max_tokens=100)
    with (
        httpx.Client(base_url=server, timeout=20) as client,
        client.stream(
            "POST", "/api/channels/lobby/messages?stream=1", json={"text": "go"}, headers=auth(alice)
        ) as response,
    ):
        for event in EventSource(response).iter_sse():
            if event.event == "token":
                break  # hang up mid-reply
    bot = wait_for(lambda: Turn.objects.filter(role="bot").exclude(finish_reason=None).first(), timeout=10)
    assert bot.finish_reason == "stop" and bot.text == " w" * 60


def test_a_watch_key_stream_of_a_private_channel_carries_the_tool_steps_in_order(
    server, private_channel, alice, openai_server
):
    """Issue 17's steps over SSE, to an anonymous holder of a private channel's watch key:
    the call as it streams, its result, then the answer — as stored on the turn."""
    from chat.models import Provider

    Provider.objects.create(name="tooly", kind="openai_compat", base_url=openai_server.base_url)
    private_channel.params = {**private_channel.params, "provider": "tooly"}
    private_channel.tools = ["calculator"]
    private_channel.save(update_fields=["params", "tools"])
    openai_server.behaviour.tool_calls = [
        [{"id": "c1", "name": "calculator", "arguments": json.dumps({"expression": "6*7"})}]
    ]
    openai_server.behaviour.tool_fragment = 4
    openai_server.behaviour.tokens = ["It is", " 42."]
    key = private_channel.watch_key
    with (
        httpx.Client(base_url=server, timeout=20) as client,
        connect_sse(client, "GET", f"/api/channels/backroom/events?key={key}") as source,
    ):
        events = without_presence(source)
        assert next(events).event == "history"
        sent = client.post("/api/channels/backroom/messages", json={"text": "6*7?"}, headers=auth(alice))
        assert sent.status_code in (200, 202), sent.content
        seen = []
        for event in events:
            seen.append((event.event, json.loads(event.data)))
            if event.event == "done":
                break
    kinds = [kind for kind, _ in seen]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("token")
    deltas = [
        data["arguments_delta"] for kind, data in seen if kind == "tool_call" and "arguments_delta" in data
    ]
    assert json.loads("".join(deltas)) == {"expression": "6*7"}
    [result] = [data for kind, data in seen if kind == "tool_result"]
    assert result["call_id"] == "c1" and result["ok"] is True and result["content"].strip() == "42"
    bot = Turn.objects.get(role="bot")
    assert bot.text == "It is 42." and bot.steps[0]["content"] == result["content"]
    assert "".join(data["data"] for kind, data in seen if kind == "token") == "It is 42."
