"""Every client message, every error code, over a WebSocket."""

import json

import pytest

from chat.models import Membership, Turn
from chat.realtime.async_db import db_call
from tests.ws_helpers import close_code, open_socket, receive, receive_until, token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def chat_socket(user, name="lobby"):
    socket, _, _ = await open_socket(f"/ws/{name}", token=await token_for(user))
    history = await receive(socket)
    assert history["type"] == "history"
    return socket, history


async def send(socket, **message):
    await socket.send_json_to(message)


async def test_a_message_streams_the_reply_to_chat_and_watch_connections(channel, alice):
    watcher, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(watcher)
    socket, _ = await chat_socket(alice)
    await send(socket, type="message", text="I need a holiday")
    frames = await receive_until(socket, "done")
    watched = await receive_until(watcher, "done")
    assert [f["type"] for f in frames] == [f["type"] for f in watched]
    kinds = [f["type"] for f in frames]
    assert kinds[0:2] == ["turn", "thinking"] and kinds[-2:] == ["turn", "done"]
    assert (
        frames[0]["role"] == "user"
        and frames[0]["author"] == "alice"
        and frames[0]["text"] == "I need a holiday"
    )
    bot = frames[-2]
    assert bot["role"] == "bot" and bot["author"] is None and bot["finish_reason"] == "stop"
    assert "".join(f["data"] for f in frames if f["type"] == "token") == bot["text"]
    assert all(f["channel"] == "lobby" for f in frames)
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    await socket.disconnect()
    await watcher.disconnect()


async def test_ping_is_answered_with_pong(channel):
    socket, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(socket)
    await send(socket, type="ping")
    pong = await receive(socket)
    assert pong["type"] == "pong" and isinstance(pong["ts"], float)
    await socket.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('"just a string"', "bad_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"no_type": 1}', "unknown_type"),
        ('{"type": "message"}', "invalid"),
        ('{"type": "message", "text": 5}', "invalid"),
        ('{"type": "message", "text": "   "}', "invalid"),
        ('{"type": "inject", "role": "wizard", "text": "x"}', "invalid"),
        ('{"type": "inject", "text": "x"}', "invalid"),
        ('{"type": "message", "text": "hi", "params": {"temperature": 9}}', "invalid"),
        ('{"type": "message", "text": "hi", "params": {"base_url": "http://evil"}}', "invalid"),
        ('{"type": "message", "text": "hi", "framing": "not an object"}', "invalid"),
        ('{"type": "message", "text": "hi", "params": {"provider": "nope"}}', "invalid"),
        ('{"type": "get_history", "since": "yesterday"}', "invalid"),
    ],
)
async def test_bad_input_gets_an_error_and_the_socket_stays_open(channel, alice, frame, code):
    socket, _ = await chat_socket(alice)
    await socket.send_to(text_data=frame)
    error = await receive(socket)
    assert error["type"] == "error" and error["code"] == code, error
    assert error["channel"] == "lobby" and error["text"]
    await send(socket, type="ping")
    assert (await receive(socket))["type"] == "pong"
    assert await db_call(Turn.objects.count)() == 0  # nothing was saved
    await socket.disconnect()


async def test_invalid_params_name_the_fields(channel, alice):
    socket, _ = await chat_socket(alice)
    await send(socket, type="message", text="hi", params={"temperature": 9, "colour": "red"})
    assert (await receive(socket))["fields"] == {"params": {"colour": ["Unknown field."]}}
    await send(socket, type="message", text="hi", params={"temperature": 9, "top_k": 1.5})
    error = await receive(socket)
    assert error["code"] == "invalid" and set(error["fields"]["params"]) == {"temperature", "top_k"}
    await socket.disconnect()


async def test_a_binary_frame_is_bad_json(channel, alice):
    socket, _ = await chat_socket(alice)
    await socket.send_to(bytes_data=b"\x00\xff")
    assert (await receive(socket))["code"] == "bad_json"
    await socket.disconnect()


