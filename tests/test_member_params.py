"""Per-message choices within the owner's bounds (issue 14): the member_params policy,
set through PATCH /api/channels/{name}, and message/regenerate params over REST and the
WebSocket, as the owner, a member, an outsider, a removed member and a watcher."""

from __future__ import annotations

import pytest

from chat import limits, services
from chat.models import Channel, Turn
from chat.realtime.async_db import db_call
from tests.conftest import (
    add_provider,
    channel_events,
    client_for,
    wait_for,
    wait_for_done,
    wait_until_no_generation,
)
from tests.ws_helpers import open_socket, receive, receive_until, token_for

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = {
    "temperature": {"min": 0.2, "max": 1.0},
    "max_tokens": {"max": 50},
    "models": ["demo/demo"],
}


def set_policy(channel: Channel, policy: dict) -> None:
    response = client_for(channel.owner).patch(
        f"/api/channels/{channel.name}", {"member_params": policy}, format="json"
    )
    assert response.status_code == 200, response.json()


def send(user, payload: dict, name: str = "lobby"):
    return client_for(user).post(f"/api/channels/{name}/messages", payload, format="json")


# --- the policy -------------------------------------------------------------------------


def test_the_owner_sets_the_policy_and_every_screen_sees_it(channel, alice):
    response = client_for(alice).patch("/api/channels/lobby", {"member_params": POLICY}, format="json")
    assert response.status_code == 200
    assert response.json()["member_params"] == POLICY
    assert client_for(alice).get("/api/channels/lobby").json()["member_params"] == POLICY
    update = [e for e in channel_events(channel) if e["type"] == "channel_updated"][-1]
    assert update["member_params"] == POLICY and update["instruction"] is None


def test_a_moderator_sets_the_policy_and_a_member_may_not(channel, bob, mona):
    assert (
        client_for(mona).patch("/api/channels/lobby", {"member_params": {}}, format="json").status_code == 200
    )
    response = client_for(bob).patch("/api/channels/lobby", {"member_params": POLICY}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert Channel.objects.get(name="lobby").member_params == {}


def test_outsiders_cannot_see_or_set_a_private_channels_policy(private_channel, carol):
    response = client_for(carol).patch("/api/channels/backroom", {"member_params": POLICY}, format="json")
    assert response.status_code == 404
    anonymous = client_for().patch("/api/channels/backroom", {"member_params": POLICY}, format="json")
    assert anonymous.status_code in (401, 403)


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        ([], None),
        ("all", None),
        ({"colour": {"min": 0, "max": 1}}, "colour"),
        ({"temperature": {"min": 1.5, "max": 0.5}}, "temperature"),
        ({"temperature": {"min": 0, "max": 3}}, "temperature"),
        ({"temperature": {"min": "0", "max": 1}}, "temperature"),
        ({"temperature": {"max": 1}}, "temperature"),
        ({"temperature": {"min": 0, "max": 1, "step": 0.1}}, "temperature"),
        ({"top_k": {"min": 0.5, "max": 3}}, "top_k"),
        ({"max_tokens": {"max": 10**9}}, "max_tokens"),
        ({"max_tokens": {"max": 0}}, "max_tokens"),
        ({"thinking": "yes"}, "thinking"),
        ({"models": "demo/demo"}, "models"),
        ({"models": ["demo"]}, "models"),
        ({"models": ["nope/model"]}, "models"),
        ({"models": ["demo/demo"] * 51}, "models"),
        ({"models": ["demo/" + "x" * 300]}, "models"),
        ({"models": ["demo/de\u0000mo"]}, "models"),
    ],
)
def test_a_malformed_policy_is_a_400_naming_it(channel, alice, policy, key):
    response = client_for(alice).patch("/api/channels/lobby", {"member_params": policy}, format="json")
    assert response.status_code == 400, response.json()
    fields = response.json()["fields"]
    assert "member_params" in fields
    if key is not None:
        assert key in fields["member_params"], fields
    assert Channel.objects.get(name="lobby").member_params == {}


# --- members' messages ------------------------------------------------------------------


def test_a_member_chooses_within_bounds_for_that_reply_only(channel, bob):
    set_policy(channel, POLICY)
    response = send(bob, {"text": "hello", "params": {"temperature": 0.5, "max_tokens": 3}})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["user_turn"]["request"] == {"params": {"temperature": 0.5, "max_tokens": 3}}
    bot = body["bot_turn"]
    assert bot["params"]["temperature"] == 0.5 and bot["params"]["max_tokens"] == 3
    assert bot["finish_reason"] == "length"  # the demo honoured the chosen max_tokens
    channel.refresh_from_db()
    assert channel.params["temperature"] == 0.8 and channel.params["max_tokens"] == 256
    assert not [e for e in channel_events(channel) if e["type"] == "channel_updated"][1:]
    # the next reply is back on the channel's own settings
    second = send(bob, {"text": "again"}).json()
    assert second["user_turn"]["request"] == {} and second["bot_turn"]["params"]["max_tokens"] == 256


