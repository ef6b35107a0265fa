"""Limits hold under concurrency, the same over HTTP and WebSocket: 50 parallel sends
against a limit of 10 let exactly 10 through."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from websockets.typing import Origin

from chat.models import ApiToken, Turn
from tests.conftest import wait_until_no_generation
from tests.processes import live_servers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with live_servers("uvicorn", 2, MESSAGES_PER_MINUTE="10", SYNC_REPLY_TIMEOUT="0.1") as hosts:
        yield hosts


def test_fifty_parallel_sends_over_http_and_websocket_let_exactly_ten_through(server, channel, alice):
    token = ApiToken.issue(alice)
    # The rate window is a calendar minute: do not start a burst right before it turns.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)

    async def over_http(client: httpx.AsyncClient, host: str) -> bool:
        response = await client.post(
            f"http://{host}/api/channels/lobby/messages",
            json={"text": "http"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code in (200, 202, 429), response.text
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) > 0
        return response.status_code != 429

    async def over_websocket(host: str, socket: int, count: int) -> list[bool]:
        # Every socket sees every turn of the channel: only its own texts count as its own.
        own = {f"ws {socket}.{n}" for n in range(count)}
        outcomes: list[bool] = []
        async with websockets.connect(
            f"ws://{host}/ws/lobby",
            origin=Origin(f"http://{host}"),
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as ws:
            await ws.recv()
            for text in sorted(own):
                await ws.send(json.dumps({"type": "message", "text": text}))
            while len(outcomes) < count:
                event = json.loads(await ws.recv())
                if event["type"] == "error":
                    assert event["code"] == "rate_limited" and event["retry_after"] > 0
                    outcomes.append(False)
                elif event["type"] == "turn" and event["role"] == "user" and event["text"] in own:
                    outcomes.append(True)
        return outcomes

    async def burst() -> list[bool]:
        async with httpx.AsyncClient(timeout=30) as client:
            http = [over_http(client, server[i % 2]) for i in range(25)]
            ws = [over_websocket(server[i % 2], i, 5) for i in range(5)]
            results: list[bool | list[bool]] = await asyncio.gather(*http, *ws)
        flat: list[bool] = []
        for result in results:
            flat.extend(result if isinstance(result, list) else [result])
        return flat

    outcomes = asyncio.run(burst())
    assert len(outcomes) == 50
    assert sum(outcomes) == 10
    assert Turn.objects.filter(role="user").count() == 10  # nothing refused was saved
    wait_until_no_generation()  # the servers answer those ten; let them finish first