async def test_too_long_text(channel, alice, settings):
    settings.MAX_MESSAGE_CHARS = 10
    socket, _ = await chat_socket(alice)
    await send(socket, type="message", text="x" * 11)
    assert (await receive(socket))["code"] == "too_long"
    await socket.disconnect()


async def test_a_watch_connection_cannot_change_anything(channel, alice):
    socket, _, _ = await open_socket("/ws/lobby?watch=1", token=await token_for(alice))
    await receive(socket)
    for kind in ("message", "regenerate", "inject", "reset", "interrupt"):
        await send(socket, type=kind, text="x", role="user")
        error = await receive(socket)
        assert error["code"] == "read_only"
    assert await db_call(Turn.objects.count)() == 0
    await socket.disconnect()


async def test_a_member_may_not_choose_params_the_channel_does_not_offer(channel, bob):
    socket, _ = await chat_socket(bob)
    await send(socket, type="message", text="hi", params={"temperature": 0.1})
    assert (await receive(socket))["code"] == "forbidden"
    await send(socket, type="message", text="hi", framing={"preamble": "Mine."})
    assert (await receive(socket))["code"] == "forbidden"  # framing stays the owner's
    await send(socket, type="message", text="hi")
    assert (await receive(socket))["type"] == "turn"
    await socket.disconnect()


async def test_the_owner_changes_framing_and_everyone_sees_it(channel, alice):
    socket, _ = await chat_socket(alice)
    await send(socket, type="message", text="hi", framing={"preamble": "Be brief."})
    update = await receive(socket)
    assert update["type"] == "channel_updated" and update["framing"]["preamble"] == "Be brief."
    assert set(update) >= {"framing", "params", "member_params", "instruction", "locked", "visibility"}
    await receive_until(socket, "done")
    await socket.disconnect()


async def test_message_params_apply_to_that_reply_only(channel, alice):
    """A change of meaning (issue 14): params no longer change the channel's settings."""
    socket, _ = await chat_socket(alice)
    await send(socket, type="message", text="hi", params={"temperature": 0.1})
    turn = await receive(socket)
    assert turn["type"] == "turn" and turn["request"] == {"params": {"temperature": 0.1}}
    events = await receive_until(socket, "done")
    assert not [e for e in events if e["type"] == "channel_updated"]
    bot = next(e for e in events if e["type"] == "turn" and e["role"] == "bot")
    assert bot["params"]["temperature"] == 0.1
    await db_call(channel.refresh_from_db)()
    assert "temperature" not in channel.params or channel.params["temperature"] != 0.1
    await socket.disconnect()


async def test_a_locked_channel_refuses_writes(channel, bob):
    channel.locked = True
    await db_call(channel.save)()
    socket, _ = await chat_socket(bob)
    await send(socket, type="message", text="hi")
    assert (await receive(socket))["code"] == "locked"
    await socket.disconnect()


async def test_a_muted_member_cannot_write(channel, bob):
    await db_call(Membership.objects.filter(user=bob).update)(muted=True)
    socket, _ = await chat_socket(bob)
    await send(socket, type="inject", role="user", text="hi")
    assert (await receive(socket))["code"] == "muted"
    await socket.disconnect()


async def test_the_message_rate_is_limited_with_a_retry_hint(channel, alice, settings):
    settings.MESSAGES_PER_MINUTE = 1
    socket, _ = await chat_socket(alice)
    await send(socket, type="message", text="one")
    await receive_until(socket, "done")
    await send(socket, type="message", text="two")
    error = await receive(socket)
    assert error["code"] == "rate_limited" and 0 < error["retry_after"] <= 60
    await socket.disconnect()


async def test_inject_regenerate_reset_and_interrupt(channel, alice):
    socket, _ = await chat_socket(alice)
    await send(socket, type="inject", role="agent", text="Thunder.")
    injected = await receive(socket)
    assert injected["type"] == "turn" and injected["role"] == "agent"
    await send(socket, type="message", text="hello")
    first = await receive_until(socket, "done")
    bot_id = first[-2]["id"]
    await send(socket, type="regenerate")
    frames = await receive_until(socket, "done")
    assert frames[0] == {"type": "turn_removed", "id": bot_id, "channel": "lobby", "seq": frames[0]["seq"]}
    await send(socket, type="interrupt")  # nothing running: no effect, no error
    await send(socket, type="reset")
    reset = await receive(socket)
    assert reset["type"] == "reset" and reset["session"] != first[0]["session"]
    await socket.disconnect()


