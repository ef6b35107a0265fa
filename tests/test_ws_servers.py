"""Real server processes: two server processes (uvicorn, then daphne) on two ports
sharing Redis and the database, driven by real WebSocket clients."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from django.conf import settings
from websockets.typing import Origin

from chat.models import Turn
from chat.realtime.async_db import db_call
from tests.conftest import use_slow_model
from tests.processes import live_servers
from tests.ws_helpers import token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def servers(request, django_db_setup, django_db_blocker):
    """Two server processes, A and B, over the test database and the test Redis."""
    with live_servers(request.param, 2) as hosts:
        yield {"A": hosts[0], "B": hosts[1]}


def connect(host: str, path: str, token: str | None = None, origin: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return websockets.connect(
        f"ws://{host}{path}",
        origin=Origin(origin or f"http://{host}"),
        additional_headers=headers,
        open_timeout=10,
    )


async def frames_until(ws, kind: str, timeout: float = 15) -> list[dict]:
    out = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "presence":
                continue
            out.append(frame)
            if frame["type"] == kind:
                return out


async def test_watchers_on_b_see_every_event_of_a_chat_on_a(servers, channel, alice):
    token = await token_for(alice)
    watchers = [await connect(servers["B"], "/ws/lobby?watch=1").__aenter__() for _ in range(3)]
    for ws in watchers:
        assert json.loads(await ws.recv())["type"] == "history"
    async with connect(servers["A"], "/ws/lobby", token) as chat:
        assert json.loads(await chat.recv())["mode"] == "chat"
        await chat.send(json.dumps({"type": "message", "text": "I am happy to be here"}))
        sent = await frames_until(chat, "done")
    bot = await db_call(Turn.objects.get)(role="bot")
    for ws in watchers:
        seen = await frames_until(ws, "done")
        assert seen == sent  # every event, in order, identical
        seqs = [f["seq"] for f in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert "".join(f["data"] for f in seen if f["type"] == "token") == bot.text
        await ws.close()


async def test_interrupt_sent_through_b_stops_a_generation_running_in_a(
    servers, channel, alice, bob, openai_server
):
    await db_call(use_slow_model)(channel, openai_server, delay=0.01, tokens=[" x"] * 1000, max_tokens=2000)
    async with (
        connect(servers["A"], "/ws/lobby", await token_for(alice)) as chat_a,
        connect(servers["B"], "/ws/lobby", await token_for(bob)) as chat_b,
    ):
        await chat_a.recv()
        await chat_b.recv()
        await chat_a.send(json.dumps({"type": "message", "text": "go on and on"}))
        await frames_until(chat_b, "token")
        await chat_b.send(json.dumps({"type": "interrupt"}))
        started = asyncio.get_running_loop().time()
        tail = await frames_until(chat_b, "done", timeout=5)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert [f["type"] for f in tail][-3:] == ["turn", "interrupted", "done"]
    bot = await db_call(Turn.objects.get)(role="bot")
    assert bot.finish_reason == "interrupted" and 0 < len(bot.text) < 2000
    assert openai_server.disconnected.wait(3)


async def test_a_watcher_that_reconnects_with_since_gets_exactly_what_it_missed(servers, channel, alice):
    async with connect(servers["B"], "/ws/lobby?watch=1") as watcher:
        last_seq = json.loads(await watcher.recv())["seq"]
    async with connect(servers["A"], "/ws/lobby", await token_for(alice)) as chat:
        await chat.recv()
        for text in ("one", "two", "three"):
            await chat.send(json.dumps({"type": "inject", "role": "user", "text": text}))
            await frames_until(chat, "turn")
    async with connect(servers["B"], "/ws/lobby?watch=1") as watcher:
        assert json.loads(await watcher.recv())["type"] == "history"
        await watcher.send(json.dumps({"type": "get_history", "since": last_seq}))
        missed = [await frames_until(watcher, "turn") for _ in range(3)]
    assert [m[-1]["text"] for m in missed] == ["one", "two", "three"]
    assert [m[-1]["seq"] for m in missed] == [last_seq + 1, last_seq + 2, last_seq + 3]


async def test_a_foreign_origin_is_refused_by_the_server(servers, channel):
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(servers["A"], "/ws/lobby?watch=1", origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403


async def test_an_oversized_frame_closes_with_1009(servers, channel):
    async with connect(servers["A"], "/ws/lobby?watch=1") as ws:
        await ws.recv()
        await ws.send("x" * (settings.MAX_FRAME_BYTES + 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_a_ban_in_another_process_closes_sockets_on_both_servers(servers, channel, bob, admin_user):
    from chat.services import ban_user

    token = await token_for(bob)
    async with (
        connect(servers["A"], "/ws/lobby", token) as on_a,
        connect(servers["B"], "/ws/lobby", token) as on_b,
    ):
        await on_a.recv()
        await on_b.recv()
        await db_call(ban_user)(actor=admin_user, user=bob, reason="test")
        for ws in (on_a, on_b):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(3):
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4003
