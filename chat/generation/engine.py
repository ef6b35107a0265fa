"""The generation engine's public face: one reply at a time per channel, streamed to
every connection, from any process.

- ``request_generation(channel_id, requester_id)``: ask for a reply; returns at once.
- ``interrupt(channel_id)``: stop the reply being written, wherever it runs.
- ``recover_unfinished()`` and ``watch_for_dead_replies(interval)``: close the replies
  whose process died.

Behind it: ``driver`` (entry points, the Redis lock, pending requests, interrupt
routing, the recovery sweep), ``generation`` (one reply: provider stream → text and
reasoning → events and the database) and ``text`` (stop sequences, repetition,
coalescing).
"""

from __future__ import annotations

from chat.generation.driver import (
    _running,
    ainterrupt,
    arecover_unfinished,
    arequest_generation,
    interrupt,
    recover_unfinished,
    request_generation,
    watch_for_dead_replies,
)

__all__ = [
    "_running",  # the generations running in this process; the tests' clean-up reads it
    "ainterrupt",
    "arecover_unfinished",
    "arequest_generation",
    "interrupt",
    "recover_unfinished",
    "request_generation",
    "watch_for_dead_replies",
]
