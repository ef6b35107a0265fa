"""Who may connect, in which mode, and the close codes of the protocol."""

import pytest

from chat.realtime.async_db import db_call
from tests.ws_helpers import close_code, open_socket, receive, session_cookie_for, token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_an_anonymous_watcher_of_a_public_channel_gets_history_first(channel):
    socket, connected, _ = await open_socket("/ws/lobby?watch=1")
    assert connected
    history = await receive(socket)
    assert history["type"] == "history" and history["mode"] == "watch" and history["channel"] == "lobby"
    assert set(history) >= {
        "session",
        "framing",
        "params",
        "turns",
        "has_more",
        "generating",
        "seq",
        "watchers",
    }
    await socket.disconnect()


async def test_chat_needs_a_login(channel):
    socket, _, _ = await open_socket("/ws/lobby")
    assert await close_code(socket) == 4001


async def test_a_member_chats_with_a_bearer_token(channel, bob):
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(bob))
    history = await receive(socket)
    assert history["mode"] == "chat"
    await socket.disconnect()


async def test_a_member_chats_with_the_session_cookie(channel, bob):
    socket, _, _ = await open_socket("/ws/lobby", cookie=await session_cookie_for(bob))
    assert (await receive(socket))["mode"] == "chat"
    await socket.disconnect()


async def test_a_wrong_token_is_not_logged_in(channel):
    socket, _, _ = await open_socket("/ws/lobby", token="not-a-token")
    assert await close_code(socket) == 4001


async def test_a_deactivated_users_token_stops_working(channel, bob):
    token = await token_for(bob)
    bob.is_active = False
    await db_call(bob.save)()
    socket, _, _ = await open_socket("/ws/lobby", token=token)
    assert await close_code(socket) == 4001


@pytest.mark.parametrize("path", ["/ws/nope", "/ws/Bad.Name", "/ws/nope?watch=1", "/ws/" + "x" * 65])
async def test_unknown_or_invalid_channels_close_with_4004(channel, path, alice):
    socket, _, _ = await open_socket(path, token=await token_for(alice))
    assert await close_code(socket) == 4004


async def test_a_foreign_origin_is_refused(channel):
    _, connected, _ = await open_socket("/ws/lobby?watch=1", origin=b"http://evil.example")
    assert not connected


async def test_an_outsider_cannot_chat_in_a_private_channel(private_channel, carol):
    socket, _, _ = await open_socket("/ws/backroom", token=await token_for(carol))
    assert await close_code(socket) == 4003


async def test_an_outsider_cannot_watch_a_private_channel_without_the_key(private_channel, carol):
    socket, _, _ = await open_socket("/ws/backroom?watch=1", token=await token_for(carol))
    assert await close_code(socket) == 4003
    anonymous, _, _ = await open_socket("/ws/backroom?watch=1")
    assert await close_code(anonymous) == 4001
    wrong, _, _ = await open_socket("/ws/backroom?watch=1&key=guess")
    assert await close_code(wrong) == 4003


async def test_the_watch_key_lets_anyone_watch_a_private_channel(private_channel):
    socket, _, _ = await open_socket(f"/ws/backroom?watch=1&key={private_channel.watch_key}")
    assert (await receive(socket))["mode"] == "watch"
    await socket.disconnect()


async def test_a_member_of_a_private_channel_chats_and_watches(private_channel, bob):
    token = await token_for(bob)
    for path in ("/ws/backroom", "/ws/backroom?watch=1"):
        socket, _, _ = await open_socket(path, token=token)
        assert (await receive(socket))["type"] == "history"
        await socket.disconnect()


async def test_an_oversized_frame_closes_the_socket(channel, alice, settings):
    settings.MAX_FRAME_BYTES = 1000
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    await receive(socket)
    await socket.send_to(text_data="x" * 1001)
    error = await receive(socket)
    assert error["code"] == "too_long"
    assert await close_code(socket) == 1009
