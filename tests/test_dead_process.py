"""A server process killed mid-reply (issue 11, item 10): another process notices its
lock expire and closes the reply as `error` with the text that was saved, within 20 s,
without anyone doing anything; history and the saved turn agree."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
import websockets
from websockets.typing import Origin

from chat.models import Turn
from chat.realtime.async_db import db_call
from tests.conftest import use_slow_model
from tests.processes import free_port, live_env, live_server
from tests.ws_helpers import token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def connect(host: str, path: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return websockets.connect(
        f"ws://{host}{path}", origin=Origin(f"http://{host}"), additional_headers=headers
    )


async def test_a_reply_whose_process_was_killed_is_closed_by_another_process(
    channel, alice, openai_server, django_db_setup
):
    await db_call(use_slow_model)(channel, openai_server, delay=0.05, tokens=[" w"] * 2000, max_tokens=4000)
    env = live_env(RECOVERY_INTERVAL_SECONDS="1")
    doomed_port, survivor_port = free_port(), free_port()
    with live_server("uvicorn", survivor_port, env), live_server("uvicorn", doomed_port, env) as doomed:
        survivor, writer = f"127.0.0.1:{survivor_port}", f"127.0.0.1:{doomed_port}"
        async with (
            connect(survivor, "/ws/lobby?watch=1") as watcher,
            connect(writer, "/ws/lobby", await token_for(alice)) as chat,
        ):
            await watcher.recv()
            await chat.recv()
            await chat.send(json.dumps({"type": "message", "text": "talk for a long while"}))
            # Let the reply run until its text has reached the database (saved every second).
            deadline = time.monotonic() + 20
            while not await db_call(Turn.objects.filter(role="bot").exclude(text="").exists)():
                assert time.monotonic() < deadline, "the reply never saved any text"
                await asyncio.sleep(0.1)
            os.killpg(doomed.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            final = None
            async with asyncio.timeout(40):
                while True:
                    event = json.loads(await watcher.recv())
                    if event["type"] == "turn" and event["role"] == "bot":
                        final = event
                    if event["type"] == "done":
                        break
            took = time.monotonic() - killed_at
            assert took <= 20, f"closed {took:.1f} s after the kill"
        assert final is not None and final["finish_reason"] == "error"
        saved = await db_call(Turn.objects.get)(role="bot")
        assert saved.finish_reason == "error" and saved.text == final["text"] and saved.text
        async with connect(survivor, "/ws/lobby?watch=1") as late:
            history = json.loads(await late.recv())
        assert history["generating"] is None
        assert [t["text"] for t in history["turns"] if t["role"] == "bot"] == [saved.text]
