"""The cross-process side of generation: who writes a channel's reply, when, and how an
interrupt reaches it.

- A request sets the channel's ``pending`` key (its value: the requester's user id, or
  ``-``) and starts a driver on this process's background loop (chat.realtime.background).
- A driver takes the channel's Redis lock (owner token + expiry, renewed while it runs),
  so that at most one reply is written per channel across all processes, and writes
  one reply per pending request until none is left. Requests made while a reply is
  being written are answered together, right after it.
- The lock's value starts with this process's channel-layer inbox: that is where
  interrupts are sent, and the inbox hands them to the running generation.
- A reply whose process died keeps its lock no longer than LOCK_TTL_MS; the recovery
  sweep then closes its turn as ``error`` and answers the requests it left waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from channels.layers import get_channel_layer
from django.conf import settings

from chat.errors import UNAVAILABLE
from chat.generation import records
from chat.generation.generation import Generation, publish_recovered
from chat.realtime import background, store
from chat.realtime.async_db import db_call

log = logging.getLogger(__name__)

LOCK_TTL_MS = 15_000
LOCK_RENEW_S = 5.0

# Generations running in this process, by channel id, and the one channel-layer inbox
# through which other processes reach them. Both live on the background loop.
_running: dict[int, Generation] = {}
_inbox: str | None = None


# --- entry points (safe from any process) -----------------------------------------------


async def arequest_generation(channel_id: int, requester_id: int | None = None) -> None:
    """Mark the channel as wanting a reply and make sure some process writes it. The
    reply's tokens are charged to ``requester_id`` (requests answered together by one
    reply charge the last to ask)."""
    value = str(requester_id) if requester_id is not None else "-"
    await store.async_redis().set(store.key(channel_id, "pending"), value, ex=3600)
    background.submit(_drive(channel_id))


def request_generation(channel_id: int, requester_id: int | None = None) -> None:
    """``arequest_generation`` for synchronous callers; returns once the request is stored.
    The key is set from this thread and the driver started without waiting for it: a
    round trip through the background loop would delay the reply by a millisecond or two."""
    value = str(requester_id) if requester_id is not None else "-"
    store.sync_redis().set(store.key(channel_id, "pending"), value, ex=3600)
    background.submit(_drive(channel_id))


async def ainterrupt(channel_id: int, *, wait: float = 0.0) -> bool:
    """Stop the reply being written in the channel (if any), wherever it runs, and drop
    the requests waiting for the next one.

    With ``wait``, return once it has ended (or the wait is over). Returns whether a
    reply was being written.
    """
    redis = store.async_redis()
    await redis.delete(store.key(channel_id, "pending"))
    owner = await redis.get(store.key(channel_id, "lock"))
    if not owner:
        return False
    turn_id = await redis.get(store.key(channel_id, "gen_turn"))
    layer = get_channel_layer()
    assert layer is not None
    # The turn id keeps a late interrupt from stopping the reply after this one.
    await layer.send(
        owner.split("#")[0],
        {"type": "gen.interrupt", "channel_id": channel_id, "turn_id": int(turn_id) if turn_id else None},
    )
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        if not await redis.exists(store.key(channel_id, "lock")):
            break
        await asyncio.sleep(0.02)
    return True


def interrupt(channel_id: int, *, wait: float = 0.0) -> bool:
    """``ainterrupt`` for synchronous callers."""
    return background.run(ainterrupt(channel_id, wait=wait), timeout=wait + 10)


async def arecover_unfinished(channel_id: int | None = None) -> int:
    """Close the bot turns (of one channel, or of all) whose reply is not being written
    anywhere as ``error``, and tell every screen. Returns how many were closed."""
    redis = store.async_redis()
    closed = 0
    for turn_id, chan_id, chan_name in await db_call(records.unfinished_turns)(channel_id):
        if await redis.exists(store.key(chan_id, "lock")):
            continue  # a live process is writing it
        turn = await db_call(records.close_as_error)(turn_id)
        if turn is None:
            continue
        closed += 1
        await publish_recovered(chan_id, chan_name, turn)
    return closed


def recover_unfinished() -> int:
    """``arecover_unfinished`` of every channel, for synchronous callers."""
    return background.run(arecover_unfinished(), timeout=60)


async def watch_for_dead_replies(interval: float) -> None:
    """Every ``interval`` seconds, close the replies whose process died (their lock
    expired, LOCK_TTL_MS after the last renewal), so nobody sees "writing…" for ever,
    and answer the requests they left waiting."""
    redis = store.async_redis()
    while True:
        await asyncio.sleep(interval)
        try:
            for turn_id, chan_id, _name in await db_call(records.unfinished_turns)(None):
                if await redis.exists(store.key(chan_id, "lock")):
                    continue
                if await arecover_unfinished(chan_id):
                    log.warning("closed reply %s of channel %s: its process died", turn_id, chan_id)
                if await redis.exists(store.key(chan_id, "pending")):
                    background.submit(_drive(chan_id))
            if settings.CREDITS_ENABLED:
                await release_abandoned_holds()
        except asyncio.CancelledError:
            raise
        except UNAVAILABLE as exc:  # an outage is a line in the log, not a bug report
            log.warning("the sweep for dead replies could not run: %s", exc)
        except Exception:
            log.exception("the sweep for dead replies failed; trying again")


async def release_abandoned_holds() -> int:
    """Release the credit holds nobody will claim: unclaimed for a minute (requests an
    interrupt dropped, replies that found nothing to answer) in channels where no reply
    runs and none is waiting, and those of deleted channels. Returns how many."""
    from chat.credits import holds  # late: the credits import the services

    redis = store.async_redis()
    released = 0
    for chan_id in await db_call(holds.abandoned_channels)():
        if await redis.exists(store.key(chan_id, "lock"), store.key(chan_id, "pending")):
            continue  # a reply will claim them (and release all but the newest)
        released += await db_call(holds.release_abandoned)(chan_id)
    return released + await db_call(holds.release_orphans)()


# --- interrupts --------------------------------------------------------------------------


async def _get_inbox() -> str:
    global _inbox
    if _inbox is None:
        layer = get_channel_layer()
        assert layer is not None
        _inbox = await layer.new_channel("gen.")
        asyncio.get_running_loop().create_task(_listen(_inbox))
    return _inbox


async def _listen(inbox: str) -> None:
    """Hand each interrupt to the generation it names (one message per interrupt)."""
    layer = get_channel_layer()
    assert layer is not None
    while True:
        try:
            message = await layer.receive(inbox)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("interrupt inbox failed; listening again")
            await asyncio.sleep(0.5)
            continue
        generation = _running.get(message.get("channel_id", -1))
        if generation is not None and message.get("turn_id") in (None, generation.turn_id):
            generation.interrupted.set()


# --- the driver: lock, pending requests, one generation after another -----------------


async def _drive(channel_id: int) -> None:
    redis = store.async_redis()
    lock_key = store.key(channel_id, "lock")
    pending_key = store.key(channel_id, "pending")
    owner = f"{await _get_inbox()}#{uuid.uuid4().hex}"
    while await redis.exists(pending_key):
        if not await redis.set(lock_key, owner, nx=True, px=LOCK_TTL_MS):
            return  # another process is writing; it will see the pending request
        renewer = asyncio.create_task(_renew_lock(channel_id, lock_key, owner))
        try:
            while requester := await redis.getdel(pending_key):
                generation = Generation(channel_id, int(requester) if requester.isdigit() else None, owner)
                # Registered before it reads its plan, so an interrupt sent meanwhile
                # (one without a turn id) still reaches it.
                _running[channel_id] = generation
                try:
                    await generation.run()
                finally:
                    _running.pop(channel_id, None)
                if generation.lost.is_set() or renewer.done():
                    break  # the lock may be gone: take it again before the next reply
        except Exception:
            log.exception("generation failed in channel %s", channel_id)
        finally:
            renewer.cancel()
            await _release_lock(channel_id, lock_key, owner)
        # A request may have come in after our last look and before the release; its
        # sender could not take the lock, so we go round once more.


async def _release_lock(channel_id: int, lock_key: str, owner: str) -> None:
    """Release the lock, trying again while Redis is out of reach (a request made once
    it is back could not take the lock, and is answered by the round that follows),
    until the lock would have expired anyway."""
    deadline = time.monotonic() + LOCK_TTL_MS / 1000
    while True:
        try:
            await store.async_redis().eval(store.LOCK_RELEASE_SCRIPT, 1, lock_key, owner)
            return
        except UNAVAILABLE as exc:
            if time.monotonic() > deadline:
                log.warning("could not release the lock of channel %s: %s", channel_id, exc)
                return
            await asyncio.sleep(0.5)


async def _renew_lock(channel_id: int, lock_key: str, owner: str) -> None:
    """Keep the lock while replies run. Ends when the lock turns out to be gone (it
    expired while Redis was out of reach, or Redis lost its data), cutting off the reply
    running under it: recovery may close that reply's turn any moment."""
    redis = store.async_redis()
    while True:
        await asyncio.sleep(LOCK_RENEW_S)
        try:
            held = await redis.eval(store.LOCK_EXTEND_SCRIPT, 1, lock_key, owner, LOCK_TTL_MS)
        except UNAVAILABLE as exc:  # try again: the lock lasts LOCK_TTL_MS
            log.warning("could not renew the lock of channel %s: %s", channel_id, exc)
            continue
        if not held:
            generation = _running.get(channel_id)
            if generation is not None:
                generation.lose("its lock is gone")
            return
