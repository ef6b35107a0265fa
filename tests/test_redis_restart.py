"""Issue 11, item 4: Redis killed and started again under open screens. Two real server
processes run over a redis-server of the test's own, which the test kills (SIGKILL) and
starts again on the same port, empty or with its data (an append-only file). Every open
screen — a watch socket on each process, an event stream, a browser page — must end up
showing every turn added afterwards, and a reply that was being written must end
(`stop` or `error`) within seconds on every screen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from httpx_sse import aconnect_sse
from websockets.typing import Origin

from chat.models import ApiToken, Turn
from chat.realtime.async_db import db_call
from tests.conftest import use_slow_model
from tests.processes import free_port, live_env, live_server
from tests.test_unavailable import redis_binary

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_S = 20  # for every screen to catch up after Redis is back


class RestartableRedis:
    """A redis-server on a port of its own, killed and started again on that port:
    empty each time, or (``keep_data``) with everything it had (fsync on every write)."""

    def __init__(self, directory: Path, *, keep_data: bool) -> None:
        self.port = free_port()
        self.directory = directory
        self.keep_data = keep_data
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.keep_data else []
        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            [redis_binary(), *where, "--save", "", *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:  # until it answers (and has loaded its data): a condition, not a sleep
            try:
                client.ping()
                break
            except redis.ConnectionError:  # refused, or LOADING
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def empty_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path, keep_data=False)
    yield server
    server.kill()


@pytest.fixture(params=[False, True], ids=["comes-back-empty", "comes-back-with-its-data"])
def restartable_redis(request: Any, tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path, keep_data=request.param)
    yield server
    server.kill()


@pytest.fixture
def redis_with_data(tmp_path: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path, keep_data=True)
    yield server
    server.kill()


@contextlib.contextmanager
def two_servers(own_redis: RestartableRedis) -> Iterator[tuple[str, str]]:
    """Two uvicorn processes over the test database and ``own_redis``, each sweeping
    for dead replies every second."""
    env = live_env(RECOVERY_INTERVAL_SECONDS="1")
    env["REDIS_URL"] = own_redis.url
    ports = free_port(), free_port()
    with live_server("uvicorn", ports[0], env), live_server("uvicorn", ports[1], env):
        yield f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"


def inject(host: str, token: str, text: str, *, timeout: float = 15) -> None:
    """Add a turn through the REST API; while the server has not reached Redis again it
    answers 503 (and saves nothing), so try again until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(
            f"http://{host}/api/channels/lobby/inject",
            json={"role": "agent", "text": text},
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        )
        if response.status_code == 201:
            return
        assert response.status_code == 503 and time.monotonic() < deadline, response.text
        time.sleep(0.1)


