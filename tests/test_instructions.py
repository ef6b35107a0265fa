"""Instructions (issue 14): named system prompts, each user's own and the shared ones the
admins manage; chosen per channel or per message, applied first in the system prompt
(chat) or the preamble (completion), and shown in the reply's substrate."""

from __future__ import annotations

import pytest

from chat import services
from chat.models import Channel, Instruction, Turn
from chat.realtime.async_db import db_call
from tests.conftest import (
    add_provider,
    channel_events,
    client_for,
    use_provider,
    wait_until_no_generation,
)
from tests.ws_helpers import open_socket, receive, receive_until, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def shared(name: str = "Concise", text: str = "Answer in one sentence.") -> Instruction:
    return Instruction.objects.create(name=name, text=text)


def create(user, name: str = "Mine", text: str = "Speak like a pirate."):
    return client_for(user).post("/api/instructions", {"name": name, "text": text}, format="json")


# --- the endpoints --------------------------------------------------------------------------


def test_a_user_sees_the_shared_ones_and_their_own(alice, bob):
    common = shared()
    created = create(alice)
    assert created.status_code == 201
    mine = created.json()
    assert mine["name"] == "Mine" and mine["shared"] is False and mine["mine"] is True
    create(bob, "Bobs")
    listed = client_for(alice).get("/api/instructions").json()["instructions"]
    assert [(i["name"], i["shared"], i["mine"]) for i in listed] == [
        ("Concise", True, False),
        ("Mine", False, True),
    ]
    assert client_for(alice).get(f"/api/instructions/{common.pk}").json()["text"] == common.text


def test_an_owner_renames_rewrites_and_deletes_their_own(alice):
    mine = create(alice).json()
    url = f"/api/instructions/{mine['id']}"
    response = client_for(alice).patch(url, {"name": "  Pirate ", "text": "Arr."}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "Pirate"
    assert client_for(alice).delete(url).status_code == 204
    assert not Instruction.objects.exists()


def test_others_instructions_are_not_found_and_shared_ones_not_changed(alice, bob):
    common = shared()
    bobs = create(bob).json()
    for method in ("get", "patch", "delete"):
        response = getattr(client_for(alice), method)(f"/api/instructions/{bobs['id']}", {}, format="json")
        assert response.status_code == 404, method
    patch = client_for(alice).patch(f"/api/instructions/{common.pk}", {"text": "Mine now."}, format="json")
    assert patch.status_code == 403 and patch.json()["code"] == "forbidden"
    assert client_for(alice).delete(f"/api/instructions/{common.pk}").status_code == 403
    assert Instruction.objects.get(pk=common.pk).text == "Answer in one sentence."


def test_anonymous_callers_get_a_401(alice):
    common = shared()
    assert client_for().get("/api/instructions").status_code == 401
    assert client_for().get(f"/api/instructions/{common.pk}").status_code == 401
    assert create(None).status_code == 401


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x"}, "text"),
        ({"text": "x"}, "name"),
        ({"name": "  ", "text": "x"}, "name"),
        ({"name": "x", "text": "   "}, "text"),
        ({"name": "x" * 101, "text": "x"}, "name"),
        ({"name": "x", "text": "x" * 20001}, "text"),
        ({"name": 5, "text": "x"}, "name"),
        ({"name": "x", "text": "x\u0000"}, "text"),
        ({"name": "x", "text": "x", "shared": True}, "shared"),
        ({"name": "x", "text": "x", "owner": 1}, "owner"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(alice, payload, field):
    response = client_for(alice).post("/api/instructions", payload, format="json")
    assert response.status_code == 400 and field in response.json()["fields"]
    assert not Instruction.objects.exists()


def test_names_are_unique_per_user_and_the_count_is_bounded(alice, bob, monkeypatch):
    assert create(alice, "Same").status_code == 201
    taken = create(alice, "Same")
    assert taken.status_code == 400 and "name" in taken.json()["fields"]
    assert create(bob, "Same").status_code == 201  # another user's namesake is fine
    second = create(alice, "Other").json()
    renamed = client_for(alice).patch(f"/api/instructions/{second['id']}", {"name": "Same"}, format="json")
    assert renamed.status_code == 400
    monkeypatch.setattr("chat.services.instructions.MAX_INSTRUCTIONS_PER_USER", 2)
    assert create(alice, "Third").status_code == 400


@pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "99999999999999999999", "²"])
def test_an_id_that_is_not_one_is_a_404(alice, raw):
    assert client_for(alice).get(f"/api/instructions/{raw}").status_code == 404


# --- a channel's instruction ----------------------------------------------------------------


def test_the_owner_sets_a_shared_or_their_own_instruction(channel, alice, bob):
    common = shared()
    mine = create(alice).json()
    bobs = create(bob, "Bobs").json()
    patch = lambda value, user=alice: client_for(user).patch(  # noqa: E731
        "/api/channels/lobby", {"instruction": value}, format="json"
    )
    assert patch(common.pk).json()["instruction"] == common.pk
    assert patch(mine["id"]).json()["instruction"] == mine["id"]
    refused = patch(bobs["id"])
    assert refused.status_code == 400 and "instruction" in refused.json()["fields"]
    assert patch(common.pk, bob).status_code == 403
    assert (
        patch("1").status_code == 400 and patch(True).status_code == 400 and patch(10**20).status_code == 400
    )
    assert patch(None).json()["instruction"] is None
    updates = [e for e in channel_events(channel) if e["type"] == "channel_updated"]
    assert [u["instruction"] for u in updates] == [common.pk, mine["id"], None]


