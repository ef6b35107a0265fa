"""When who may see a channel changes, exactly the connections no longer allowed close,
in every process, before anything that follows reaches them (issue 11, items 2 and 5):
two real server processes, WebSocket clients and SSE streams."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
import websockets
from django.conf import settings
from websockets.typing import Origin

from chat.models import ApiToken
from chat.realtime.async_db import db_call
from tests.processes import live_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker):
    # The test process's secret key, so that login sessions made here hold there.
    with live_servers("uvicorn", 2, LOGIN_RECHECK_SECONDS="0.5", SECRET_KEY=settings.SECRET_KEY) as hosts:
        yield {"A": hosts[0], "B": hosts[1]}


def connect(host: str, path: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return websockets.connect(
        f"ws://{host}{path}", origin=Origin(f"http://{host}"), additional_headers=headers, open_timeout=10
    )


async def issue(user) -> str:
    return await db_call(ApiToken.issue)(user)


async def until_closed_or_text(ws, text: str, timeout: float = 10) -> int | None:
    """The close code if the socket closes first; None if a turn with ``text`` arrives."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "turn" and frame["text"] == text:
                    return None
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None
        return closed.rcvd.code


class SseReader(threading.Thread):
    """An SSE stream read in a thread: every data line it got, and whether it ended."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        super().__init__(daemon=True)
        self.url, self.headers = url, headers or {}
        self.lines: list[str] = []
        self.started = threading.Event()
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=30) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.lines.append(line)
                        self.started.set()
        except httpx.HTTPError:
            pass
        finally:
            self.started.set()
            self.ended.set()


async def inject(host: str, token: str, text: str, channel: str = "lobby") -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"http://{host}/api/channels/{channel}/inject",
            json={"role": "user", "text": text},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text


async def test_making_a_channel_private_closes_outsiders_everywhere_and_keeps_members(
    servers, channel, alice, bob, carol
):
    alice_token, bob_token, carol_token = await issue(alice), await issue(bob), await issue(carol)
    anonymous_a = await connect(servers["A"], "/ws/lobby?watch=1").__aenter__()
    anonymous_b = await connect(servers["B"], "/ws/lobby?watch=1").__aenter__()
    outsider_b = await connect(servers["B"], "/ws/lobby", carol_token).__aenter__()
    member_b = await connect(servers["B"], "/ws/lobby", bob_token).__aenter__()
    for ws in (anonymous_a, anonymous_b, outsider_b, member_b):
        assert json.loads(await ws.recv())["type"] == "history"
    stream = SseReader(f"http://{servers['B']}/api/channels/lobby/events")
    stream.start()
    assert await asyncio.to_thread(stream.started.wait, 10)

    async with httpx.AsyncClient() as client:
        response = await client.patch(
            f"http://{servers['A']}/api/channels/lobby",
            json={"visibility": "private"},
            headers={"Authorization": f"Bearer {alice_token}"},
        )
    assert response.status_code == 200
    await inject(servers["A"], alice_token, "a private matter")

    for ws in (anonymous_a, anonymous_b, outsider_b):
        assert await until_closed_or_text(ws, "a private matter") == 4003
    assert await until_closed_or_text(member_b, "a private matter") is None
    assert await asyncio.to_thread(stream.ended.wait, 10)
    assert not any("a private matter" in line for line in stream.lines)
    await member_b.close()


async def test_a_removed_member_is_closed_before_the_next_turn_on_another_process(
    servers, private_channel, alice, bob
):
    alice_token, bob_token = await issue(alice), await issue(bob)
    member_b = await connect(servers["B"], "/ws/backroom", bob_token).__aenter__()
    watching_b = await connect(servers["B"], "/ws/backroom?watch=1", bob_token).__aenter__()
    for ws in (member_b, watching_b):
        assert json.loads(await ws.recv())["type"] == "history"
    async with httpx.AsyncClient() as client:
        response = await client.delete(
            f"http://{servers['A']}/api/channels/backroom/members/bob",
            headers={"Authorization": f"Bearer {alice_token}"},
        )
    assert response.status_code == 204
    await inject(servers["A"], alice_token, "after bob left", channel="backroom")
    for ws in (member_b, watching_b):
        assert await until_closed_or_text(ws, "after bob left") == 4003


async def test_an_sse_stream_ends_when_its_token_is_rotated_or_deleted(servers, channel, bob):
    token = await issue(bob)
    stream = SseReader(
        f"http://{servers['B']}/api/channels/lobby/events", {"Authorization": f"Bearer {token}"}
    )
    stream.start()
    assert await asyncio.to_thread(stream.started.wait, 10)
    assert not stream.ended.is_set()
    await issue(bob)  # rotating replaces the token the stream was opened with
    assert await asyncio.to_thread(stream.ended.wait, 10)


async def test_an_sse_stream_ends_when_its_login_session_ends(servers, channel, bob):
    from django.contrib.sessions.models import Session as LoginSession

    from tests.ws_helpers import session_cookie_for

    cookie = await session_cookie_for(bob)
    stream = SseReader(f"http://{servers['A']}/api/channels/lobby/events", {"Cookie": cookie})
    stream.start()
    assert await asyncio.to_thread(stream.started.wait, 10)
    assert not stream.ended.is_set()
    await db_call(LoginSession.objects.all().delete)()  # logged out everywhere
    assert await asyncio.to_thread(stream.ended.wait, 10)
