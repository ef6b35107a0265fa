"""Zulip's strongest test, for every action: the history before it plus the events it
sent must equal the history fetched afresh afterwards."""

import asyncio

import pytest

from chat.realtime.async_db import db_call
from tests.conftest import use_slow_model
from tests.ws_helpers import ChannelState, open_socket, receive, token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def fresh_history():
    socket, _, _ = await open_socket("/ws/lobby?watch=1")
    history = await receive(socket)
    await socket.disconnect()
    return history


async def follow(watcher, state, until, timeout=10):
    """Apply the watcher's events to the state until one matches ``until``."""
    async with asyncio.timeout(timeout):
        while True:
            event = await receive(watcher)
            state.apply(event)
            if until(event):
                return event


def assert_same(state, history):
    expected = ChannelState(history).snapshot()
    assert state.snapshot() == expected


async def setup_sockets(alice):
    watcher, _, _ = await open_socket("/ws/lobby?watch=1")
    state = ChannelState(await receive(watcher))
    chat, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    await receive(chat)
    return watcher, chat, state


def is_type(kind):
    return lambda event: event["type"] == kind


async def test_a_message_and_its_reply_bring_every_client_to_the_fresh_history(channel, alice):
    watcher, chat, state = await setup_sockets(alice)
    await chat.send_json_to({"type": "message", "text": "I think so"})
    await follow(watcher, state, is_type("done"))
    assert_same(state, await fresh_history())


async def test_message_with_new_settings(channel, alice):
    watcher, chat, state = await setup_sockets(alice)
    await chat.send_json_to(
        {"type": "message", "text": "hi", "framing": {"preamble": "New."}, "params": {"max_tokens": 3}}
    )
    await follow(watcher, state, is_type("done"))
    # framing is saved; params are that reply's only (issue 14)
    assert state.framing["preamble"] == "New." and state.params["max_tokens"] != 3
    assert_same(state, await fresh_history())


async def test_injected_turns_bring_every_client_to_the_fresh_history(channel, alice):
    watcher, chat, state = await setup_sockets(alice)
    for role in ("user", "agent", "bot"):
        await chat.send_json_to({"type": "inject", "role": role, "text": f"as {role}"})
        await follow(watcher, state, is_type("turn"))
    assert_same(state, await fresh_history())


async def test_a_regenerated_reply_brings_every_client_to_the_fresh_history(channel, alice):
    watcher, chat, state = await setup_sockets(alice)
    await chat.send_json_to({"type": "message", "text": "hello"})
    await follow(watcher, state, is_type("done"))
    await chat.send_json_to({"type": "regenerate"})
    await follow(watcher, state, is_type("done"))
    assert_same(state, await fresh_history())


async def test_a_reset_brings_every_client_to_an_empty_fresh_history(channel, alice):
    watcher, chat, state = await setup_sockets(alice)
    await chat.send_json_to({"type": "inject", "role": "user", "text": "old"})
    await follow(watcher, state, is_type("turn"))
    await chat.send_json_to({"type": "reset"})
    await follow(watcher, state, is_type("reset"))
    assert state.turns == {}
    assert_same(state, await fresh_history())


async def test_an_interrupted_reply_brings_every_client_to_the_fresh_history(channel, alice, openai_server):
    await db_call(use_slow_model)(channel, openai_server, delay=0.01, tokens=[" t"] * 400, max_tokens=500)
    watcher, chat, state = await setup_sockets(alice)
    await chat.send_json_to({"type": "message", "text": "go"})
    await follow(watcher, state, is_type("token"))
    await chat.send_json_to({"type": "interrupt"})
    await follow(watcher, state, is_type("done"))
    bot = next(t for t in state.turns.values() if t["role"] == "bot")
    assert bot["finish_reason"] == "interrupted"
    assert_same(state, await fresh_history())


async def test_joining_mid_reply_sees_the_text_so_far_then_the_rest(channel, alice, openai_server):
    await db_call(use_slow_model)(
        channel, openai_server, delay=0.01, tokens=[f" w{i}" for i in range(150)], max_tokens=500
    )
    watcher, chat, state = await setup_sockets(alice)
    await chat.send_json_to({"type": "message", "text": "go"})
    await follow(watcher, state, lambda e: e["type"] == "token" and len(state.generating["text"]) > 20)
    late, _, _ = await open_socket("/ws/lobby?watch=1")
    late_history = await receive(late)
    assert late_history["generating"] is not None and late_history["generating"]["text"]
    late_state = ChannelState(late_history)
    await follow(late, late_state, is_type("done"))
    await follow(watcher, state, is_type("done"))
    assert late_state.snapshot() == state.snapshot()
    bot = next(t for t in state.turns.values() if t["role"] == "bot")
    assert bot["text"] == "".join(f" w{i}" for i in range(150))
