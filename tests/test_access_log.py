"""Watch keys travel in query strings; the servers' access logs must not keep them."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import httpx
import pytest
import websockets
from django.conf import settings
from websockets.typing import Origin

from tests.processes import clean_env, free_port, output, running

SECRET = "Sup3rSecretWatchKey"


async def visit(base: str, host: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        await client.get(f"/watch/x?key={SECRET}")
        await client.get(f"/api/channels/x/events?key={SECRET}")
        await client.get(f"/watch/x?theme=dark&key={SECRET}&big=1")
    with contextlib.suppress(websockets.WebSocketException):
        async with websockets.connect(f"ws://{host}/ws/x?watch=1&key={SECRET}", origin=Origin(base)) as ws:
            await ws.recv()


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_watch_keys_are_redacted_from_the_access_log(server, tmp_path):
    port = free_port()
    host = f"127.0.0.1:{port}"
    env = clean_env(
        COLLOQUY_VAR_DIR=str(tmp_path), REDIS_URL=settings.REDIS_URL, REDIS_PREFIX=settings.REDIS_PREFIX
    )
    command = [sys.executable, "manage.py", "serve", "--port", str(port), "--server", server]
    with running(command, env, f"http://{host}/static/css/colloquy.css") as process:
        asyncio.run(visit(f"http://{host}", host))
    log = output(process)
    assert SECRET not in log
    assert "/watch/x?key=[redacted]" in log
    assert "/api/channels/x/events?key=[redacted]" in log
    assert "/watch/x?theme=dark&key=[redacted]&big=1" in log
    if server == "uvicorn":  # daphne logs WebSocket paths without their query
        assert "/ws/x?watch=1&key=[redacted]" in log
