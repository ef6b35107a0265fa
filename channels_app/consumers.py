"""The WebSocket transport: one consumer for chat and watch connections of a channel.

It parses frames, checks who may do what, calls one service, and sends the answer.
Broadcast events do not pass through Channels' per-consumer dispatch: the process's
fan-out hub (fanout.py) hands each pre-encoded frame to ``push``, which writes it to the
socket at once when it can (direct_send.py) or queues it for this socket's writer task.
The queue is bounded: a client too slow to keep up is resynchronised with a fresh
``history`` instead of stalling everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import orjson
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from channels_app import direct_send
from channels_app.auth import held_scopes, login_still_valid
from chat import permissions, scopes, selectors, services
from chat.errors import UNAVAILABLE, ServiceError, unavailable_error
from chat.models import Channel, channel_name_validator
from chat.realtime import frames
from chat.realtime.async_db import db_call
from chat.realtime.events import pong_event, turn_detail_event
from chat.realtime.fanout import Room, get_hub
from chat.realtime.history import bounded_replay, catch_up
from chat.schemas import SOCKET_MESSAGES, validate_socket_message
from chat.scopes import without_moderation
from chat.services.tool_approvals import decide_tool_call

log = logging.getLogger(__name__)

# A full history is the costliest answer (up to a frame, built from the database): one
# socket asking in a loop pulled 1.2 GB in 50 s. At most one a second per socket; the
# requests in between are answered together by the next one.
HISTORY_INTERVAL_S = 1.0
# get_turn answers up to a frame each; a person unfolding replies asks far less often.
GET_TURN_PER_SECOND = 10

WRITE_TYPES = {"message", "regenerate", "inject", "reset", "interrupt", "approve_tool", "deny_tool"}
READ_TYPES = {"get_history", "get_turn", "ping"}
# The scope a token needs for each message type (docs/protocol.md, "Scopes"); opening
# the socket at all needs CONNECT_SCOPE.
MESSAGE_SCOPES = {
    **{kind: "chats:write" for kind in WRITE_TYPES},
    **{kind: "chats:read" for kind in READ_TYPES},
}
CONNECT_SCOPE = "chats:read"
# What turn_detail cuts, in this order, when a turn would not fit one frame.
DETAIL_CUTS = ("prompt", "raw_completion", "reasoning", "text")


def _resolve(name: str, user: Any, want_watch: bool, key: str | None) -> tuple[Channel | None, int | None]:
    """The channel and the close code (None when the connection may proceed)."""
    try:
        channel_name_validator(name)
    except Exception:
        return None, 4004
    channel = selectors.channel_by_name(name)
    if channel is None:
        return None, 4004
    authenticated = bool(user and user.is_authenticated)
    if want_watch:
        if permissions.can_watch(user, channel, key):
            return channel, None
        return channel, 4003 if (authenticated or key) else 4001
    if not authenticated:
        return channel, 4001
    if not user.is_active or not permissions.can_post(user, channel):
        return channel, 4003
    return channel, None


class ChannelConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # an untyped base class (no stubs)
    # No per-socket channel-layer channel: the hub receives for the whole process.
    channel_layer_alias = "__no_layer__"

    channel: Channel | None = None
    room: Room | None = None
    user_id: int | None = None
    watch_key: str | None = None
    is_watcher = False
    # The waiting resync order: ``resync_pending`` is set while one waits, and
    # ``resync_since`` is what it replays after (None: a full history).
    resync_pending = False
    resync_since: int | None = None
    resync_timer: asyncio.TimerHandle | None = None
    history_sent_at = float("-inf")  # time.monotonic() of the last full history
    held: frozenset[str] = frozenset()  # the login's scopes (chat/scopes.py), set on connect

    async def connect(self) -> None:
        """Open the socket (``_open``). A failure there once dropped the TCP connection
        without a close frame (the server's answer to an application error after the
        handshake): now the client gets a close code it can act on, 4503 with an
        ``unavailable`` error when the database or Redis cannot be reached (reconnect
        after ``retry_after``), 4500 for anything else. Codes of the private range, since
        daphne sends no other than 1000."""
        self.accepted = False
        try:
            await self._open()
        except (RuntimeError, OSError) as exc:
            # Most likely the client left while its socket opened (the server refuses our
            # sends since): no error to log, as in ``_write``; a close in case it is there.
            log.debug("socket gone while opening: %s", exc)
            with contextlib.suppress(Exception):
                await self.close(code=4500)
        except UNAVAILABLE as exc:  # an outage is a line in the log, not a bug report
            log.warning("socket not opened: the database or Redis is unreachable (%s)", exc)
            await self._close_unopened(4503, unavailable_error())
        except Exception:
            log.exception("socket not opened")
            await self._close_unopened(4500, None)

    async def _close_unopened(self, code: int, error: ServiceError | None) -> None:
        if not self.accepted:
            await self.accept()
        if error is not None:
            name = self.scope["url_route"]["kwargs"]["name"]
            await self.send(text_data=orjson.dumps(error.to_event(name)).decode())
        await self.close(code=code)

    async def _open(self) -> None:
        # Frames to write, or a resync order: ("resync", since) sends a replay after
        # ``since`` (or a full history when since is None or no longer kept).
        # A plain deque drained by a writer task that runs only while it holds frames:
        # an idle socket (most watchers, whose frames usually go out directly) keeps
        # neither a waiting task nor an asyncio.Queue (~4 KiB each way).
        self.queue: deque[tuple[Any, str | int | None]] = deque()
        self.ready = False
        self.early: list[tuple[int | None, str]] = []
        self.resync_pending = False
        self.turn_requests: deque[float] = deque()  # when the last get_turn were answered
        self.closing = False
        # Runs while frames wait in ``queue``; broadcast frames then queue behind them.
        self.writer: asyncio.Task[None] | None = None
        self.checker: asyncio.Task[None] | None = None
        self.direct: Any | None = None  # see channels_app/direct_send.py

        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.is_watcher = query.get("watch", ["0"])[0] in ("1", "true", "yes")
        self.watch_key = query.get("key", [None])[0]
        user = self.scope.get("user")
        name = self.scope["url_route"]["kwargs"]["name"]
        self.held = held_scopes(self.scope)
        if self.scope.get("auth_failed"):
            # An unknown, revoked or expired token: refused like REST's 401, watch
            # connections too (no quiet fall back to an anonymous watcher).
            await self.accept()
            await self.close(code=4001)
            return
        channel, close_code = await db_call(_resolve)(name, user, self.is_watcher, self.watch_key)
        await self.accept()
        self.accepted = True
        if close_code is None and CONNECT_SCOPE not in self.held:
            error = scopes.scope_error([CONNECT_SCOPE])
            await self.send(text_data=orjson.dumps(error.to_event(name)).decode())
            close_code = 4003
        if close_code is not None:
            await self.close(code=close_code)
            return
        assert channel is not None
        self.channel = channel
        self.user = user
        self.user_id = user.pk if user and user.is_authenticated else None
        self.room = await get_hub().join(channel.pk, channel.name, self)
        await self._send_history()
        # The history went out, so the handshake is complete (see direct_socket).
        self.direct = direct_send.direct_socket(self.scope.get("raw_send"))
        if self.user_id is not None:
            self.checker = asyncio.create_task(self._check_login())

    async def disconnect(self, code: int) -> None:
        self.closing = True
        for task in (self.writer, self.checker):
            if task is not None:
                task.cancel()
        if self.resync_timer is not None:
            self.resync_timer.cancel()
        if self.channel is not None and self.room is not None:
            await get_hub().leave(self.channel.pk, self)

    # --- outgoing ------------------------------------------------------------------------

    def push(self, seq: int | None, frame: str) -> None:
        """Called by the hub for every event of the channel; never blocks."""
        if self.closing:
            return
        if not self.ready:
            self.early.append((seq, frame))
            return
        if self.resync_pending:
            return  # the coming history or replay covers it
        idle = self.direct is not None and self.writer is None
        if idle and direct_send.write_now(self.direct, frame):
            return
        if len(self.queue) >= settings.SEND_QUEUE_FRAMES:
            self.queue.clear()
            self.request_resync(None)
            return
        self._enqueue((seq, frame))

    def request_resync(self, since: int | None) -> None:
        """Have the writer send a replay after ``since`` or a full history, in order;
        live events are dropped until then, since the resync covers them. A request made
        while another waits joins it: a full history covers any replay, and of two
        replays the earlier one covers both (clients skip the seqs they have)."""
        if self.resync_pending:
            if self.resync_since is not None:
                self.resync_since = None if since is None else min(self.resync_since, since)
            return
        self.resync_pending, self.resync_since = True, since
        self._enqueue(("resync", since))

    def send_event(self, event: Mapping[str, Any]) -> None:
        """A frame for this socket only (error, pong), in order with the events."""
        self._enqueue((None, orjson.dumps(event).decode()))

    def _enqueue(self, item: tuple[Any, str | int | None]) -> None:
        self.queue.append(item)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        """The socket's one writer: frames go out in queue order. It ends when the queue
        is empty (``_enqueue`` starts another); nothing runs between its last look at
        the queue and its end, so no frame is left behind."""
        send = self.scope.get("raw_send") or self.base_send
        queue = self.queue
        try:
            while queue:
                kind, payload = queue.popleft()
                if kind == "resync":
                    await self._resync(due=payload == "due")
                else:
                    await send({"type": "websocket.send", "text": payload})
            self.writer = None
        except asyncio.CancelledError:
            raise
        except (RuntimeError, OSError) as exc:
            # The socket closed under us (the client left; the server answered its close
            # before our disconnect handler ran): nothing to send to any more.
            log.debug("socket gone while sending: %s", exc)
        except Exception:
            log.exception("socket writer failed; closing the socket")
            await self.close(code=4500)  # not 1011: daphne refuses to send it

    async def _resync(self, *, due: bool) -> None:
        """Answer the waiting resync order: the replay it asks for, or a full history,
        unless the last one went out less than HISTORY_INTERVAL_S ago; then the order
        waits for that (``due``), and every request until then joins it."""
        if not self.resync_pending:
            return  # already answered (a request came while its order was being read)
        since = self.resync_since
        self.resync_pending = False
        self.ready = False  # live events wait in ``early`` from here on
        assert self.channel is not None
        replay = await bounded_replay(self.channel.pk, since) if since is not None else None
        wait = self.history_sent_at + HISTORY_INTERVAL_S - time.monotonic()
        if replay is None and wait > 0 and not due:
            # The full history to come covers the events until then: drop them.
            self.early, self.ready = [], True
            self.resync_pending, self.resync_since = True, None
            if self.resync_timer is None:
                self.resync_timer = asyncio.get_running_loop().call_later(wait, self._resync_due)
            return
        await self._send_history(since, replay)

    def _resync_due(self) -> None:
        self.resync_timer = None
        if not self.closing:
            self._enqueue(("resync", "due"))

    async def _send_history(self, since: int | None = None, replay: list[str] | None = None) -> None:
        """Send what the client lacks: ``replay`` (the events after ``since``), or a full
        history (chat.realtime.history.catch_up); then the live events that came in meanwhile."""
        assert self.channel is not None
        self.ready = False  # live events wait in ``early`` from here on
        mode = "watch" if self.is_watcher else "chat"
        sent = await catch_up(self.channel, since if replay is not None else None, mode=mode, replay=replay)
        if sent.is_history:
            self.history_sent_at = time.monotonic()
        for frame in sent.frames:
            await self.send(text_data=frame)
        early, self.early = self.early, []
        for seq, frame in early:
            if seq is None or seq > sent.seq:
                self._enqueue((seq, frame))
        self.ready = True

    def close_with(self, code: int) -> None:
        asyncio.get_running_loop().create_task(self.close(code=code))

    async def _check_login(self) -> None:
        """Close with 4001 soon after the login this socket was opened with ends."""
        while True:
            await asyncio.sleep(settings.LOGIN_RECHECK_SECONDS)
            assert self.user_id is not None
            if not await db_call(login_still_valid)(self.scope, self.user_id):
                await self.close(code=4001)
                return

    # --- incoming ------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else bytes_data or b""
        if len(raw) > settings.MAX_FRAME_BYTES:
            await self._close_too_big()
            return
        if self.channel is None:
            return
        try:
            await self._handle(raw)
        except Exception:
            # A bug, not a bad request: logged as an error (the property tests fail on
            # it), and the socket lives on with a generic answer.
            log.exception("unexpected error handling a frame")
            self._error("invalid", "The request could not be handled.")

    async def _handle(self, raw: str | bytes) -> None:
        assert self.channel is not None
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._error("bad_json", "The frame is not valid JSON.")
            return
        if not isinstance(message, dict):
            self._error("bad_json", "Expected a JSON object.")
            return
        kind = message.get("type")
        if not isinstance(kind, str) or kind not in WRITE_TYPES | READ_TYPES:
            self._error("unknown_type", f"Unknown message type: {str(kind)[:40]!r}.")
            return
        lacking = scopes.missing(self.held, MESSAGE_SCOPES[kind])
        if lacking:
            self.send_event(scopes.scope_error(lacking).to_event(self.channel.name))
            return
        if self.is_watcher and kind in WRITE_TYPES:
            self._error("read_only", "This is a watch connection: it cannot change anything.")
            return
        if kind in SOCKET_MESSAGES:
            # The action's schema, the one REST uses: same types, same unknown keys refused.
            try:
                message = {"type": kind, **validate_socket_message(message)}
            except ServiceError as exc:
                self.send_event(exc.to_event(self.channel.name))
                return
        if kind == "ping":
            self.send_event(pong_event(time.time()))
            return
        if kind == "get_history":
            await self._get_history(message)
            return
        if kind == "get_turn":
            await self._get_turn(message)
            return
        try:
            await db_call(self._perform)(kind, message)
        except ServiceError as exc:
            self.send_event(exc.to_event(self.channel.name))
        except UNAVAILABLE as exc:
            # Redis or the database is down: the client's request was fine, and nothing
            # was saved (services touch Redis before they commit); it may try again.
            log.warning("a %s could not be handled: %s", kind, exc)
            self.send_event(unavailable_error().to_event(self.channel.name))

    def _perform(self, kind: str, message: dict[str, Any]) -> None:
        """Run one write in a worker thread, with a freshly read channel and user."""
        assert self.channel is not None
        channel = selectors.channel_by_id(self.channel.pk)
        if channel is None:
            raise ServiceError("not_found", "This channel no longer exists.")
        user = without_moderation(selectors.user_by_id(self.user_id), self.held)
        if user is None or not user.is_active:
            raise ServiceError("forbidden", "Your account cannot write here.")
        # ``message`` has passed its schema (chat/schemas.py) in _handle.
        # Only what was sent: an absent instruction and ``instruction: null`` differ.
        choices = {
            k: message[k]
            for k in ("framing", "params", "thinking", "instruction", "agent", "web_search")
            if k in message
        }
        if kind == "message":
            sent = {k: message[k] for k in ("attachments", "knowledge_base_ids") if k in message}
            services.post_message(channel=channel, user=user, text=message["text"], **choices, **sent)
        elif kind == "regenerate":
            services.regenerate(channel=channel, user=user, **choices)
        elif kind == "inject":
            services.inject(channel=channel, user=user, role=message["role"], text=message["text"])
        elif kind == "reset":
            services.reset(channel=channel, user=user)
        elif kind == "interrupt":
            services.interrupt(channel=channel, user=user)
        elif kind in ("approve_tool", "deny_tool"):
            decide_tool_call(
                channel=channel, user=user, call_id=message["call_id"], approve=kind == "approve_tool"
            )

    async def _get_history(self, message: dict[str, Any]) -> None:
        since = message.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            self._error(
                "invalid", "since must be an integer seq.", fields={"since": ["Expected an integer."]}
            )
            return
        self.request_resync(since)

    async def _get_turn(self, message: dict[str, Any]) -> None:
        """Answer the sender with one turn of this channel, substrate included (history
        and turn events leave it out), cut to one frame if need be."""
        assert self.channel is not None
        turn_id = message.get("id")
        if not isinstance(turn_id, int) or isinstance(turn_id, bool) or not 0 < turn_id < 2**63:
            self._error("invalid", "id must be a turn id.", fields={"id": ["Expected a positive integer."]})
            return
        now = time.monotonic()
        recent = self.turn_requests
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) >= GET_TURN_PER_SECOND:
            self._error("rate_limited", f"At most {GET_TURN_PER_SECOND} get_turn a second.", retry_after=1)
            return
        recent.append(now)
        turn = await db_call(self._readable_turn)(turn_id)
        if turn is None:
            self._error("not_found", "No such turn in this channel.")
            return
        detail = turn_detail_event(turn.to_dict(substrate=True), self.channel.name)
        self.send_event(frames.fit(detail, frames.frame_limit(), DETAIL_CUTS, keep_end={"prompt"}))

    def _readable_turn(self, turn_id: int) -> Any:
        """The turn, when it belongs to this channel and, if hidden, the socket's user is
        (still) a moderator. Whoever holds the socket may watch the channel: that was
        checked when it opened, and sockets that lose the right are closed."""
        assert self.channel is not None
        user = without_moderation(selectors.user_by_id(self.user_id), self.held)
        return selectors.channel_turn(user, self.channel.pk, turn_id)

    async def _close_too_big(self) -> None:
        """The server normally refuses such frames itself (daphne's
        --websocket-max-message-size, uvicorn's --ws-max-size) with 1009; this is the
        backstop when it was started with a larger limit."""
        error = ServiceError("too_long", f"Frames are limited to {settings.MAX_FRAME_BYTES} bytes.")
        await self.send(
            text_data=orjson.dumps(error.to_event(self.channel.name if self.channel else None)).decode()
        )
        try:
            await self.close(code=1009)
        except Exception:  # autobahn (daphne) lets applications send only 1000 and 3000-4999
            await self.close(code=1000)

    def _error(self, code: str, text: str, **extra: Any) -> None:
        self.send_event(
            ServiceError(code, text, **extra).to_event(self.channel.name if self.channel else None)
        )
