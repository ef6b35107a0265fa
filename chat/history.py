"""The ``history`` event: the full state of a channel for a (re)connecting client."""

from __future__ import annotations

from typing import Any

from chat import frames, selectors, store
from chat.events import history_event
from chat.models import Channel
from chat.threads import db_call


async def build_history(channel: Channel, *, mode: str, watchers: int = 0) -> dict[str, Any]:
    """Read the seq and the generation in progress first, then the database: a turn
    committed in between shows up twice at worst (turn events are applied by id),
    never not at all."""
    seq, generating, epoch = await store.snapshot(channel.pk)
    state = await db_call(selectors.history_state)(channel)
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
