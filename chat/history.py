"""The ``history`` event: the full state of a channel for a (re)connecting client."""

from __future__ import annotations

from typing import Any

from chat import selectors, store
from chat.models import Channel
from chat.threads import db_call


async def build_history(channel: Channel, *, mode: str, watchers: int = 0) -> dict[str, Any]:
    """Read the seq and the generation in progress first, then the database: a turn
    committed in between shows up twice at worst (turn events are applied by id),
    never not at all."""
    seq, generating = await store.snapshot(channel.pk)
    state = await db_call(selectors.history_state)(channel)
    return {
        "type": "history",
        "channel": channel.name,
        "mode": mode,
        **state,
        "generating": generating,
        "seq": seq,
        "watchers": watchers,
    }