def test_deleting_a_channels_instruction_tells_its_screens(channel, alice):
    mine = create(alice).json()
    client_for(alice).patch("/api/channels/lobby", {"instruction": mine["id"]}, format="json")
    client_for(alice).delete(f"/api/instructions/{mine['id']}")
    assert Channel.objects.get(pk=channel.pk).instruction is None
    assert [e for e in channel_events(channel) if e["type"] == "channel_updated"][-1]["instruction"] is None


# --- applied --------------------------------------------------------------------------------


def test_the_channels_instruction_starts_the_system_prompt(channel, alice, openai_server):
    add_provider("model", openai_server.base_url)
    use_provider(channel, "model")
    common = shared()
    services.update_channel(channel=channel, user=alice, changes={"instruction": common.pk})
    response = client_for(alice).post("/api/channels/lobby/messages", {"text": "Hi"}, format="json")
    system = openai_server.requests[0]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Answer in one sentence.\n\nThe following is a friendly conversation")
    bot = response.json()["bot_turn"]
    assert bot["instruction"] == "Concise"
    assert bot["prompt"].startswith("[system]\nAnswer in one sentence.")  # the substrate shows it
    assert client_for(alice).get(f"/api/turns/{bot['id']}").json()["prompt"] == bot["prompt"]


def test_the_instruction_starts_the_preamble_in_completion_mode(alice, openai_server):
    channel = services.create_channel(name="story", owner=alice, mode="completion")
    add_provider("model", openai_server.base_url)
    use_provider(channel, "model")
    common = shared("Gothic", "Write gloomily.")
    client_for(alice).post(
        "/api/channels/story/messages", {"text": "Once", "instruction": common.pk}, format="json"
    )
    assert openai_server.requests[0]["prompt"].startswith("Write gloomily.\n\nThe following is")
    assert Turn.objects.get(role="bot").instruction == "Gothic"


def test_a_message_chooses_its_own_instruction_or_none(channel, alice, bob, openai_server):
    add_provider("model", openai_server.base_url)
    use_provider(channel, "model")
    common = shared()
    services.update_channel(channel=channel, user=alice, changes={"instruction": common.pk})
    bobs = create(bob).json()
    send = lambda payload: client_for(bob).post("/api/channels/lobby/messages", payload, format="json")  # noqa: E731
    first = send({"text": "a", "instruction": bobs["id"]})
    assert first.status_code == 200, first.json()
    assert first.json()["user_turn"]["request"] == {"instruction": bobs["id"]}
    assert openai_server.requests[0]["messages"][0]["content"].startswith("Speak like a pirate.")
    assert first.json()["bot_turn"]["instruction"] == "Mine"
    second = send({"text": "b", "instruction": None})
    assert second.json()["bot_turn"]["instruction"] == ""
    assert not openai_server.requests[1]["messages"][0]["content"].startswith("Answer in one")
    third = send({"text": "c"})
    assert third.json()["bot_turn"]["instruction"] == "Concise"  # the channel's again


def test_a_message_may_not_use_someone_elses_instruction(channel, alice, bob):
    alices = create(alice).json()
    for value, status in ((alices["id"], 400), (10**6, 400), ("1", 400), (0, 400), (True, 400)):
        response = client_for(bob).post(
            "/api/channels/lobby/messages", {"text": "hi", "instruction": value}, format="json"
        )
        assert response.status_code == status and "instruction" in response.json()["fields"], value
    assert Turn.objects.count() == 0


@pytest.mark.asyncio
async def test_over_the_socket_a_message_and_regenerate_choose_an_instruction(channel, bob):
    common = await db_call(shared)()
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(bob))
    assert (await receive(socket))["type"] == "history"
    await socket.send_json_to({"type": "message", "text": "hello", "instruction": common.pk})
    frames = await receive_until(socket, "done")
    bot = next(f for f in frames if f["type"] == "turn" and f["role"] == "bot")
    assert bot["instruction"] == "Concise"
    await socket.send_json_to({"type": "regenerate", "instruction": None})
    frames = await receive_until(socket, "done")
    bot = next(f for f in frames if f["type"] == "turn" and f["role"] == "bot")
    assert bot["instruction"] == ""
    await socket.send_json_to({"type": "message", "text": "x", "instruction": 10**6})
    error = await receive(socket)
    assert error["code"] == "invalid" and "instruction" in error["fields"]
    await socket.disconnect()
    await db_call(wait_until_no_generation)()


def test_admins_manage_shared_instructions_in_the_admin(admin_user):
    from django.test import Client

    client = Client()
    client.force_login(admin_user)
    response = client.post(
        "/admin/chat/instruction/add/", {"name": "Friendly", "text": "Be warm.", "owner": ""}
    )
    assert response.status_code == 302
    assert Instruction.objects.get(name="Friendly").owner is None
    assert client.get("/admin/chat/instruction/").status_code == 200
