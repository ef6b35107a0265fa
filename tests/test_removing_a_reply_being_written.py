"""A reply hidden or deleted while it is being written stops first: none of its tokens
follow the removal, and no history shows it as being written."""

from __future__ import annotations

import pytest

from chat import services
from chat.models import Turn
from chat.realtime.history import build_history
from tests.conftest import channel_events, use_slow_model, wait_for, wait_until_no_generation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("remove", ["hide", "delete"])
def test_a_reply_removed_while_being_written_stops_and_sends_nothing_after(
    channel, alice, admin_user, openai_server, remove
):
    import asyncio

    use_slow_model(channel, openai_server, delay=0.02, tokens=[" w"] * 500, max_tokens=600)
    services.post_message(channel=channel, user=alice, text="go on")
    wait_for(
        lambda: (
            Turn.objects.filter(role="bot").exists()
            and any(e["type"] == "token" for e in channel_events(channel))
        )
    )
    bot = Turn.objects.get(role="bot")
    bot_id = bot.pk
    if remove == "hide":
        services.hide_turn(actor=admin_user, turn=bot)
    else:
        services.delete_turn(actor=admin_user, turn=bot)
    wait_until_no_generation()
    events = channel_events(channel)  # the log restarts at the removal
    assert events[0] == {**events[0], "type": "turn_removed", "id": bot_id}
    assert not [e for e in events if e.get("turn_id") == bot_id and e["type"] in ("token", "reasoning")]
    history = asyncio.run(build_history(channel, mode="watch"))
    assert history["generating"] is None
    assert bot_id not in [t["id"] for t in history["turns"]]
