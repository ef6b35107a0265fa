"""Arbitrary frames never crash a socket, and nothing sent through watch changes anything."""

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.models import Turn
from chat.realtime import store
from tests.ws_helpers import open_socket, receive, token_for

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
message_types = st.sampled_from(
    ["message", "regenerate", "inject", "reset", "interrupt", "get_history", "ping", "nope", ""]
)
protocol_like = st.fixed_dictionaries(
    {"type": message_types},
    optional={
        "text": st.one_of(st.text(max_size=50), json_values),
        "role": st.one_of(st.sampled_from(["user", "agent", "bot", "god"]), json_values),
        "since": st.one_of(st.integers(min_value=-5, max_value=10**6), json_values),
        "framing": st.one_of(
            st.dictionaries(st.sampled_from(["preamble", "stop", "x"]), json_values), json_values
        ),
        "params": st.one_of(
            st.dictionaries(st.sampled_from(["temperature", "max_tokens", "top_k", "y"]), json_values),
            json_values,
        ),
    },
).map(json.dumps)
frames = st.lists(
    # (WebsocketCommunicator cannot send an empty frame, hence min_size=1)
    st.one_of(
        protocol_like,
        json_values.map(json.dumps),
        st.text(min_size=1, max_size=200),
        st.binary(min_size=1, max_size=50),
    ),
    min_size=1,
    max_size=8,
)


def assert_no_errors(records, sequence):
    assert not records, f"logged {records[0].getMessage()!r} ({records[0].exc_info}) after {sequence!r}"


async def survives(path, token, sequence):
    """Send the frames, then a ping: the pong proves the socket is alive and in order."""
    socket, _, _ = await open_socket(path, token=token)
    await receive(socket)
    for frame in sequence:
        if isinstance(frame, bytes):
            await socket.send_to(bytes_data=frame)
        else:
            await socket.send_to(text_data=frame)
    await socket.send_json_to({"type": "ping"})
    async with asyncio.timeout(20):
        while True:
            output = await socket.receive_output(20)
            assert output["type"] != "websocket.close", f"closed with {output.get('code')} after {sequence!r}"
            if json.loads(output.get("text") or "{}").get("type") == "pong":
                break
    await socket.disconnect()


@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=frames)
def test_a_watch_socket_survives_anything_and_changes_nothing(channel, alice, logged_errors, sequence):
    logged_errors.clear()  # the fixture spans hypothesis's examples
    token = asyncio.run(token_for(alice))
    seq_before = store.sync_redis().get(store.key(channel.pk, "seq"))
    turns_before = Turn.objects.count()
    asyncio.run(survives("/ws/lobby?watch=1", token, sequence))
    assert_no_errors(logged_errors, sequence)
    assert store.sync_redis().get(store.key(channel.pk, "seq")) == seq_before
    assert Turn.objects.count() == turns_before


@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=frames)
def test_a_chat_socket_survives_anything(channel, alice, logged_errors, sequence):
    logged_errors.clear()
    token = asyncio.run(token_for(alice))
    asyncio.run(survives("/ws/lobby", token, sequence))
    assert_no_errors(logged_errors, sequence)
