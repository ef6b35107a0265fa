"""Server-Sent Event streams: a channel's events, and one exchange.

They run on the server's event loop (Django iterates an async body under ASGI, whatever
the view). A stream joins the process's fan-out hub like a watch socket does, so it
costs no Redis subscription of its own; a client leaving ends only its stream, never a
generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django import db
from django.conf import settings
from django.http import StreamingHttpResponse
from rest_framework.renderers import BaseRenderer

from chat.generation.providers.base import ProviderConfig, ProviderError
from chat.generation.suggestions import suggest
from chat.logins import login_still_valid
from chat.models import Channel
from chat.realtime import store
from chat.realtime.async_db import db_call
from chat.realtime.fanout import get_hub
from chat.realtime.history import catch_up

HEARTBEAT_S = 15.0
FEED_LIMIT = 5000
# Queued in place of an event: send a fresh `history` here (Redis lost or renumbered what
# the stream was following).
RESYNC = "resync"


class EventStreamRenderer(BaseRenderer):
    """Lets DRF's content negotiation accept `Accept: text/event-stream`; the views
    answer such requests with a StreamingHttpResponse of their own."""

    media_type = "text/event-stream"
    format = "sse"

    def render(self, data, accepted_media_type=None, renderer_context=None):  # type: ignore[no-untyped-def]
        return orjson.dumps(data)


def event_type(frame: str) -> str:
    # Every frame starts with its type (events are built type first).
    if frame.startswith('{"type":"'):
        return frame[9 : frame.index('"', 9)]
    return str(orjson.loads(frame).get("type", "message"))


def sse(frame: str, seq: int | None) -> bytes:
    head = f"id: {seq}\n" if seq else ""
    return f"{head}event: {event_type(frame)}\ndata: {frame}\n\n".encode()


def named_event(name: str, data: Any) -> bytes:
    """An unnumbered event of a stream that is not a channel's (prompt suggestions)."""
    return f"event: {name}\ndata: {orjson.dumps(data).decode()}\n\n".encode()


def release_db_connection() -> None:
    """Hand the request thread's database connection back (to the pool, on PostgreSQL)
    before a response that lasts: Django would keep it until the response closes, and a
    few dozen open event streams would hold every pooled connection of the process."""
    db.connection.close()


def stream_response(body: AsyncIterator[bytes]) -> StreamingHttpResponse:
    release_db_connection()  # the stream reads no rows in this thread any more
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


class EventFeed:
    """One HTTP stream's place in the fan-out hub: events queue here until sent."""

    is_watcher = True

    def __init__(
        self,
        user_id: int | None,
        watch_key: str | None,
        *,
        token_hash: str | None = None,
        session_key: str | None = None,
    ):
        self.user_id = user_id
        self.watch_key = watch_key
        # The login the stream was opened with, rechecked like a socket's.
        self.token_hash, self.session_key = token_hash, session_key
        self.queue: asyncio.Queue[tuple[int | None, str] | str | None] = asyncio.Queue()
        # A channel's stream answers a resync with a fresh history in place; an exchange's
        # stream (one message and its reply) has no history to give, and ends.
        self.resync_in_place = False
        self.resync_pending = False

    def push(self, seq: int | None, frame: str) -> None:
        if self.queue.qsize() < FEED_LIMIT:
            self.queue.put_nowait((seq, frame))
        else:  # too slow to keep up: end the stream; the client resumes with Last-Event-ID
            self.close_with(4008)

    def close_with(self, code: int) -> None:
        self.queue.put_nowait(None)

    def request_resync(self, since: int | None) -> None:
        if not self.resync_in_place:
            # The client's reconnect with Last-Event-ID gets a replay or a fresh history.
            self.close_with(0)
        elif not self.resync_pending:
            # In place, not by ending the stream: a Last-Event-ID from before Redis lost
            # its data may name a seq the new numbering has reached, and be replayed.
            self.resync_pending = True
            self.queue.put_nowait(RESYNC)

    async def login_ended(self) -> bool:
        if self.user_id is None:
            return False
        valid = await db_call(login_still_valid)(
            self.user_id, token_hash=self.token_hash, session_key=self.session_key
        )
        return not valid

    async def events(self, last: int) -> AsyncIterator[tuple[int | None, str] | str | None]:
        """Live events after ``last`` (None every HEARTBEAT_S while quiet; RESYNC when a
        fresh history is due, after which ``self.last`` is where it left the stream).
        Ends when the login it was opened with ends (logout, token rotated or deleted,
        ban)."""
        self.last = last
        loop = asyncio.get_running_loop()
        next_check = loop.time() + settings.LOGIN_RECHECK_SECONDS
        quiet_since = loop.time()
        while True:
            if loop.time() >= next_check:
                if await self.login_ended():
                    return
                next_check = loop.time() + settings.LOGIN_RECHECK_SECONDS
            wait = min(next_check, quiet_since + HEARTBEAT_S) - loop.time()
            try:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that
                # arrives as the queue answers, and await_reply's timeout around this
                # feed then never fires (tests/test_event_feed_timeout.py).
                async with asyncio.timeout(max(wait, 0.0)):
                    item = await self.queue.get()
            except TimeoutError:
                if loop.time() >= quiet_since + HEARTBEAT_S:
                    quiet_since = loop.time()
                    yield None
                continue
            quiet_since = loop.time()
            if item is None:
                return
            if isinstance(item, str):  # RESYNC
                self.resync_pending = False
                yield RESYNC
                continue
            seq, frame = item
            if seq is not None:
                if seq <= self.last:
                    continue
                self.last = seq
            yield seq, frame


