"""Broadcast frames written straight to the socket (channels_app/direct_send.py): taken
only where it is safe, and what a client reads is the same either way."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import uvicorn
import websockets
from websockets.typing import Origin

from channels_app.direct_send import direct_socket, framed
from chat.models import ApiToken
from chat.realtime.async_db import db_call
from tests.processes import free_port, live_servers

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_frame_is_framed_as_websockets_frames_it():
    from websockets.frames import Frame, Opcode

    for size in (0, 125, 126, 65535, 65536, 200_000):
        text = "é" * (size // 2) + "x" * (size % 2)
        expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
        assert framed(text) == expected


def test_uvicorn_websockets_sockets_are_written_directly_with_or_without_compression():
    """Against a real uvicorn, once the handshake is complete: a client that negotiated
    permessage-deflate (browsers do) may be sent uncompressed messages (RFC 7692)."""
    seen: list[bool] = []

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hello"})  # the handshake is complete
        seen.append(direct_socket(send) is not None)
        await send({"type": "websocket.close"})

    port = free_port()
    config = uvicorn.Config(app, port=port, ws="websockets", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)

        async def open_and_close(compression: str | None) -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=compression) as ws:
                assert await ws.recv() == "hello"
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()

        asyncio.run(open_and_close(None))
        asyncio.run(open_and_close("deflate"))
    finally:
        server.should_exit = True
        thread.join(10)
    assert seen == [True, True]
    assert direct_socket(None) is None and direct_socket(print) is None  # daphne, tests


async def read_reply(host: str, compression: str | None, ready: asyncio.Event) -> list[tuple]:
    """Every frame a watcher reads from its history to the reply's done."""
    url = f"ws://{host}/ws/lobby?watch=1"
    async with websockets.connect(url, origin=Origin(f"http://{host}"), compression=compression) as ws:
        got = []
        assert json.loads(await ws.recv())["type"] == "history"
        ready.set()
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if event["type"] == "presence":
                continue
            got.append((event["type"], event.get("seq"), event.get("data"), event.get("text")))
            if event["type"] == "done":
                return got


@pytest.mark.asyncio
async def test_direct_and_queued_sockets_read_the_same_frames_in_order(channel, alice):
    """Watchers on uvicorn (written directly, compressed or not) and on daphne (through
    the queue and the server's send) read the same reply, frame for frame."""
    token = await db_call(ApiToken.issue)(alice)
    with (
        live_servers("uvicorn", 1, DEMO_TOKEN_DELAY="0.012") as (a,),
        live_servers("daphne", 1, DEMO_TOKEN_DELAY="0.012") as (b,),
    ):
        ready = [asyncio.Event(), asyncio.Event(), asyncio.Event()]
        readers = [
            asyncio.create_task(read_reply(a, None, ready[0])),
            asyncio.create_task(read_reply(a, "deflate", ready[1])),
            asyncio.create_task(read_reply(b, "deflate", ready[2])),
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
        async with httpx.AsyncClient(base_url=f"http://{b}", timeout=30) as client:
            response = await client.post(
                "/api/channels/lobby/inject",
                json={"role": "user", "text": "first"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 201
            response = await client.post(
                "/api/channels/lobby/messages",
                json={"text": "Tell me a long story."},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code in (200, 202)
        direct, compressed, queued = await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert direct == compressed == queued
    seqs = [seq for _, seq, _, _ in direct]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert sum(kind == "token" for kind, *_ in direct) > 5
