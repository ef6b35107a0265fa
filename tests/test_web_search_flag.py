"""A message's (or regenerate's) `web_search` (issue 17: the conversations API's flag):
true adds the web_search tool to that reply where the instance has a search endpoint,
false leaves the channel's out for that reply; true without an endpoint, in a
completion-mode channel, or anything but a boolean is a 400 naming `web_search` on REST
and the socket, with nothing saved or counted."""

from __future__ import annotations

from typing import Any

import pytest

from chat.models import Channel, Turn
from chat.services import post_message
from tests.conftest import add_provider, client_for, use_provider, wait_for, wait_for_done
from tests.test_strict_input import rest_invalid, ws_answer, ws_invalid

SEARCH = "http://127.0.0.1:9/search"  # never fetched here: only the tool's offer is looked at


def offered(body: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in body.get("tools") or []]


def send(user, **body: Any):
    return client_for(user).post(
        "/api/channels/lobby/messages", {"text": "look it up", **body}, format="json"
    )


@pytest.fixture
def model(channel, openai_server):
    add_provider("fake", openai_server.base_url)
    use_provider(channel, "fake")
    return openai_server


@pytest.mark.django_db
def test_without_a_search_endpoint_true_is_a_400_naming_it(channel, alice, settings):
    settings.WEB_SEARCH_URL = ""
    body = rest_invalid(send(alice, web_search=True), "web_search")
    assert body["fields"]["web_search"] == ["Web search is not configured on this instance."]
    regenerate = client_for(alice).post("/api/channels/lobby/regenerate", {"web_search": True}, format="json")
    rest_invalid(regenerate, "web_search")
    assert not Turn.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_anything_but_a_boolean_is_a_400_naming_it(channel, alice, settings, value):
    settings.WEB_SEARCH_URL = SEARCH
    rest_invalid(send(alice, web_search=value), "web_search")
    assert not Turn.objects.exists()


@pytest.mark.django_db
def test_a_completion_mode_channel_takes_no_web_search(channel, alice, settings):
    settings.WEB_SEARCH_URL = SEARCH
    Channel.objects.filter(pk=channel.pk).update(mode=Channel.Mode.COMPLETION)
    rest_invalid(send(alice, web_search=True), "web_search")
    assert not Turn.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_the_socket_names_it_too_and_stays_open(channel, alice, settings):
    settings.WEB_SEARCH_URL = ""
    ws_invalid(await ws_answer(alice, {"type": "message", "text": "hi", "web_search": True}), "web_search")
    ws_invalid(await ws_answer(alice, {"type": "regenerate", "web_search": True}), "web_search")


@pytest.mark.django_db(transaction=True)
def test_true_offers_web_search_to_that_reply_only(channel, alice, settings, model):
    settings.WEB_SEARCH_URL = SEARCH
    assert send(alice, web_search=True).status_code in (200, 202)
    wait_for_done(channel)
    assert "web_search" in offered(model.requests[-1])
    assert Turn.objects.get(role="user").request["web_search"] is True
    assert send(alice).status_code in (200, 202)  # the next message, without it
    wait_for_done(channel, count=2)
    assert "web_search" not in offered(model.requests[-1])


@pytest.mark.django_db(transaction=True)
def test_false_leaves_the_channels_web_search_out_of_that_reply(channel, alice, settings, model):
    settings.WEB_SEARCH_URL = SEARCH
    channel.tools = ["web_search", "calculator"]
    channel.save(update_fields=["tools"])
    assert send(alice, web_search=False).status_code in (200, 202)
    wait_for_done(channel)
    assert offered(model.requests[-1]) == ["calculator"]


@pytest.mark.django_db
def test_a_member_may_not_turn_it_on_where_the_owner_did_not_choose_it(channel, alice, bob, settings):
    settings.WEB_SEARCH_URL = SEARCH
    response = send(bob, web_search=True)
    assert response.status_code == 403, response.content
    assert response.json()["code"] == "forbidden" and "web_search" in response.json()["fields"]
    assert not Turn.objects.exists()
    # Leaving it out is anyone's (the service: no reply is asked for in this test).
    assert (
        post_message(channel=channel, user=bob, text="no search", web_search=False).request["web_search"]
        is False
    )


@pytest.mark.django_db(transaction=True)
def test_a_member_may_ask_for_it_where_the_channel_has_it_and_regenerate_takes_it(
    channel, alice, bob, settings, model
):
    settings.WEB_SEARCH_URL = SEARCH
    channel.tools = ["web_search"]
    channel.save(update_fields=["tools"])
    assert send(bob, web_search=True).status_code in (200, 202)
    wait_for_done(channel)
    assert "web_search" in offered(model.requests[-1])
    again = client_for(bob).post("/api/channels/lobby/regenerate", {"web_search": False}, format="json")
    assert again.status_code in (200, 202), again.content
    wait_for(
        lambda: (
            len(model.requests) == 2 and Turn.objects.filter(role="bot", finish_reason="stop").count() == 2
        )
    )
    assert "web_search" not in offered(model.requests[-1])