class Screen:
    """What a client that follows the protocol shows: a ``history`` replaces everything,
    numbered events apply in seq order, one it already has is skipped, a gap is healed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq: int | None = None
        self.turns: dict[int, dict[str, Any]] = {}
        self.generating: dict[str, Any] | None = None
        self.params: dict[str, Any] = {}
        self.histories = 0
        self.late: list[int] = []  # seqs of text sent for a reply this screen shows ended
        self.closed: str | None = None  # why the screen stopped, if it did

    def apply(self, event: dict[str, Any]) -> int | None:
        """Apply one frame; returns the seq to heal a gap from, when there is one."""
        kind = event["type"]
        if kind == "history":
            self.histories += 1
            self.seq = event["seq"]
            self.turns = {turn["id"]: turn for turn in event["turns"]}
            self.generating = event["generating"]
            self.params = event["params"]
            return None
        if "seq" not in event:
            return None  # presence, pong, errors to this client
        if self.seq is not None and event["seq"] <= self.seq:
            return None
        if self.seq is not None and event["seq"] > self.seq + 1:
            return self.seq
        self.seq = event["seq"]
        if kind == "turn":
            self.turns[event["id"]] = event
            if self.generating and self.generating["turn_id"] == event["id"]:
                self.generating = None
        elif kind == "thinking":
            self.generating = {"turn_id": event["turn_id"], "text": "", "reasoning": ""}
        elif kind == "token" and self.generating and self.generating["turn_id"] == event["turn_id"]:
            self.generating["text"] += event["data"]
        elif kind == "token" and self.finished(event["turn_id"]):
            self.late.append(event["seq"])
        elif kind == "done" and self.generating and self.generating["turn_id"] == event["turn_id"]:
            self.generating = None
        elif kind == "turn_removed":
            self.turns.pop(event["id"], None)
        elif kind == "reset":
            self.turns, self.generating = {}, None
        elif kind == "channel_updated":
            self.params = event["params"]
        return None

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def texts(self) -> list[str]:
        return [self.turns[turn_id]["text"] for turn_id in sorted(self.turns)]

    def finished(self, turn_id: int) -> str | None:
        """The finish reason this screen shows for the turn (None: still writing)."""
        turn = self.turns.get(turn_id)
        if turn is None or (self.generating and self.generating["turn_id"] == turn_id):
            return None
        return turn["finish_reason"]


class SocketScreen(Screen):
    """A WebSocket client; it never reconnects, so it shows only what its one socket got."""

    def __init__(self, host: str, *, token: str | None = None) -> None:
        super().__init__(f"socket on {host}{' (chat)' if token else ''}")
        self.host, self.token = host, token
        self.ws: Any = None

    async def open(self) -> None:
        path = "/ws/lobby" if self.token else "/ws/lobby?watch=1"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.ws = await websockets.connect(
            f"ws://{self.host}{path}", origin=Origin(f"http://{self.host}"), additional_headers=headers
        )
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                since = self.apply(json.loads(raw))
                if since is not None:
                    await self.ws.send(json.dumps({"type": "get_history", "since": since}))
        except websockets.ConnectionClosed as closed:
            self.closed = f"closed with {closed.rcvd.code if closed.rcvd else 'no code'}"
            return
        self.closed = "closed"

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.ws.close()


class StreamScreen(Screen):
    """An event-stream client, like a browser's EventSource: when the stream ends (or
    shows a gap) it connects again with the last id it got as Last-Event-ID."""

    def __init__(self, host: str) -> None:
        super().__init__(f"event stream on {host}")
        self.host = host
        self.last_event_id: str | None = None
        self.connections = 0

    async def open(self) -> None:
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client:
            while True:
                headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
                with contextlib.suppress(httpx.HTTPError):
                    async with aconnect_sse(
                        client, "GET", f"http://{self.host}/api/channels/lobby/events", headers=headers
                    ) as source:
                        if source.response.status_code == 200:
                            self.connections += 1
                            async for event in source.aiter_sse():
                                if not event.data:
                                    continue
                                if event.id:
                                    self.last_event_id = event.id
                                if self.apply(json.loads(event.data)) is not None:
                                    break  # a gap: connect again from the last id
                await asyncio.sleep(0.25)  # the client's reconnection delay (EventSource's retry)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


async def until(condition: Callable[[], Any], what: Callable[[], str], timeout: float = DEADLINE_S) -> float:
    """Poll ``condition`` until it holds; returns how long that took. ``what`` describes
    the state when it did not."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"after {timeout} s: {what()}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def describe(screens: list[Screen]) -> str:
    return "; ".join(
        f"{s.name}: {s.texts()} {s.params} (seq {s.seq}, {s.histories} histories, {s.closed})"
        for s in screens
    )


