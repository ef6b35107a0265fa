"""The token coalescer: merging only under load, never delaying a first or lone token."""

import asyncio
import time

from chat.generation.text import Coalescer


async def collect(outbox: Coalescer, sent: list[tuple[float, str]]) -> None:
    async def send(reasoning: str, text: str) -> None:
        if text:
            sent.append((time.monotonic(), text))

    await outbox.drain(send)


async def test_a_slow_stream_goes_out_token_by_token_without_waiting():
    window = 0.05
    outbox = Coalescer(window)
    sent: list[tuple[float, str]] = []
    drain = asyncio.create_task(collect(outbox, sent))
    added = []
    for piece in ("a", "b", "c"):
        added.append(time.monotonic())
        outbox.add(text=piece)
        await asyncio.sleep(window * 1.5)  # a model slower than one token a window
    outbox.close()
    await drain
    assert [text for _, text in sent] == ["a", "b", "c"]
    # Each went out at once, not at the end of a window (the old rule held "b" and "c"
    # until a window after the previous send).
    assert all(at - was < window / 2 for (at, _), was in zip(sent, added, strict=True))


async def test_a_burst_after_a_send_is_merged_into_one_event():
    window = 0.05
    outbox = Coalescer(window)
    sent: list[tuple[float, str]] = []
    drain = asyncio.create_task(collect(outbox, sent))
    outbox.add(text="first")
    await asyncio.sleep(0)  # the first piece goes out at once
    await asyncio.sleep(0)
    for piece in ("x", "y", "z"):
        outbox.add(text=piece)
        await asyncio.sleep(window / 10)
    outbox.close()
    await drain
    assert [text for _, text in sent] == ["first", "xyz"]
