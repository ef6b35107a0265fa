"""Revoked and expired tokens on a real server process: refused at the WebSocket
handshake and on the event stream as on REST (401), and the sockets and streams they
opened end within LOGIN_RECHECK_SECONDS."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import timedelta
from typing import Any

import httpx
import pytest
import websockets
from django.utils import timezone
from websockets.typing import Origin

from chat.models import ApiToken, hash_token
from chat.realtime.async_db import db_call
from tests.processes import live_servers

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with live_servers("uvicorn", 1, LOGIN_RECHECK_SECONDS="0.3") as hosts:
        yield hosts[0]


def make_token(user: Any, scopes: list[str], **extra: Any) -> tuple[ApiToken, str]:
    raw = secrets.token_urlsafe(32)
    made = ApiToken.objects.create(
        user=user, name=secrets.token_hex(4), scopes=scopes, key_hash=hash_token(raw), **extra
    )
    return made, raw


def expire(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def revoke(token: ApiToken) -> None:
    from chat.services.tokens import revoke_token

    revoke_token(user=token.user, token_id=token.pk)


def connect(host: str, path: str, raw: str) -> Any:
    return websockets.connect(
        f"ws://{host}{path}",
        origin=Origin(f"http://{host}"),
        additional_headers={"Authorization": f"Bearer {raw}"},
        open_timeout=10,
    )


async def close_code(ws: Any, timeout: float = 10) -> int | None:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


@pytest.mark.parametrize("end", [revoke, expire], ids=["revoked", "expired"])
async def test_an_ended_token_is_refused_everywhere(server, channel, alice, end):
    made, raw = await db_call(make_token)(alice, ["chats:read", "chats:write"])
    await db_call(end)(made)
    headers = {"Authorization": f"Bearer {raw}"}
    async with httpx.AsyncClient(base_url=f"http://{server}", timeout=10) as client:
        rest = await client.get("/api/me", headers=headers)
        assert rest.status_code == 401 and rest.json()["code"] == "auth_required"
        stream = await client.get("/api/channels/lobby/events", headers=headers)
        assert stream.status_code == 401 and stream.json() == rest.json()
    for path in ("/ws/lobby", "/ws/lobby?watch=1"):  # not even as an anonymous watcher
        async with connect(server, path, raw) as ws:
            assert await close_code(ws) == 4001


@pytest.mark.parametrize("end", [revoke, expire], ids=["revoked", "expired"])
async def test_open_sockets_and_streams_end_when_their_token_does(server, channel, alice, end):
    made, raw = await db_call(make_token)(alice, ["chats:read", "chats:write"])
    _, other_raw = await db_call(make_token)(alice, ["chats:read"])
    async with (
        connect(server, "/ws/lobby", raw) as chat,
        connect(server, "/ws/lobby?watch=1", raw) as watch,
        connect(server, "/ws/lobby", other_raw) as unaffected,
        httpx.AsyncClient(base_url=f"http://{server}", timeout=10) as client,
        client.stream(
            "GET", "/api/channels/lobby/events", headers={"Authorization": f"Bearer {raw}"}
        ) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        async with asyncio.timeout(10):
            while not (await anext(lines)).startswith("event: history"):
                pass
        for ws in (chat, watch, unaffected):
            assert json.loads(await ws.recv())["type"] == "history"
        await db_call(end)(made)
        assert await close_code(chat) == 4001
        assert await close_code(watch) == 4001
        async with asyncio.timeout(10):  # the stream ends (the client reconnects, and gets 401)
            async for _ in lines:
                pass
        await unaffected.send(json.dumps({"type": "ping"}))
        while (frame := json.loads(await unaffected.recv()))["type"] == "presence":
            pass
        assert frame["type"] == "pong"
