"""Issue 11, item 13: what ``get_history`` may cost. At most one full history a second
per socket (requests in between are answered together by the next one), and a replay
(``since``) too long to be worth it is answered with a full history instead."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.typing import Origin

from channels_app.consumers import HISTORY_INTERVAL_S
from chat import services
from chat.realtime import store
from chat.realtime.async_db import db_call
from chat.realtime.history import REPLAY_MAX_BYTES, REPLAY_MAX_EVENTS
from tests.ws_helpers import open_socket, receive, token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def frames_within(ws: Any, seconds: float) -> list[tuple[float, dict[str, Any]]]:
    """Every frame but presence that arrives within ``seconds``, with its arrival time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    seen: list[tuple[float, dict[str, Any]]] = []
    while (left := deadline - loop.time()) > 0:
        try:
            async with asyncio.timeout(left):
                frame = json.loads(await ws.recv())
        except TimeoutError:
            break
        if frame["type"] != "presence":
            seen.append((loop.time(), frame))
    return seen


async def test_a_burst_of_fifty_get_history_is_answered_by_one_history_a_second_later(host, channel):
    loop = asyncio.get_running_loop()
    async with websockets.connect(f"ws://{host}/ws/lobby?watch=1", origin=Origin(f"http://{host}")) as ws:
        assert json.loads(await ws.recv())["type"] == "history"
        connected_at = loop.time()
        for _ in range(50):
            await ws.send(json.dumps({"type": "get_history"}))
        await ws.send(json.dumps({"type": "ping"}))
        seen = await frames_within(ws, 2.5 * HISTORY_INTERVAL_S)
        kinds = [frame["type"] for _, frame in seen]
        assert kinds == ["pong", "history"]  # the ping is not held up by the burst
        history_at = seen[1][0]
        assert history_at - connected_at >= 0.9 * HISTORY_INTERVAL_S
        # Still usable: it answers, and a later request gets a history of its own.
        await ws.send(json.dumps({"type": "ping"}))
        await ws.send(json.dumps({"type": "get_history"}))
        later = [frame["type"] for _, frame in await frames_within(ws, 1.5 * HISTORY_INTERVAL_S)]
        assert later == ["pong", "history"]


async def test_history_requests_are_not_throttled_once_a_second_has_passed(host, channel):
    async with websockets.connect(f"ws://{host}/ws/lobby?watch=1", origin=Origin(f"http://{host}")) as ws:
        assert json.loads(await ws.recv())["type"] == "history"
        seen = await frames_within(ws, 1.1 * HISTORY_INTERVAL_S)  # nothing happens meanwhile
        assert seen == []
        await ws.send(json.dumps({"type": "get_history"}))
        async with asyncio.timeout(0.5 * HISTORY_INTERVAL_S):  # at once, not a second later
            assert json.loads(await ws.recv())["type"] == "history"


def injected(channel, alice, count: int, text: str) -> int:
    """Add ``count`` turns (one event each); the channel's seq before them."""
    before = int(store.sync_redis().get(store.key(channel.pk, "seq")) or 0)
    for _ in range(count):
        services.inject(channel=channel, user=alice, role="user", text=text)
    return before


async def replay_or_history(channel_name: str, token: str, since: int) -> list[dict[str, Any]]:
    """Ask a fresh socket for the events after ``since``: the frames that answer."""
    socket, _, _ = await open_socket(f"/ws/{channel_name}", token=token)
    history = await receive(socket)
    await socket.send_json_to({"type": "get_history", "since": since})
    answer = [await receive(socket)]
    while answer[-1]["type"] == "turn" and answer[-1]["seq"] < history["seq"]:
        answer.append(await receive(socket))
    await socket.disconnect()
    return answer


@pytest.fixture
def unlimited(settings):
    settings.MESSAGES_PER_MINUTE = 0  # injects count like messages


async def test_a_replay_of_more_than_500_events_is_answered_with_a_full_history(channel, alice, unlimited):
    since = await db_call(injected)(channel, alice, REPLAY_MAX_EVENTS + 1, "short")
    token = await token_for(alice)
    answer = await replay_or_history("lobby", token, since)
    assert [frame["type"] for frame in answer] == ["history"]
    answer = await replay_or_history("lobby", token, since + 1)  # exactly REPLAY_MAX_EVENTS
    assert [frame["type"] for frame in answer] == ["turn"] * REPLAY_MAX_EVENTS


async def test_a_replay_of_more_than_256_kib_is_answered_with_a_full_history(channel, alice, unlimited):
    long_text = "x" * 8000  # a frame of some 8.2 KB each
    count = REPLAY_MAX_BYTES // 8000 + 1
    since = await db_call(injected)(channel, alice, count, long_text)
    token = await token_for(alice)
    assert [frame["type"] for frame in await replay_or_history("lobby", token, since)] == ["history"]
    fewer = await replay_or_history("lobby", token, since + 3)  # under the bound again
    assert [frame["type"] for frame in fewer] == ["turn"] * (count - 3)
