"""A client too slow to keep up is resynchronised instead of stalling the channel: a
real server, a socket that stops reading, and a second socket that reads everything."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect
from websockets.typing import Origin
from websockets.uri import parse_uri

from chat.models import ApiToken
from tests.processes import live_servers

pytestmark = pytest.mark.django_db(transaction=True)

TURNS = 120
TEXT = "x" * 50_000  # big frames (under MAX_FRAME_BYTES) fill TCP buffers quickly


class StalledSocket:
    """A WebSocket client with a tiny receive window that reads only when told to: the
    server's writes to it back up (sans-I/O websockets over a plain TCP socket, so no
    library reads ahead on its behalf)."""

    def __init__(self, host: str, path: str):
        name, port = host.split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        self.sock.connect((name, int(port)))
        self.protocol = ClientProtocol(parse_uri(f"ws://{host}{path}"), origin=Origin(f"http://{host}"))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.pending: list[dict[str, object]] = []

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def recv(self, timeout: float = 30) -> dict[str, object]:
        self.sock.settimeout(timeout)
        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "the server closed the socket"
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self.pending.append(json.loads(bytes(event.data)))  # data is typed as any bytes-like
            self._flush()  # pongs
        return self.pending.pop(0)

    def close(self) -> None:
        self.sock.close()


def test_a_socket_that_stops_reading_gets_a_fresh_history_and_nobody_waits_for_it(channel, alice):
    token = ApiToken.issue(alice)
    with live_servers("uvicorn", 1, SEND_QUEUE_FRAMES="20", MAX_MESSAGE_CHARS="60000") as hosts:
        host = hosts[0]
        slow = StalledSocket(host, "/ws/lobby?watch=1")
        assert slow.recv(timeout=10)["type"] == "history"
        fast_seen: list[str] = []
        fast_ready = threading.Event()

        def read_fast() -> None:
            with connect(f"ws://{host}/ws/lobby?watch=1", origin=Origin(f"http://{host}")) as fast:
                fast.recv(timeout=10)
                fast_ready.set()
                while len(fast_seen) < TURNS:
                    event = json.loads(fast.recv(timeout=30))
                    if event["type"] == "turn":
                        fast_seen.append(event["text"])

        reader = threading.Thread(target=read_fast)
        reader.start()
        assert fast_ready.wait(10)
        with httpx.Client(base_url=f"http://{host}", timeout=30) as client:
            for i in range(TURNS):
                response = client.post(
                    "/api/channels/lobby/inject",
                    json={"role": "user", "text": f"{i} {TEXT}"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 201
        reader.join(60)
        assert not reader.is_alive()
        # The reader never waited for the slow one: every turn, in order.
        assert [text.split()[0] for text in fast_seen] == [str(i) for i in range(TURNS)]
        # The slow one, reading again, is brought up to date by a history instead of
        # the frames it could not take.
        kinds: list[object] = []
        while True:
            event = slow.recv()
            kinds.append(event["type"])
            last = f"{TURNS - 1} "
            if event["type"] == "turn" and str(event["text"]).startswith(last):
                break
            turns = event.get("turns") if event["type"] == "history" else None
            if isinstance(turns, list) and any(str(t["text"]).startswith(last) for t in turns):
                break
        slow.close()
        assert "history" in kinds, "the slow socket was sent every frame instead of a resync"
        assert kinds.count("turn") < TURNS
