"""Broadcast events: built here, numbered in Redis, logged for replay, published to the
channel-layer group of the channel. Only services and the generation engine call this.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chat import background, store

log = logging.getLogger(__name__)

# How the generation snapshot in Redis follows each event type.
GEN_OPS = {"thinking": "start", "token": "text", "reasoning": "reasoning", "done": "end"}


def encode_head(event: dict[str, Any]) -> str:
    """The event as JSON without its closing brace; the publish script appends the seq."""
    return orjson.dumps(event).decode()[:-1]


async def apublish(channel_id: int, channel_name: str, event: dict[str, Any]) -> int:
    """Number, log and broadcast one event; returns its seq. Runs on any event loop."""
    event = {**event, "channel": channel_name}
    event_type = event["type"]
    op = GEN_OPS.get(event_type, "")
    arg = ""
    if op == "start":
        arg = str(event["turn_id"])
    elif op in ("text", "reasoning"):
        arg = event["data"]
    seq, frame = await store.async_redis().eval(
        store.PUBLISH_SCRIPT,
        5,
        *store.channel_keys(channel_id),
        encode_head(event),
        settings.REPLAY_BUFFER_EVENTS,
        op,
        arg,
    )
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(
        store.group_name(channel_id),
        {"type": "chan.event", "channel_id": channel_id, "seq": int(seq), "frame": frame},
    )
    return int(seq)


def publish(channel_id: int, channel_name: str, event: dict[str, Any]) -> int:
    """Synchronous publish, through the background loop (reuses its Redis connections)."""
    return background.run(apublish(channel_id, channel_name, event))


def publish_on_commit(channel_id: int, channel_name: str, event: dict[str, Any]) -> None:
    """Publish once the current transaction commits, so nobody sees a rolled-back row."""

    def send() -> None:
        try:
            publish(channel_id, channel_name, event)
        except Exception:  # the row is saved; clients heal the gap from history
            log.exception("could not publish %s for channel %s", event.get("type"), channel_name)

    transaction.on_commit(send)


async def aclose_user_sockets(user_id: int, code: int = 4003, *, channel_id: int | None = None) -> None:
    """Close every socket of a user, in every process (ban, deactivation), or only
    those in one channel (removed from a private channel)."""
    message: dict[str, Any] = {"type": "ctl.close", "user_id": user_id, "code": code}
    if channel_id is not None:
        message["channel_id"] = channel_id
    await send_group(store.CONTROL_GROUP, message)


async def aresync_channel(channel_id: int) -> None:
    """Give every open connection of a channel, in every process, a fresh ``history``
    (after a purge, which no event describes)."""
    await send_group(store.CONTROL_GROUP, {"type": "ctl.resync", "channel_id": channel_id})


async def aclose_watch_key_sockets(channel_id: int, old_key: str) -> None:
    """Close the watch sockets let in with a key that has since been rotated."""
    await send_group(
        store.CONTROL_GROUP,
        {"type": "ctl.close", "channel_id": channel_id, "old_watch_key": old_key, "code": 4003},
    )


async def send_group(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(group, message)