async def follow_channel(channel: Channel, feed: EventFeed, since: int | None) -> AsyncIterator[bytes]:
    """`history` (or the replay after ``since``), then every broadcast event; a fresh
    `history` again whenever the process can no longer continue the stream by seq. What
    to send first is chat.realtime's one catch-up rule, the same as a socket's."""
    hub = get_hub()
    feed.resync_in_place = True
    await hub.join(channel.pk, channel.name, feed)

    async def caught_up(after: int | None) -> tuple[int, list[bytes]]:
        sent = await catch_up(channel, after, mode="watch")
        if sent.is_history:
            return sent.seq, [sse(sent.frames[0], sent.seq or None)]
        first = sent.seq - len(sent.frames) + 1
        return sent.seq, [sse(frame, first + i) for i, frame in enumerate(sent.frames)]

    try:
        last, frames = await caught_up(since)
        for frame in frames:
            yield frame
        async for item in feed.events(last):
            if item is None:
                yield b": keep-alive\n\n"
            elif item == RESYNC:
                # Events queued after this are skipped up to the history's seq.
                feed.last, frames = await caught_up(None)
                for frame in frames:
                    yield frame
            else:
                assert not isinstance(item, str)
                yield sse(item[1], item[0])
    finally:
        await hub.leave(channel.pk, feed)


async def exchange_events(
    channel: Channel, feed: EventFeed, after: int, user_turn_id: int
) -> AsyncIterator[tuple[int, str, dict[str, Any]] | None]:
    """One exchange's events as (seq, frame, event): the user turn, then the reply that
    answers it (`thinking`, `token`…, `turn`, `done`), then it ends (also at a `reset`).
    None while quiet (a keep-alive's turn). ``after`` is the channel's seq from before the
    message was posted: the log fills whatever came before the hub did."""
    hub = get_hub()
    await hub.join(channel.pk, channel.name, feed)
    try:
        replayed = await store.replay_since(channel.pk, after) or []
        backlog: list[tuple[int | None, str] | None] = [(after + 1 + i, f) for i, f in enumerate(replayed)]
        last = after + len(backlog)
        user_seen = False
        bot_id: int | None = None

        async def all_events() -> AsyncIterator[tuple[int | None, str] | None]:
            for queued in backlog:
                yield queued
            async for live in feed.events(last):
                if not isinstance(live, str):  # (no RESYNC: an exchange's stream ends instead)
                    yield live

        async for item in all_events():
            if item is None:
                yield None
                continue
            seq, frame = item
            if seq is None:
                continue  # presence is not part of an exchange
            event = orjson.loads(frame)
            kind = event["type"]
            if kind == "reset":
                yield seq, frame, event
                return
            if not user_seen:
                if kind == "turn" and event["id"] == user_turn_id:
                    user_seen = True
                    yield seq, frame, event
            elif bot_id is None:
                if kind == "thinking":
                    bot_id = event["turn_id"]
                    yield seq, frame, event
            elif event.get("turn_id") == bot_id or event.get("id") == bot_id or kind == "error":
                yield seq, frame, event
                if kind == "done":
                    return
    finally:
        await hub.leave(channel.pk, feed)


async def follow_exchange(
    channel: Channel, feed: EventFeed, after: int, user_turn_id: int
) -> AsyncIterator[bytes]:
    """One exchange as Server-Sent Events."""
    async for item in exchange_events(channel, feed, after, user_turn_id):
        yield b": keep-alive\n\n" if item is None else sse(item[1], item[0])


async def await_reply(
    channel: Channel, feed: EventFeed, after: int, user_turn_id: int, timeout: float
) -> int | None:
    """The id of the bot turn that answers ``user_turn_id``, once its `done` has been
    published; None when time runs out or the session was reset. It follows the
    exchange's events as a stream does, instead of asking the database again and again."""
    try:
        async with asyncio.timeout(timeout):
            async for item in exchange_events(channel, feed, after, user_turn_id):
                if item is not None and item[2]["type"] == "done":
                    return int(item[2]["turn_id"])
    except TimeoutError:
        return None
    return None


async def prompt_events(config: ProviderConfig, *, text: str, n: int, kind: str) -> AsyncIterator[bytes]:
    """Prompt suggestions as Server-Sent Events: `prompt` ({"index", "text"}) for each as
    soon as it is written, then `done` ({"prompts"}); a model's failure is an `error`
    event ({"code": "provider_error", "text"}) before `done` with what came."""
    prompts: list[str] = []
    try:
        async for prompt in suggest(config, text=text, n=n, kind=kind):
            yield named_event("prompt", {"index": len(prompts), "text": prompt})
            prompts.append(prompt)
    except ProviderError as exc:
        yield named_event("error", {"code": "provider_error", "text": f"The model failed: {exc}"})
    yield named_event("done", {"prompts": prompts})


async def collect_prompts(config: ProviderConfig, *, text: str, n: int, kind: str) -> list[str]:
    """Prompt suggestions all at once (a JSON answer); ProviderError as the model's."""
    return [prompt async for prompt in suggest(config, text=text, n=n, kind=kind)]
