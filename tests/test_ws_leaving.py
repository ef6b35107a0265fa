"""Watchers leave in the middle of a reply all the time: that is no error."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect
from websockets.typing import Origin

from chat.models import ApiToken
from tests.conftest import use_slow_model, wait_for, wait_for_done
from tests.processes import free_port, live_env, live_server, output

pytestmark = pytest.mark.django_db(transaction=True)


def test_watchers_leaving_mid_reply_leave_no_error_in_the_server_log(channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.01, tokens=[f"w{i} " for i in range(150)])
    port = free_port()
    host = f"127.0.0.1:{port}"
    with live_server("uvicorn", port, live_env()) as server:
        watchers = [
            connect(f"ws://{host}/ws/lobby?watch=1", origin=Origin(f"http://{host}")) for _ in range(20)
        ]
        for watcher in watchers:
            watcher.recv(timeout=10)
        with connect(
            f"ws://{host}/ws/lobby",
            origin=Origin(f"http://{host}"),
            additional_headers={"Authorization": f"Bearer {ApiToken.issue(alice)}"},
        ) as chat:
            chat.recv(timeout=10)
            chat.send(json.dumps({"type": "message", "text": "go on"}))
            while json.loads(chat.recv(timeout=10))["type"] != "token":
                pass
            for watcher in watchers:  # gone while tokens are still being sent to them
                watcher.close()
            wait_for_done(channel, timeout=30)
        # uvicorn logs each socket's end: once all 21 have ended, anything they caused
        # is in the log.
        wait_for(lambda: output(server).count("connection closed") >= len(watchers) + 1)
        log = output(server)
    assert "socket writer failed" not in log and "Traceback" not in log, log
