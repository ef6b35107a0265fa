"""Issue 11, items 17 and 18: one strict input schema per action, shared by REST and the
WebSocket. Nothing a client sends is silently coerced, trimmed or ignored: a wrong type,
an unknown key or a NUL character is an `invalid` answer naming the field, and nothing
is saved. (Run on SQLite and on PostgreSQL, which cannot store NUL in text at all.)"""

from __future__ import annotations

import pytest

from chat.models import Channel, Membership, Turn
from chat.realtime.async_db import db_call
from tests.conftest import client_for
from tests.ws_helpers import open_socket, receive, token_for

NUL = "\u0000"


async def ws_answer(user, frame: dict) -> dict:
    """The first answer to one frame on a fresh chat socket of the lobby."""
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(user))
    assert (await receive(socket))["type"] == "history"
    await socket.send_json_to(frame)
    answer = await receive(socket)
    await socket.send_json_to({"type": "ping"})
    assert (await receive(socket))["type"] == "pong"  # the socket lives on
    await socket.disconnect()
    return answer


def rest_invalid(response, *path: str) -> dict:
    """Assert a 400 `invalid` whose `fields` name ``path``; return the body."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and body["detail"], body
    fields = body["fields"]
    for key in path:
        assert key in fields, (path, body)
        fields = fields[key]
    return body


def ws_invalid(answer: dict, *path: str) -> None:
    assert answer["type"] == "error" and answer["code"] == "invalid", answer
    fields = answer["fields"]
    for key in path:
        assert key in fields, (path, answer)
        fields = fields[key]


# --- item 17: no silent acceptance -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["ok-name\n", " ok-name", "ok-name ", "ok-name\t"])
def test_a_channel_name_with_surrounding_whitespace_is_refused_not_trimmed(alice, name):
    rest_invalid(client_for(alice).post("/api/channels", {"name": name}, format="json"), "name")
    assert not Channel.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": 5.0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"top_k": "40"}, "top_k"),
        ({"temperature": "0.5"}, "temperature"),
        ({"temperature": False}, "temperature"),
        ({"model": 5}, "model"),
        ({"provider": ["demo"]}, "provider"),
    ],
)
def test_params_of_the_wrong_json_type_are_refused_over_rest(channel, alice, params, field):
    before = Channel.objects.get(name="lobby").params
    rest_invalid(
        client_for(alice).patch("/api/channels/lobby", {"params": params}, format="json"), "params", field
    )
    assert Channel.objects.get(name="lobby").params == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("framing", "field"),
    [
        ({"quote_user": "yes"}, "quote_user"),
        ({"quote_user": 1}, "quote_user"),
        ({"preamble": 5}, "preamble"),
        ({"stop": "\nUser:"}, "stop"),
        ({"stop": [5]}, "stop"),
    ],
)
def test_framing_of_the_wrong_json_type_is_refused_over_rest(channel, alice, framing, field):
    rest_invalid(
        client_for(alice).patch("/api/channels/lobby", {"framing": framing}, format="json"), "framing", field
    )


@pytest.mark.django_db
@pytest.mark.parametrize("locked", ["yes", "true", 1, 0, "on", None])
def test_locked_must_be_a_json_boolean(channel, alice, locked):
    rest_invalid(client_for(alice).patch("/api/channels/lobby", {"locked": locked}, format="json"), "locked")
    assert Channel.objects.get(name="lobby").locked is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": 5}, "title"),
        ({"visibility": True}, "visibility"),
        ({"framing": "x"}, "framing"),
        ({"params": []}, "params"),
        ({"framing": None}, "framing"),
    ],
)
def test_other_channel_changes_of_the_wrong_type_are_refused(channel, alice, payload, field):
    rest_invalid(client_for(alice).patch("/api/channels/lobby", payload, format="json"), field)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/api/channels", {"name": "fresh", "colour": "red"}),
        ("/api/channels/lobby", {"title": "Hall", "colour": "red"}),
        ("/api/channels/lobby/messages", {"text": "hi", "colour": "red"}),
        ("/api/channels/lobby/regenerate", {"colour": "red"}),
        ("/api/channels/lobby/inject", {"role": "user", "text": "hi", "colour": "red"}),
        ("/api/channels/lobby/reset", {"colour": "red"}),
        ("/api/channels/lobby/interrupt", {"colour": "red"}),
        ("/api/channels/lobby/members", {"username": "carol", "colour": "red"}),
        ("/api/sessions/bulk-delete", {"ids": [], "colour": "red"}),
        ("SESSION/truncate", {"keep": 0, "colour": "red"}),
    ],
)
def test_unknown_keys_in_a_body_are_refused_and_nothing_changes(channel, alice, carol, path, payload):
    session = channel.active_session
    path = path.replace("SESSION", f"/api/sessions/{session.pk}")
    client = client_for(alice)
    if path == "/api/channels/lobby":
        response = client.patch(path, payload, format="json")
    else:
        response = client.post(path, payload, format="json")
    body = rest_invalid(response, "colour")
    assert body["fields"]["colour"] == ["Unknown field."]
    assert not Channel.objects.filter(name="fresh").exists()
    assert Channel.objects.get(name="lobby").title == "Lobby"
    assert Turn.objects.count() == 0
    assert not Membership.objects.filter(user=carol).exists()
    assert channel.sessions.count() == 1 and channel.active_session == session


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/api/channels/lobby/messages", {"text": ["hi"]}, "text"),
        ("/api/channels/lobby/inject", {"role": 5, "text": "x"}, "role"),
        ("/api/channels/lobby/inject", {"role": "user", "text": None}, "text"),
        ("/api/channels/lobby/members", {"username": 5}, "username"),
        ("/api/sessions/bulk-delete", {"ids": [5]}, "ids"),
        ("/api/sessions/bulk-delete", {"ids": "x"}, "ids"),
        ("SESSION/truncate", {"keep": "2"}, "keep"),
        ("SESSION/truncate", {"keep": 2.0}, "keep"),
        ("SESSION/truncate", {"keep": True}, "keep"),
    ],
)
def test_wrong_types_in_the_other_bodies_are_refused(channel, alice, path, payload, field):
    path = path.replace("SESSION", f"/api/sessions/{channel.active_session.pk}")
    rest_invalid(client_for(alice).post(path, payload, format="json"), field)


@pytest.mark.django_db
def test_a_form_encoded_body_is_refused_rather_than_read_with_form_rules(channel, alice):
    # Form rules would read a missing boolean as false and every value as a string.
    response = client_for(alice).patch("/api/channels/lobby", {"title": "Hall"}, format="multipart")
    assert response.status_code in (400, 415), response.content
    assert Channel.objects.get(name="lobby").title == "Lobby"


@pytest.mark.django_db
def test_list_item_errors_are_keyed_by_strings(alice):
    response = client_for(alice).post("/api/sessions/bulk-delete", {"ids": ["nope", 5]}, format="json")
    assert set(rest_invalid(response, "ids")["fields"]["ids"]) == {"0", "1"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("frame", "path"),
    [
        ({"type": "message", "text": "hi", "params": {"max_tokens": "5"}}, ("params", "max_tokens")),
        ({"type": "message", "text": "hi", "params": {"max_tokens": 5.0}}, ("params", "max_tokens")),
        ({"type": "message", "text": "hi", "params": {"temperature": True}}, ("params", "temperature")),
        ({"type": "message", "text": "hi", "framing": {"quote_user": "yes"}}, ("framing", "quote_user")),
        ({"type": "message", "text": "hi", "framing": None}, ("framing",)),
        ({"type": "regenerate", "params": {"top_k": "1"}}, ("params", "top_k")),
        ({"type": "message", "text": "hi", "colour": "red"}, ("colour",)),
        ({"type": "regenerate", "colour": "red"}, ("colour",)),
        ({"type": "inject", "role": "user", "text": "x", "colour": "red"}, ("colour",)),
        ({"type": "reset", "colour": "red"}, ("colour",)),
        ({"type": "interrupt", "colour": "red"}, ("colour",)),
        ({"type": "get_history", "since": 0, "colour": "red"}, ("colour",)),
        ({"type": "get_history", "since": 1.0}, ("since",)),
        ({"type": "get_history", "since": True}, ("since",)),
        ({"type": "ping", "colour": "red"}, ("colour",)),
    ],
)
async def test_wrong_types_and_unknown_keys_are_refused_over_the_websocket(channel, alice, frame, path):
    ws_invalid(await ws_answer(alice, frame), *path)
    assert await db_call(Turn.objects.count)() == 0
    fresh = await db_call(Channel.objects.get)(name="lobby")
    assert fresh.params == channel.params and fresh.framing == channel.framing
    assert await db_call(fresh.sessions.count)() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("inject", {"role": 5, "text": "x"}),
        ("inject", {"role": "wizard", "text": "x"}),
        ("inject", {"text": 5}),
        ("message", {"text": "hi", "colour": "red", "params": {"max_tokens": "5"}}),
        ("message", {"text": "hi", "params": {"max_tokens": "5", "top_k": 1.5}}),
        ("message", {}),
        ("regenerate", {"framing": []}),
    ],
)
async def test_the_same_bad_input_gets_the_same_fields_over_rest_and_websocket(channel, alice, kind, payload):
    answer = await ws_answer(alice, {"type": kind, **payload})
    path = "/api/channels/lobby/" + {"message": "messages"}.get(kind, kind)
    response = await db_call(lambda: client_for(alice).post(path, payload, format="json"))()
    assert response.status_code == 400 and response.json()["code"] == "invalid" == answer["code"]
    assert response.json()["fields"] == answer["fields"]


# --- item 18: NUL characters ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("frame", "path"),
    [
        ({"type": "message", "text": f"hi{NUL}there"}, ("text",)),
        ({"type": "inject", "role": "agent", "text": f"{NUL}"}, ("text",)),
        ({"type": "message", "text": "hi", "framing": {"preamble": f"a{NUL}"}}, ("framing", "preamble")),
        ({"type": "message", "text": "hi", "framing": {"stop": ["x", NUL]}}, ("framing", "stop", "1")),
        ({"type": "message", "text": "hi", "params": {"model": NUL}}, ("params", "model")),
        ({"type": "message", "text": "hi", "params": {"provider": f"demo{NUL}"}}, ("params", "provider")),
    ],
)
async def test_a_nul_character_over_the_websocket_is_invalid_naming_the_field(
    channel, alice, logged_errors, frame, path
):
    ws_invalid(await ws_answer(alice, frame), *path)
    assert await db_call(Turn.objects.count)() == 0
    assert not logged_errors, logged_errors[0].getMessage()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "path", "payload", "field"),
    [
        ("post", "/api/channels/lobby/messages", {"text": f"hi{NUL}"}, ("text",)),
        ("post", "/api/channels/lobby/inject", {"role": "user", "text": NUL}, ("text",)),
        ("post", "/api/channels", {"name": f"new{NUL}"}, ("name",)),
        ("post", "/api/channels", {"name": "new", "title": f"T{NUL}"}, ("title",)),
        ("patch", "/api/channels/lobby", {"title": f"T{NUL}"}, ("title",)),
        ("patch", "/api/channels/lobby", {"framing": {"user_prefix": NUL}}, ("framing", "user_prefix")),
        ("post", "/api/channels/lobby/members", {"username": f"carol{NUL}"}, ("username",)),
    ],
)
def test_a_nul_character_over_rest_is_invalid_naming_the_field(
    channel, alice, logged_errors, method, path, payload, field
):
    response = getattr(client_for(alice), method)(path, payload, format="json")
    rest_invalid(response, *field)
    assert Turn.objects.count() == 0
    assert not Channel.objects.filter(name="new").exists()
    assert Channel.objects.get(name="lobby").title == "Lobby"
    assert not logged_errors, logged_errors[0].getMessage()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize(
    "frame",
    [{"type": "get_turn", "id": 1, "extra": 1}, {"type": "get_turn", "id": "1"}, {"type": "get_turn"}],
)
async def test_get_turn_has_a_strict_schema_too(channel, frame):
    socket, _, _ = await open_socket("/ws/lobby?watch=1")
    await receive(socket)
    await socket.send_json_to(frame)
    error = await receive(socket)
    assert error["type"] == "error" and error["code"] == "invalid" and error["fields"]
    await socket.disconnect()
