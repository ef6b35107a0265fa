"""A client too slow to keep up is resynchronised instead of stalling the channel."""

import asyncio

import pytest

from channels_app.consumers import SEND_QUEUE_LIMIT, ChannelConsumer


@pytest.mark.asyncio
async def test_an_overflowing_send_queue_is_replaced_by_a_resync():
    consumer = ChannelConsumer()
    consumer.queue = asyncio.Queue()
    consumer.ready, consumer.closing, consumer.resync_pending, consumer.early = True, False, False, []
    for seq in range(SEND_QUEUE_LIMIT + 50):
        consumer.push(seq, f'{{"seq":{seq}}}')
    assert consumer.queue.qsize() == 1
    assert consumer.queue.get_nowait() == ("resync", None)  # the writer will send a fresh history


@pytest.mark.asyncio
async def test_events_that_arrive_before_history_wait_for_it():
    consumer = ChannelConsumer()
    consumer.queue = asyncio.Queue()
    consumer.ready, consumer.closing, consumer.resync_pending, consumer.early = False, False, False, []
    consumer.push(7, "{}")
    assert consumer.queue.empty() and consumer.early == [(7, "{}")]