def test_a_member_may_not_choose_what_the_policy_does_not_offer(channel, bob):
    set_policy(channel, POLICY)
    for params in ({"top_p": 0.5}, {"top_k": 3}, {"repeat_penalty": 1.3}, {"thinking": True}):
        response = send(bob, {"text": "hi", "params": params})
        assert response.status_code == 403 and response.json()["code"] == "forbidden", params
    assert Turn.objects.count() == 0
    assert limits.usage_today(bob)["messages"] == 0  # refused before anything is counted


def test_an_empty_policy_lets_members_choose_nothing(channel, bob):
    response = send(bob, {"text": "hi", "params": {"temperature": 0.5}})
    assert response.status_code == 403
    # the channel's own value is no choice: a page may send what it shows
    assert send(bob, {"text": "hi", "params": {"temperature": 0.8}}).status_code == 200


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"temperature": 0.1}, "temperature"),
        ({"temperature": 1.5}, "temperature"),
        ({"max_tokens": 51}, "max_tokens"),
        ({"provider": "other", "model": "test-model"}, "model"),
    ],
)
def test_out_of_bounds_is_invalid_naming_the_param(channel, bob, openai_server, params, key):
    add_provider("other", openai_server.base_url)
    set_policy(channel, POLICY)
    response = send(bob, {"text": "hi", "params": params})
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert list(response.json()["fields"]["params"]) == [key]
    assert Turn.objects.count() == 0


def test_the_owner_and_moderators_are_bound_by_the_ranges_only(channel, alice, mona):
    set_policy(channel, POLICY)
    response = send(alice, {"text": "hi", "params": {"temperature": 1.9, "top_k": 5}})
    assert response.status_code == 200
    assert response.json()["bot_turn"]["params"]["top_k"] == 5
    assert send(mona, {"text": "hi", "params": {"top_p": 0.1}}).status_code == 200
    too_hot = send(alice, {"text": "hi", "params": {"temperature": 2.5}})
    assert too_hot.status_code == 400 and "temperature" in too_hot.json()["fields"]["params"]


def test_a_member_picks_an_offered_model_and_the_reply_uses_it(channel, bob, openai_server):
    add_provider("other", openai_server.base_url, model_names=["test-model", "big"])
    set_policy(channel, {"models": ["other/big"]})
    response = send(bob, {"text": "hi", "params": {"provider": "other", "model": "big"}})
    assert response.status_code == 200, response.json()
    assert openai_server.requests[0]["model"] == "big"
    assert response.json()["bot_turn"]["provider"] == "other"
    assert response.json()["bot_turn"]["model"] == "big"
    assert Channel.objects.get(name="lobby").params.get("provider", "") == ""


def test_a_chosen_model_that_fails_falls_over_with_the_same_choices(
    channel, bob, openai_server, second_openai_server
):
    openai_server.behaviour.status = 500
    add_provider("other", openai_server.base_url, priority=5)
    add_provider("backup", second_openai_server.base_url, priority=50)
    set_policy(channel, {"models": ["other/test-model"], "max_tokens": {"max": 50}})
    response = send(bob, {"text": "hi", "params": {"provider": "other", "max_tokens": 5}})
    assert response.status_code == 200
    bot = response.json()["bot_turn"]
    assert len(openai_server.requests) == 2  # tried twice: a 500 may pass
    assert bot["provider"] == "backup" and bot["finish_reason"] == "stop"
    assert second_openai_server.requests[0]["max_tokens"] == 5


def test_malformed_params_are_refused_for_members_as_for_the_owner(channel, bob):
    set_policy(channel, POLICY)
    for params, status in (
        ("hot", 400),
        ({"temperature": "0.5"}, 400),
        ({"temperature": True}, 400),
        ({"colour": "red"}, 400),
        ({"provider": "x" * 100}, 400),
    ):
        response = send(bob, {"text": "hi", "params": params})
        assert response.status_code == status and "params" in response.json()["fields"], params


def test_a_removed_member_and_an_outsider_cannot_choose_anything(private_channel, alice, bob, carol):
    set_policy(private_channel, POLICY)
    services.remove_member(actor=alice, channel=private_channel, user=bob)
    for user in (bob, carol):
        response = send(user, {"text": "hi", "params": {"temperature": 0.5}}, name="backroom")
        assert response.status_code == 404
    assert send(None, {"text": "hi", "params": {"temperature": 0.5}}, name="backroom").status_code in (
        401,
        403,
    )


# --- regenerate ----------------------------------------------------------------------------