async def test_get_history_without_since_sends_the_full_state(channel, alice):
    socket, history = await chat_socket(alice)
    await send(socket, type="inject", role="user", text="hi")
    await receive(socket)
    await send(socket, type="get_history")
    again = await receive(socket)
    assert again["type"] == "history" and again["seq"] == history["seq"] + 1
    assert [t["text"] for t in again["turns"]] == ["hi"]
    await socket.disconnect()


async def test_get_history_since_replays_exactly_the_missed_events(channel, alice):
    socket, history = await chat_socket(alice)
    for text in ("a", "b", "c"):
        await send(socket, type="inject", role="user", text=text)
        await receive(socket)
    await send(socket, type="get_history", since=history["seq"] + 1)
    replay = [await receive(socket), await receive(socket)]
    assert [e["text"] for e in replay] == ["b", "c"]
    assert [e["seq"] for e in replay] == [history["seq"] + 2, history["seq"] + 3]
    await socket.disconnect()


async def test_get_history_since_a_seq_no_longer_kept_sends_a_full_history(channel, alice, settings):
    settings.REPLAY_BUFFER_EVENTS = 1  # keep (about) one event
    socket, _ = await chat_socket(alice)
    for i in range(300):
        await send(socket, type="inject", role="user", text=f"t{i}")
        got = await receive(socket)
        assert got["type"] == "turn", got
    await send(socket, type="get_history", since=1)
    full = await receive(socket)
    assert full["type"] == "history" and full["seq"] == 300
    await socket.disconnect()


async def test_presence_counts_watchers_and_participants(channel, alice):
    watcher, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(watcher)
    socket, _ = await chat_socket(alice)
    while True:
        frame = await watcher.receive_json_from(timeout=5)
        if frame["type"] == "presence" and frame["participants"] == 1:
            break
    assert frame == {"type": "presence", "watchers": 1, "participants": 1, "channel": "lobby"}
    assert "seq" not in frame
    await socket.disconnect()
    await watcher.disconnect()


async def test_a_socket_closes_within_the_check_interval_after_logout(channel, bob, settings):
    from django.contrib.sessions.models import Session as DjangoSession

    from tests.ws_helpers import session_cookie_for

    settings.LOGIN_RECHECK_SECONDS = 0.2
    socket, _, _ = await open_socket("/ws/lobby", cookie=await session_cookie_for(bob))
    await receive(socket)
    await db_call(DjangoSession.objects.all().delete)()  # logout everywhere
    assert await close_code(socket, timeout=5) == 4001


async def test_a_password_change_ends_token_free_sockets(channel, bob, settings):
    from tests.ws_helpers import session_cookie_for

    settings.LOGIN_RECHECK_SECONDS = 0.2
    socket, _, _ = await open_socket("/ws/lobby", cookie=await session_cookie_for(bob))
    await receive(socket)
    bob.set_password("a-brand-new-password")
    await db_call(bob.save)()
    assert await close_code(socket, timeout=5) == 4001


async def test_a_json_frame_is_parsed_even_with_unicode(channel, alice):
    socket, _ = await chat_socket(alice)
    await socket.send_to(text_data=json.dumps({"type": "inject", "role": "user", "text": "héllo ✓ 🎉"}))
    assert (await receive(socket))["text"] == "héllo ✓ 🎉"
    await socket.disconnect()


async def test_a_banned_users_sockets_close_at_once_with_4003(channel, bob, admin_user):
    from chat.services import ban_user

    chat, _ = await chat_socket(bob)
    watch, _, _ = await open_socket("/ws/lobby?watch=1", token=await token_for(bob))
    await receive(watch)
    await db_call(ban_user)(actor=admin_user, user=bob, reason="spam")
    assert await close_code(chat, timeout=2) == 4003
    assert await close_code(watch, timeout=2) == 4003
