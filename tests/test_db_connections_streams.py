"""Open event streams and waiting sends must not hold database connections: Django keeps
a request's connection until its response closes, so an SSE stream (which streams for
as long as its client stays) or a JSON send waiting for its reply would hold one all
that time, and DB_POOL_MAX of them would leave nothing for anyone else, replies included.
Found in review of the PostgreSQL pool; the same property is checked on SQLite."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from chat.models import ApiToken
from chat.realtime.async_db import db_call
from tests.processes import live_servers

pytestmark = pytest.mark.django_db(transaction=True)

POOL = 3


async def open_stream(client: httpx.AsyncClient, opened: asyncio.Event) -> None:
    async with client.stream("GET", "/api/channels/lobby/events", timeout=60) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: history"):
                opened.set()
        # (runs until cancelled)


@pytest.mark.asyncio
async def test_open_event_streams_do_not_starve_the_process_of_database_connections(channel, alice):
    token = await db_call(ApiToken.issue)(alice)
    with live_servers("uvicorn", 1, DB_POOL_MAX=str(POOL), DB_POOL_MIN="1") as (host,):
        async with httpx.AsyncClient(base_url=f"http://{host}") as client:
            opened = [asyncio.Event() for _ in range(POOL)]
            # Anonymous watchers of a public channel: no account needed to open these.
            # One at a time, each up to its history (the first alone proves the way works).
            streams = []
            try:
                for number, event in enumerate(opened, 1):
                    streams.append(asyncio.create_task(open_stream(client, event)))
                    try:
                        await asyncio.wait_for(event.wait(), 15)
                    except TimeoutError:
                        message = f"event stream {number} of {POOL} sent no history in 15 s"
                        raise AssertionError(message) from None
                started = time.monotonic()
                response = await client.get(
                    "/api/channels", headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                took = time.monotonic() - started
            finally:
                for task in streams:
                    task.cancel()
                await asyncio.gather(*streams, return_exceptions=True)
    assert response.status_code == 200, (response.status_code, response.text[:300], f"{took:.1f} s")
    assert took < 5, f"a plain read waited {took:.1f} s for a database connection"