def test_regenerate_with_choices_replaces_the_turns_and_without_keeps_them(channel, alice, bob):
    set_policy(channel, POLICY)
    user_turn = send(bob, {"text": "hello", "params": {"max_tokens": 2}}).json()["user_turn"]
    response = client_for(bob).post(
        "/api/channels/lobby/regenerate", {"params": {"max_tokens": 4}}, format="json"
    )
    assert response.status_code == 202
    wait_until_no_generation()
    assert Turn.objects.get(pk=user_turn["id"]).request == {"params": {"max_tokens": 4}}
    newest = Turn.objects.filter(role="bot", hidden=False).get()
    assert newest.params["max_tokens"] == 4
    assert client_for(bob).post("/api/channels/lobby/regenerate", {}, format="json").status_code == 202
    wait_until_no_generation()
    assert Turn.objects.filter(role="bot", hidden=False).get().params["max_tokens"] == 4
    refused = client_for(bob).post("/api/channels/lobby/regenerate", {"params": {"top_k": 1}}, format="json")
    assert refused.status_code == 403
    bad = client_for(bob).post(
        "/api/channels/lobby/regenerate", {"params": {"max_tokens": 99}}, format="json"
    )
    assert bad.status_code == 400 and "max_tokens" in bad.json()["fields"]["params"]


# --- over the WebSocket ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_member_chooses_over_the_socket_and_is_refused_the_same_way(channel, bob):
    await db_call(set_policy)(channel, POLICY)
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(bob))
    assert (await receive(socket))["type"] == "history"
    await socket.send_json_to({"type": "message", "text": "hi", "params": {"top_p": 0.3}})
    assert (await receive(socket))["code"] == "forbidden"
    await socket.send_json_to({"type": "message", "text": "hi", "params": {"temperature": 0.05}})
    error = await receive(socket)
    assert error["code"] == "invalid" and list(error["fields"]["params"]) == ["temperature"]
    await socket.send_json_to({"type": "message", "text": "hello", "params": {"max_tokens": 2}})
    frames = await receive_until(socket, "done")
    user_turn = next(f for f in frames if f["type"] == "turn" and f["role"] == "user")
    bot_turn = next(f for f in frames if f["type"] == "turn" and f["role"] == "bot")
    assert user_turn["request"] == {"params": {"max_tokens": 2}}
    assert bot_turn["params"]["max_tokens"] == 2 and bot_turn["finish_reason"] == "length"
    await socket.send_json_to({"type": "regenerate", "params": {"temperature": 0.9}})
    frames = await receive_until(socket, "done")
    updated = next(f for f in frames if f["type"] == "turn" and f["id"] == user_turn["id"])
    assert updated["request"] == {"params": {"temperature": 0.9}}
    await socket.disconnect()


@pytest.mark.asyncio
async def test_a_watcher_cannot_choose_anything(channel, bob):
    await db_call(set_policy)(channel, POLICY)
    socket, _, _ = await open_socket("/ws/lobby?watch=1", token=await token_for(bob))
    history = await receive(socket)
    assert history["member_params"] == POLICY and history["instruction"] is None
    await socket.send_json_to({"type": "message", "text": "hi", "params": {"temperature": 0.5}})
    assert (await receive(socket))["code"] == "read_only"
    await socket.disconnect()


def test_queued_messages_are_answered_with_the_newest_ones_choices(channel, alice, openai_server):
    from tests.conftest import use_slow_model

    use_slow_model(channel, openai_server, delay=0.05, tokens=[" a"] * 20)
    services.post_message(channel=channel, user=alice, text="first")
    wait_for(lambda: Turn.objects.filter(role="bot").exists())  # its plan is read
    services.post_message(channel=channel, user=alice, text="second", params={"max_tokens": 7})
    services.post_message(channel=channel, user=alice, text="third", params={"max_tokens": 9})
    wait_for_done(channel, count=2)
    wait_until_no_generation()
    answers = [t.params["max_tokens"] for t in Turn.objects.filter(role="bot").order_by("id")]
    assert answers[0] == 256 and answers[-1] == 9


def test_the_admin_edits_the_policy_and_instruction_through_update_channel(channel, admin_user):
    from django.test import Client

    from chat.models import Instruction

    concise = Instruction.objects.create(name="Concise", text="Be brief.")
    strangers = Instruction.objects.create(name="Mine", text="x", owner=admin_user)
    desk = Client()
    desk.force_login(admin_user)
    url = f"/admin/chat/channel/{channel.pk}/change/"
    form = {
        "title": "Lobby",
        "visibility": "public",
        "mode": "chat",
        "framing": "{}",
        "params": "{}",
        "member_params": '{"temperature": {"min": 2, "max": 1}}',
        "instruction": "",
        "agent_choice": "fixed",  # issue 17: a field the form always sends
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    assert desk.post(url, form).status_code == 200  # the form again, with the error
    assert desk.post(url, {**form, "member_params": "{}", "instruction": strangers.pk}).status_code == 200
    assert Channel.objects.get(pk=channel.pk).instruction is None  # not the owner's (alice's)
    response = desk.post(url, {**form, "member_params": '{"thinking": true}', "instruction": concise.pk})
    assert response.status_code == 302
    changed = Channel.objects.get(pk=channel.pk)
    assert changed.member_params == {"thinking": True} and changed.instruction == concise
    update = [e for e in channel_events(channel) if e["type"] == "channel_updated"][-1]
    assert update["member_params"] == {"thinking": True} and update["instruction"] == concise.pk
