"""An exchange's wait is bounded (chat/api/streams.py): ``await_reply`` wraps the feed in
``asyncio.timeout``, so the feed must never swallow that cancellation. Python 3.11's
``asyncio.wait_for`` did, when the awaited ``queue.get()`` completed in the same turn of
the loop as the outer cancel (fixed in 3.12): the REST send then waited for the whole
reply instead of SYNC_REPLY_TIMEOUT (a 200 where a 202 was due), or for ever when the
reply stalled (tests/test_credits_parallel.py hit httpx's 60 s timeout)."""

from __future__ import annotations

import asyncio

from chat.api.streams import EventFeed


async def feed_under_a_busy_stream(deadline: float) -> float:
    """How long ``async with asyncio.timeout(deadline)`` around the feed takes to end,
    while events arrive on every turn of the loop (a reply streaming tokens)."""
    feed = EventFeed(None, None)
    loop = asyncio.get_running_loop()
    seq = 0

    def produce() -> None:
        nonlocal seq
        seq += 1
        feed.push(seq, "{}")
        loop.call_soon(produce)

    loop.call_soon(produce)
    started = loop.time()
    try:
        async with asyncio.timeout(deadline):
            async for _item in feed.events(0):
                if loop.time() - started > 0.5:
                    break  # the timeout was swallowed: stop the test's loop
    except TimeoutError:
        pass
    return loop.time() - started


def test_the_feed_never_swallows_the_timeout_around_it():
    async def many() -> list[float]:
        return [await feed_under_a_busy_stream(0.002) for _ in range(50)]

    took = asyncio.run(many())
    assert max(took) < 0.4, f"a timeout of 2 ms ended after {max(took):.2f} s"