async def test_after_redis_restarts_every_open_screen_shows_the_turns_added_since(
    restartable_redis, channel, alice, django_db_setup
):
    token = await db_call(ApiToken.issue)(alice)
    with two_servers(restartable_redis) as (first, second):
        screens: list[Screen] = [SocketScreen(first), SocketScreen(second), StreamScreen(second)]
        for screen in screens:
            await screen.open()
        await until(lambda: all(s.histories for s in screens), lambda: "every screen has its first history")
        before = [f"before the restart {i}" for i in range(5)]
        for text in before:
            await asyncio.to_thread(inject, first, token, text)
        await until(lambda: all(s.texts() == before for s in screens), lambda: describe(screens))

        restartable_redis.kill()
        # Committed while Redis is down (the change is saved, its event cannot be sent):
        # every screen must still come to show it.
        patched = httpx.patch(
            f"http://{first}/api/channels/lobby",
            json={"params": {"temperature": 0.3}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        )
        assert patched.status_code == 200, patched.text
        restartable_redis.start()

        after = [f"after the restart {i}" for i in range(3)]
        for text in after:
            await asyncio.to_thread(inject, first, token, text)
        await until(
            lambda: all(s.texts() == before + after and s.params.get("temperature") == 0.3 for s in screens),
            lambda: f"every screen shows every turn and the new settings: {describe(screens)}",
        )
        for screen in screens:
            assert screen.closed is None, f"{screen.name}: {screen.closed}"  # the sockets stayed open
            await screen.close()


async def start_a_long_reply(first: str, second: str, token: str) -> tuple[SocketScreen, list[Screen]]:
    """Screens on both processes (the chat socket on the first), and a reply that would
    take minutes being written."""
    chat = SocketScreen(first, token=token)
    screens: list[Screen] = [chat, SocketScreen(second), StreamScreen(second)]
    for screen in screens:
        await screen.open()
    await until(lambda: all(s.histories for s in screens), lambda: "every screen has its first history")
    await chat.ws.send(json.dumps({"type": "message", "text": "talk for a long while"}))
    await until(
        lambda: all(s.generating and s.generating["text"] for s in screens),
        lambda: f"every screen shows the reply being written: {[s.generating for s in screens]}",
    )
    return chat, screens


async def the_reply_ends_everywhere(bot_id: int, screens: list[Screen], since: float) -> None:
    """Within DEADLINE_S of ``since``, the reply is closed in the database and every
    screen shows it ended, as saved, with no text of it arriving after its end."""
    while (saved := await db_call(Turn.objects.get)(pk=bot_id)).finish_reason is None:
        assert time.monotonic() - since < DEADLINE_S, "the reply is still open in the database"
        await asyncio.sleep(0.1)
    assert saved.finish_reason in ("stop", "error")
    await until(
        lambda: all(s.finished(bot_id) == saved.finish_reason for s in screens),
        lambda: (
            f"every screen shows the reply ended as {saved.finish_reason}: "
            + str([(s.name, s.finished(bot_id), s.generating) for s in screens])
        ),
        timeout=DEADLINE_S - (time.monotonic() - since),
    )
    for screen in screens:
        assert screen.turns[bot_id]["text"] == saved.text, screen.name
        assert screen.closed is None, f"{screen.name}: {screen.closed}"


async def the_channel_works_on(chat: SocketScreen, screens: list[Screen], model: Any) -> None:
    model.behaviour.tokens, model.behaviour.delay = ["Back", " again."], 0.0
    await chat.ws.send(json.dumps({"type": "message", "text": "still there?"}))
    await until(
        lambda: all(s.texts()[-2:] == ["still there?", "Back again."] for s in screens),
        lambda: describe(screens),
    )
    for screen in screens:
        assert screen.late == [], f"{screen.name} got text of a reply after its end: seqs {screen.late}"
        await screen.close()


async def test_a_reply_being_written_when_redis_comes_back_empty_ends_within_seconds_everywhere(
    empty_redis, channel, alice, openai_server, django_db_setup
):
    # Tokens far enough apart that Redis is killed and back between two of them: none of
    # its events fails, but its lock went with Redis's data, so it may not go on (the
    # recovery sweep may be closing its turn already).
    await db_call(use_slow_model)(channel, openai_server, delay=0.4, tokens=[" w"] * 500, max_tokens=4000)
    token = await db_call(ApiToken.issue)(alice)
    with two_servers(empty_redis) as (first, second):
        chat, screens = await start_a_long_reply(first, second, token)
        bot = await db_call(Turn.objects.get)(role="bot")
        empty_redis.restart()
        await the_reply_ends_everywhere(bot.pk, screens, since=time.monotonic())
        await the_channel_works_on(chat, screens, openai_server)


async def test_a_reply_being_written_while_redis_is_down_ends_within_seconds_everywhere(
    redis_with_data, channel, alice, openai_server, django_db_setup
):
    await db_call(use_slow_model)(channel, openai_server, delay=0.05, tokens=[" w"] * 2000, max_tokens=4000)
    token = await db_call(ApiToken.issue)(alice)
    with two_servers(redis_with_data) as (first, second):
        chat, screens = await start_a_long_reply(first, second, token)
        bot = await db_call(Turn.objects.get)(role="bot")
        saved_text = (await db_call(Turn.objects.get)(pk=bot.pk)).text
        redis_with_data.kill()
        # Down until the reply has met the outage: it was closed, or it went on (its
        # text is saved every second) while none of its events could be sent.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            now = await db_call(Turn.objects.get)(pk=bot.pk)
            if now.finish_reason is not None or len(now.text) > len(saved_text) + 10:
                break
            assert time.monotonic() < deadline, "the reply neither ended nor went on"
            await asyncio.sleep(0.05)
        redis_with_data.start()
        await the_reply_ends_everywhere(bot.pk, screens, since=time.monotonic())
        await the_channel_works_on(chat, screens, openai_server)


def test_a_watch_page_open_across_a_redis_restart_shows_the_turns_added_after_it(empty_redis, channel, alice):
    from playwright.sync_api import expect

    from tests.browser import chromium, new_page, open_live

    token = ApiToken.issue(alice)
    with chromium() as browser, two_servers(empty_redis) as (first, second):
        watch = open_live(new_page(browser), f"http://{second}/watch/lobby")
        watch.evaluate("window.__sameDocument = true")
        before = [f"Before the restart {i}." for i in range(4)]
        for text in before:
            inject(first, token, text)
        expect(watch.locator(".turn .body")).to_have_text(before)

        empty_redis.restart()
        after = [f"After the restart {i}." for i in range(3)]
        for text in after:
            inject(first, token, text)
        expect(watch.locator(".turn .body")).to_have_text(before + after, timeout=DEADLINE_S * 1000)
        expect(watch.locator("#conn")).to_have_attribute("data-state", "connected")
        assert watch.evaluate("window.__sameDocument") is True  # live, not reloaded
        assert watch.errors == []  # type: ignore[attr-defined]
