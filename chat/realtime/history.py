"""The ``history`` event: the full state of a channel for a (re)connecting client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from chat import selectors
from chat.models import Channel
from chat.realtime import frames, store
from chat.realtime.async_db import db_call
from chat.realtime.events import history_event
from chat.realtime.fanout import get_hub, presence_totals


async def build_history(channel: Channel, *, mode: str, watchers: int = 0) -> dict[str, Any]:
    """Read the seq and the generation in progress first, then the database: a turn
    committed in between shows up twice at worst (turn events are applied by id),
    never not at all."""
    seq, generating, epoch = await store.snapshot(channel.pk)
    state = await db_call(selectors.history_state)(channel)
    if generating:
        written = await db_call(selectors.reply_being_written)(generating["turn_id"])
        # None: the database has it finished (its end was not announced: Redis failed
        # under it), hidden or deleted; Redis's snapshot says otherwise, the database
        # wins. Else its sources, written with the bot turn before its ``sources`` event
        # (a screen that joins mid-reply shows the citations the others saw first), and
        # its tool steps, each saved before its event: one may come again as an event,
        # which clients apply by call_id.
        generating = None if written is None else {**generating, **written}
    return bounded(
        history_event(
            channel=channel.name,
            mode=mode,
            state=state,
            generating=generating,
            seq=seq,
            epoch=epoch,
            watchers=watchers,
        )
    )


def bounded(history: dict[str, Any]) -> dict[str, Any]:
    """The history cut to one frame (MAX_FRAME_BYTES): the newest turns that fit, oldest
    first, with ``has_more`` true when any was left out. Fifty turns of the longest user
    messages would take 400 KB; a frame over the limit cannot be sent at all."""
    limit = frames.frame_limit()
    turns: list[dict[str, Any]] = history["turns"]
    # Measured with has_more false, which is one byte longer than true.
    envelope = {**history, "turns": [], "has_more": False}
    if envelope["generating"] and frames.size(envelope) > limit:
        # Only when replies may hold more than a frame: the reply being written keeps
        # what fits (its tokens keep coming; its final ``turn`` event is bounded too).
        rest = frames.size(envelope) - frames.size(envelope["generating"])
        envelope["generating"] = frames.fit(envelope["generating"], limit - rest, ("reasoning", "text"))
    room = limit - frames.size(envelope)
    kept: list[dict[str, Any]] = []
    for turn in reversed(turns):
        cost = frames.size(turn) + (1 if kept else 0)  # a comma between two turns
        if cost > room:
            break
        kept.append(turn)
        room -= cost
    if not kept and turns:
        # Not even the newest turn fits whole (a huge reply beside a huge reply being
        # written): it comes cut rather than not at all.
        newest = frames.fit(turns[-1], room, ("reasoning", "text"))
        if frames.size(newest) <= room:
            kept.append(newest)
    kept.reverse()
    return {
        **envelope,
        "turns": kept,
        "has_more": bool(history["has_more"]) or len(kept) < len(turns),
    }


# A replay longer than this is answered with a full history (one frame) instead.
REPLAY_MAX_EVENTS = 500
REPLAY_MAX_BYTES = 256 * 1024


async def bounded_replay(channel_id: int, since: int) -> list[str] | None:
    """The events after ``since`` when they are all kept and a replay of them is
    bounded (REPLAY_MAX_EVENTS, REPLAY_MAX_BYTES); else None."""
    current = int(await store.async_redis().get(store.key(channel_id, "seq")) or 0)
    if current - since > REPLAY_MAX_EVENTS:
        return None  # not even read
    replay = await store.replay_since(channel_id, since)
    if replay is None or len(replay) > REPLAY_MAX_EVENTS:
        return None
    if sum(len(frame.encode()) for frame in replay) > REPLAY_MAX_BYTES:
        return None
    return replay


@dataclass
class CatchUp:
    """What a (re)connecting client is sent: encoded frames, the seq they bring it to,
    and whether they are a fresh ``history`` rather than a replay."""

    frames: list[str]
    seq: int
    is_history: bool


async def catch_up(
    channel: Channel, since: int | None, *, mode: str, replay: list[str] | None = None
) -> CatchUp:
    """The one catch-up rule, for sockets and SSE streams alike: the events after
    ``since`` when a bounded replay has them all (``replay``, if already read), else a
    fresh ``history``, which also tells the process's hub where its numbering stands."""
    if since is not None and replay is None:
        replay = await bounded_replay(channel.pk, since)
    if since is not None and replay is not None:
        return CatchUp(replay, since + len(replay), is_history=False)
    watchers, _participants = await presence_totals(channel.pk)
    history = await build_history(channel, mode=mode, watchers=watchers)
    get_hub().note_seq(channel.pk, history["seq"], history["epoch"])
    return CatchUp([orjson.dumps(history).decode()], history["seq"], is_history=True)
