"""Sending over REST: send-and-wait, and the other conversation verbs."""

import pytest
from rest_framework.test import APIClient

from chat.models import Turn
from tests.conftest import client_for, use_slow_model

pytestmark = pytest.mark.django_db(transaction=True)


def test_send_and_wait_returns_the_bot_turn(channel, alice):
    response = client_for(alice).post("/api/channels/lobby/messages", {"text": "I need sleep"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["user_turn"]["text"] == "I need sleep"
    assert body["bot_turn"]["role"] == "bot" and body["bot_turn"]["finish_reason"] == "stop"
    assert body["bot_turn"]["text"] == Turn.objects.get(role="bot").text
    assert body["session"] == str(channel.active_session.pk)


def test_a_slow_reply_answers_202_with_the_ids_to_poll(channel, alice, openai_server, settings):
    settings.SYNC_REPLY_TIMEOUT = 0.2
    use_slow_model(channel, openai_server, delay=0.02, tokens=[" x"] * 100)
    response = client_for(alice).post("/api/channels/lobby/messages", {"text": "go"}, format="json")
    assert response.status_code == 202
    assert response.json()["user_turn"]["text"] == "go" and response.json()["session"]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({}, 400, "invalid"),
        ({"text": 5}, 400, "invalid"),
        ({"text": "  "}, 400, "invalid"),
        ({"text": "hi", "params": {"top_p": 3}}, 400, "invalid"),
    ],
)
def test_bad_messages_are_refused_with_the_field_named(channel, alice, payload, status, code):
    response = client_for(alice).post("/api/channels/lobby/messages", payload, format="json")
    assert response.status_code == status and response.json()["detail"]
    assert Turn.objects.count() == 0


def test_too_long_is_413(channel, alice, settings):
    settings.MAX_MESSAGE_CHARS = 5
    response = client_for(alice).post("/api/channels/lobby/messages", {"text": "abcdef"}, format="json")
    assert response.status_code == 413


def test_locked_channels_refuse_with_409(channel, bob):
    channel.locked = True
    channel.save()
    assert (
        client_for(bob).post("/api/channels/lobby/messages", {"text": "hi"}, format="json").status_code == 409
    )


def test_an_outsider_cannot_post_in_a_private_channel(private_channel, carol):
    response = client_for(carol).post("/api/channels/backroom/messages", {"text": "hi"}, format="json")
    assert response.status_code == 404


def test_anonymous_posting_is_401(channel):
    assert APIClient().post("/api/channels/lobby/messages", {"text": "hi"}, format="json").status_code == 401


def test_rate_limit_is_429_with_retry_after(channel, alice, settings):
    settings.MESSAGES_PER_MINUTE = 1
    client = client_for(alice)
    assert (
        client.post("/api/channels/lobby/inject", {"role": "user", "text": "x"}, format="json").status_code
        == 201
    )
    # the injected turn was the minute's one message (issue 11, item 9)
    response = client.post("/api/channels/lobby/messages", {"text": "one"}, format="json")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60 and response.json()["retry_after"] == int(
        response["Retry-After"]
    )


def test_inject_regenerate_reset_interrupt(channel, alice, bob):
    client = client_for(alice)
    injected = client.post("/api/channels/lobby/inject", {"role": "agent", "text": "Rain."}, format="json")
    assert injected.status_code == 201 and injected.json()["role"] == "agent"
    assert (
        client.post("/api/channels/lobby/inject", {"role": "god", "text": "x"}, format="json").status_code
        == 400
    )
    first = client.post("/api/channels/lobby/messages", {"text": "hello"}, format="json").json()["bot_turn"]
    regen = client.post("/api/channels/lobby/regenerate", {}, format="json")
    assert regen.status_code == 202 and regen.json() == {"removed_turn": first["id"]}
    assert client.post("/api/channels/lobby/interrupt").json()["interrupted"] in (True, False)
    reset = client.post("/api/channels/lobby/reset")
    assert reset.status_code == 201 and reset.json()["session"] == str(channel.active_session.pk)
    assert client_for(bob).post("/api/channels/lobby/reset").status_code == 201  # members may reset
