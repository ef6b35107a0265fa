"""Per-process fan-out: one channel-layer subscription per process, each event encoded
once (by the publisher) and handed to this process's connections of the channel:
WebSocket consumers (channels_app) and Server-Sent Event streams (chat.api.streams).

Stock Channels gives each socket its own layer channel and runs every event through
``dispatch`` (a thread hop to close old DB connections, a JSON encode per socket). Here
the process joins each chat channel's group once, with one inbox, and hands the ready
frame to every local connection's bounded send queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any, Protocol

import orjson
import redis
from channels.layers import get_channel_layer

from chat.realtime import store
from chat.realtime.events import presence_event
from chat.realtime.store import CONTROL_GROUP

log = logging.getLogger(__name__)

PRESENCE_MIN_INTERVAL_S = 1.0
# How often each process compares what it delivered with what Redis numbered (Hub._watch_redis).
REDIS_CHECK_INTERVAL_S = 1.0
PRESENCE_STALE_S = 45
PROCESS_ID = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class Connection(Protocol):
    user_id: int | None
    watch_key: str | None
    is_watcher: bool

    def push(self, seq: int | None, frame: str) -> None: ...

    def close_with(self, code: int) -> None: ...

    def request_resync(self, since: int | None) -> None: ...


class Room:
    """The local connections of one chat channel and the last seq delivered to them."""

    def __init__(self, channel_id: int, channel_name: str):
        self.channel_id = channel_id
        self.channel_name = channel_name
        self.connections: set[Connection] = set()
        self.last_seq: int | None = None
        self.epoch: str | None = None  # of the numbering last_seq belongs to
        self.access: int | None = None  # access version the connections were checked at
        self.numbered: int | None = None  # the channel's seq in Redis at the last check

    def counts(self) -> tuple[int, int]:
        watchers = sum(1 for c in self.connections if c.is_watcher)
        return watchers, len(self.connections) - watchers


class Hub:
    """One per event loop (one per server process)."""

    def __init__(self) -> None:
        self.rooms: dict[int, Room] = {}
        self.inbox: str | None = None
        self._start_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._presence_pending: set[int] = set()
        self._presence_task: asyncio.Task[None] | None = None
        # Held while events are handed out, so that the Redis check's catching up never
        # interleaves with a delivery.
        self._delivering = asyncio.Lock()

    async def _ensure_started(self) -> str:
        async with self._start_lock:
            if self.inbox is None:
                layer = get_channel_layer()
                assert layer is not None
                # Kept only once it is in the control group: a failure here (Redis out of
                # reach) leaves the hub to start again at the next join, not half-started.
                inbox = await layer.new_channel("hub.")
                await layer.group_add(CONTROL_GROUP, inbox)
                self.inbox = inbox
                loop = asyncio.get_running_loop()
                self._listener = loop.create_task(self._listen())
                self._refresher = loop.create_task(self._refresh_presence())
                self._redis_watcher = loop.create_task(self._watch_redis())
            return self.inbox

    async def join(self, channel_id: int, channel_name: str, connection: Connection) -> Room:
        inbox = await self._ensure_started()
        room = self.rooms.get(channel_id)
        if room is None:
            room = self.rooms[channel_id] = Room(channel_id, channel_name)
            layer = get_channel_layer()
            assert layer is not None
            await layer.group_add(store.group_name(channel_id), inbox)
        room.connections.add(connection)
        self.presence_changed(channel_id)
        return room

    async def leave(self, channel_id: int, connection: Connection) -> None:
        room = self.rooms.get(channel_id)
        if room is None:
            return
        room.connections.discard(connection)
        self.presence_changed(channel_id)
        if not room.connections:
            del self.rooms[channel_id]
            layer = get_channel_layer()
            assert layer is not None and self.inbox is not None
            await layer.group_discard(store.group_name(channel_id), self.inbox)

    # --- receiving ----------------------------------------------------------------------

    async def _listen(self) -> None:
        layer = get_channel_layer()
        assert layer is not None and self.inbox is not None
        while True:
            try:
                message = await layer.receive(self.inbox)
                kind = message.get("type")
                if kind == "chan.event":
                    await self._deliver(
                        message["channel_id"],
                        int(message["seq"]),
                        message["frame"],
                        access=message.get("access"),
                        epoch=message.get("epoch"),
                    )
                elif kind == "chan.presence":
                    room = self.rooms.get(message["channel_id"])
                    for connection in list(room.connections) if room else []:
                        connection.push(None, message["frame"])
                elif kind == "ctl.close":
                    self._close_matching(message)
                elif kind == "ctl.recheck":
                    for room in list(self.rooms.values()):
                        if message.get("channel_id") in (None, room.channel_id):
                            await self._recheck(room)
                elif kind == "ctl.resync":
                    room = self.rooms.get(message["channel_id"])
                    for connection in list(room.connections) if room else []:
                        connection.request_resync(None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fan-out listener error; going on")
                await asyncio.sleep(0.1)

    async def _deliver(
        self, channel_id: int, seq: int, frame: str, *, access: int | None = None, epoch: str | None = None
    ) -> None:
        async with self._delivering:
            await self._deliver_one(channel_id, seq, frame, access=access, epoch=epoch)

    async def _deliver_one(
        self, channel_id: int, seq: int, frame: str, *, access: int | None = None, epoch: str | None = None
    ) -> None:
        room = self.rooms.get(channel_id)
        if room is None:
            return
        if access is not None and access != room.access:
            # Who may see channels changed since these connections were checked: check
            # again before this event, or a removed member would read what follows.
            await self._recheck(room)
            room.access = access
        if epoch is not None and room.epoch not in (None, epoch):
            # Redis lost its data and numbering began again: what each connection holds
            # cannot be continued by seq, so each gets a fresh history (SSE streams end
            # and their clients come back for one).
            await self._resync_room(room)
            room.epoch, room.last_seq = epoch, seq
            return
        room.epoch = epoch or room.epoch
        if room.last_seq is not None and seq <= room.last_seq:
            return  # already delivered (filled from the log earlier)
        frames = [(seq, frame)]
        if room.last_seq is not None and seq > room.last_seq + 1:
            # Publishers in different processes can overtake each other between
            # numbering and publishing; the log has every event in order.
            missed = await store.replay_since(channel_id, room.last_seq)
            if missed is not None:
                frames = [(room.last_seq + 1 + i, f) for i, f in enumerate(missed)]
                frames = [(s, f) for s, f in frames if s <= seq] or [(seq, frame)]
        room.last_seq = max(room.last_seq or 0, frames[-1][0])
        for connection in list(room.connections):
            for item_seq, item in frames:
                connection.push(item_seq, item)

    def _renumbered(self, room: Room) -> None:
        """What the room's connections hold can no longer be continued by seq: each gets
        a fresh history (SSE streams too, in place), which tells the room where it is."""
        room.last_seq = room.epoch = room.numbered = None
        for connection in list(room.connections):
            connection.request_resync(None)

    async def _resync_room(self, room: Room) -> None:
        """A fresh history for every connection still allowed: what changed meanwhile may
        include who may see the channel, so the room is rechecked first."""
        await self._recheck(room)
        self._renumbered(room)

    # --- checking against Redis ------------------------------------------------------------

    async def _watch_redis(self) -> None:
        """Redis pub/sub delivers at most once: whatever is published while this
        process's subscription reconnects (after a Redis restart, a network cut) never
        arrives, and a change committed while Redis was out of reach was never announced
        at all. So, every REDIS_CHECK_INTERVAL_S, compare with Redis:

        - Redis restarted (its run_id changed) or could not be reached: nobody can tell
          what this process missed, so every connection gets a fresh history (with or
          without its data; if Redis came back empty, numbering begins again under a new
          epoch), after the process's group memberships are renewed (the core layer
          keeps them in Redis, where they may be gone);
        - numbering went back, or its epoch changed (data lost without a restart): the
          same, for that channel;
        - a seq Redis had numbered one check ago has still not arrived: it was lost on
          the way; the replay log has it (or, if not, a fresh history)."""
        run_id: str | None = None  # read at once, so that even the first restart shows
        unreachable = False
        while True:
            rooms = list(self.rooms.values())
            try:
                server_id, access, epoch, numbered = await self._read_numbering(rooms)
                if unreachable or (server_id != run_id and None not in (server_id, run_id)):
                    log.warning("Redis is back (restarted, or out of reach): every connection gets a history")
                    await self._rejoin()
                    async with self._delivering:
                        for room in rooms:
                            await self._resync_room(room)
                else:
                    for room, current in zip(rooms, numbered, strict=True):
                        await self._check(room, access, epoch, current)
                run_id, unreachable = server_id, False
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:
                if not unreachable:
                    log.warning("Redis cannot be reached (%s); every connection gets a history after", exc)
                unreachable = True
            except Exception:
                log.exception("checking the numbering against Redis failed; going on")
            await asyncio.sleep(REDIS_CHECK_INTERVAL_S)

    async def _read_numbering(self, rooms: list[Room]) -> tuple[str | None, int, str | None, list[int]]:
        """Redis's run id (None where INFO is not allowed), the access version, the
        epoch and the seq of each room's channel, in one round trip."""
        access_key, epoch_key = store.global_keys()
        seq_keys = [store.key(room.channel_id, "seq") for room in rooms]
        async with store.async_redis().pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.mget([access_key, epoch_key, *seq_keys])
            info, values = await pipe.execute(raise_on_error=False)
        if isinstance(values, Exception):
            raise values
        server_id = info.get("run_id") if isinstance(info, dict) else None
        return server_id, int(values[0] or 0), values[1], [int(v or 0) for v in values[2:]]

    async def _rejoin(self) -> None:
        layer = get_channel_layer()
        assert layer is not None and self.inbox is not None
        await layer.group_add(CONTROL_GROUP, self.inbox)
        for channel_id in list(self.rooms):
            await layer.group_add(store.group_name(channel_id), self.inbox)

    async def _check(self, room: Room, access: int, epoch: str | None, current: int) -> None:
        async with self._delivering:
            if room.last_seq is None:
                room.numbered = current  # a history is on its way; it tells where the room is
                return
            if (room.epoch is not None and epoch != room.epoch) or current < room.last_seq:
                await self._resync_room(room)
                return
            if room.numbered is not None and room.last_seq < room.numbered:
                # Numbered a whole check ago and still not here: lost on the way.
                missed = await store.replay_since(room.channel_id, room.last_seq)
                if missed is None:
                    await self._resync_room(room)
                    return
                if access != room.access:
                    await self._recheck(room)
                    room.access = access
                first = room.last_seq + 1
                room.last_seq += len(missed)
                for connection in list(room.connections):
                    for offset, frame in enumerate(missed):
                        connection.push(first + offset, frame)
            room.numbered = current

    def note_seq(self, channel_id: int, seq: int, epoch: str) -> None:
        """A connection's history was taken at ``seq``: the room has everything up to it."""
        room = self.rooms.get(channel_id)
        if room is None:
            return
        if epoch and room.epoch not in (None, epoch):
            # A numbering this room did not know: the others' events would be dropped as
            # seen. They get a history too.
            self._renumbered(room)
        if room.last_seq is None:
            room.last_seq, room.epoch = seq, epoch or None

    async def _recheck(self, room: Room) -> None:
        """Close the room's connections that may no longer see the channel, at once:
        they leave the room before anything else is delivered to it."""
        connections = list(room.connections)
        if not connections:
            return
        from chat.permissions import still_allowed  # late: models load after the app registry
        from chat.realtime.async_db import db_call

        allowed = await db_call(still_allowed)(
            room.channel_id, [(c.user_id, c.watch_key, c.is_watcher) for c in connections]
        )
        for connection, ok in zip(connections, allowed, strict=True):
            if not ok and connection in room.connections:  # (another recheck may have closed it)
                room.connections.discard(connection)
                connection.close_with(4003)

    def _close_matching(self, message: dict[str, Any]) -> None:
        user_id, channel_id = message.get("user_id"), message.get("channel_id")
        for room in list(self.rooms.values()):
            if channel_id is not None and room.channel_id != channel_id:
                continue
            for connection in list(room.connections):
                if user_id is not None and connection.user_id == user_id:
                    room.connections.discard(connection)
                    connection.close_with(int(message.get("code", 4003)))

    # --- presence -----------------------------------------------------------------------

    def presence_changed(self, channel_id: int) -> None:
        self._presence_pending.add(channel_id)
        if self._presence_task is None or self._presence_task.done():
            self._presence_task = asyncio.get_running_loop().create_task(self._presence_loop())

    async def _presence_loop(self) -> None:
        """Publish this process's counts and, at most once a second per channel, the
        totals over all processes."""
        redis = store.async_redis()
        while self._presence_pending:
            pending, self._presence_pending = self._presence_pending, set()
            for channel_id in pending:
                try:
                    await self._store_counts(channel_id)
                    # One presence event a second per channel, whichever process sends it.
                    gate = store.key(channel_id, "presence_gate")
                    if await redis.set(gate, PROCESS_ID, nx=True, px=int(PRESENCE_MIN_INTERVAL_S * 1000)):
                        await self._publish_presence(channel_id)
                    else:
                        self._presence_pending.add(channel_id)
                except Exception:
                    log.exception("presence update failed for channel %s", channel_id)
            await asyncio.sleep(PRESENCE_MIN_INTERVAL_S / 4)

    async def _store_counts(self, channel_id: int) -> None:
        redis = store.async_redis()
        room = self.rooms.get(channel_id)
        hash_key = store.key(channel_id, "presence")
        if room is None:
            await redis.hdel(hash_key, PROCESS_ID)
        else:
            watchers, participants = room.counts()
            await redis.hset(hash_key, PROCESS_ID, f"{watchers},{participants},{int(time.time())}")
            await redis.expire(hash_key, 3600)

    async def _publish_presence(self, channel_id: int) -> None:
        room = self.rooms.get(channel_id)
        if room is None:
            return  # nobody here to tell; the other processes publish their own
        watchers, participants = await presence_totals(channel_id)
        name = room.channel_name
        frame = orjson.dumps(presence_event(name, watchers, participants)).decode()
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(
            store.group_name(channel_id), {"type": "chan.presence", "channel_id": channel_id, "frame": frame}
        )

    async def _refresh_presence(self) -> None:
        """Keep this process's counts fresh, so totals drop the counts of a dead process."""
        while True:
            await asyncio.sleep(PRESENCE_STALE_S / 3)
            for channel_id in list(self.rooms):
                try:
                    await self._store_counts(channel_id)
                except Exception:
                    log.exception("presence refresh failed")


async def presence_totals(channel_id: int) -> tuple[int, int]:
    entries = await store.async_redis().hgetall(store.key(channel_id, "presence"))
    watchers = participants = 0
    now = time.time()
    for value in entries.values():
        w, p, ts = (int(x) for x in value.split(","))
        if now - ts <= PRESENCE_STALE_S:
            watchers += w
            participants += p
    return watchers, participants


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
