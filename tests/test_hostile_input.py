"""Inputs that once gave a 500 or killed a socket (issue 11, item 11): each gets a clear
400 / `invalid` naming the field, and the socket stays open."""

import pytest

from chat.models import Turn
from chat.realtime.async_db import db_call
from tests.conftest import client_for
from tests.ws_helpers import open_socket, receive, token_for


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["²", "١٢", "٣", "1²", "-1", "1.5", "x"])
def test_a_non_ascii_or_malformed_last_event_id_is_a_400(channel, value):
    response = client_for().get("/api/channels/lobby/events", HTTP_LAST_EVENT_ID=value)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and "Last-Event-ID" in body["fields"]


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["99999999999999999999", "0", "-3", "abc", "²", "1e3"])
def test_an_out_of_range_or_malformed_page_is_a_400(channel, page):
    response = client_for().get(f"/api/channels?page={page}")
    assert response.status_code == 400
    assert response.json()["fields"] == {"page": [response.json()["fields"]["page"][0]]}


@pytest.mark.django_db
def test_a_json_body_nested_too_deep_is_a_400(alice):
    body = "[" * 1100 + "]" * 1100
    response = client_for(alice).post("/api/channels", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_json"
    nested = '{"name": "x", "title": ' + "[" * 1100 + "]" * 1100 + "}"
    response = client_for(alice).post("/api/channels", nested, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "bad_json"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize("stop", [[None], [""], ["ok", None]])
async def test_bad_stop_sequences_name_the_item_and_keep_the_socket(channel, alice, stop):
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    await receive(socket)
    await socket.send_json_to({"type": "message", "text": "hi", "framing": {"stop": stop}})
    error = await receive(socket)
    assert error["type"] == "error" and error["code"] == "invalid", error
    bad = "0" if stop[0] in (None, "") else "1"
    assert set(error["fields"]["framing"]["stop"]) == {bad}
    await socket.send_json_to({"type": "ping"})
    assert (await receive(socket))["type"] == "pong"
    assert await db_call(Turn.objects.count)() == 0
    await socket.disconnect()


@pytest.mark.django_db
def test_bad_stop_sequences_over_rest_name_the_item_too(channel, alice):
    response = client_for(alice).patch("/api/channels/lobby", {"framing": {"stop": [None]}}, format="json")
    assert response.status_code == 400
    assert set(response.json()["fields"]["framing"]["stop"]) == {"0"}
