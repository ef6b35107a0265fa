"""Issue 17, what people set: a channel's tools, approvals, agent, agent choice and memory
(PATCH /api/channels/{name} and the admin, both through services.update_channel), the
`agent` a message names (REST and WebSocket) within the owner's policy, and the
GET /api/agents and GET /api/tools catalogues."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chat.agents.policy import MAX_TOOLS
from chat.errors import ServiceError
from chat.models import Agent, Channel, McpServer, Turn
from chat.realtime.async_db import db_call
from chat.services import add_member, create_channel, update_channel
from tests.conftest import channel_events, client_for, make_user, wait_until_no_generation
from tests.ws_helpers import open_socket, receive, receive_until, token_for

pytestmark = pytest.mark.django_db(transaction=True)

LOBBY = "/api/channels/lobby"


def patch(user: Any, body: dict[str, Any], path: str = LOBBY) -> Any:
    return client_for(user).patch(path, body, format="json")


def updates(channel: Channel) -> list[dict[str, Any]]:
    return [e for e in channel_events(channel) if e["type"] == "channel_updated"]


def refused(response: Any, status: int, field: str) -> list[str]:
    """The messages a refusal gives for ``field`` (it must name it)."""
    assert response.status_code == status, response.content
    fields = response.json().get("fields") or {}
    assert field in fields, response.json()
    return [str(m) for m in fields[field]]


@pytest.fixture
def helper() -> Agent:
    return Agent.objects.create(name="helper", description="Helps.", tools=["calculator"])


@pytest.fixture
def critic() -> Agent:
    return Agent.objects.create(name="critic", description="Finds faults.")


# --- the channel's settings --------------------------------------------------------------


def test_the_owner_sets_tools_approvals_agent_choice_and_memory_and_every_screen_is_told(
    channel, alice, bob, helper
):
    McpServer.objects.create(name="files", url="http://127.0.0.1:9/mcp")
    body = {
        "tools": ["calculator", "current_time", "mcp:files/read"],
        "tools_requiring_approval": ["mcp:files/read"],
        "agent": "helper",
        "agent_choice": "members",
        "memory": True,
    }
    answer = patch(alice, body)
    assert answer.status_code == 200, answer.content
    detail = answer.json()
    assert {key: detail[key] for key in body} == body and detail["tools_apply"] is True
    assert client_for(bob).get(LOBBY).json()["tools"] == body["tools"]
    event = updates(channel)[-1]
    assert {key: event[key] for key in body} == body and event["tools_apply"] is True
    stored = Channel.objects.get(pk=channel.pk)
    assert stored.agent_id == helper.pk and stored.memory and stored.agent_choice == "members"
    # Switching a tool off drops its approval; the agent goes with null.
    answer = patch(alice, {"tools": ["calculator"], "agent": None})
    assert answer.json()["tools_requiring_approval"] == [] and answer.json()["agent"] is None


def test_a_new_channel_says_what_it_has(channel, alice):
    detail = client_for(alice).get(LOBBY).json()
    assert {
        k: detail[k] for k in ("tools", "tools_requiring_approval", "agent", "agent_choice", "memory")
    } == {
        "tools": [],
        "tools_requiring_approval": [],
        "agent": None,
        "agent_choice": "fixed",
        "memory": False,
    }
    assert detail["tools_apply"] is True


def test_bad_tool_lists_are_refused_naming_the_field_and_change_nothing(channel, alice, helper, settings):
    settings.WEB_SEARCH_URL = ""
    McpServer.objects.create(name="off", url="http://127.0.0.1:9/mcp", enabled=False)
    unknown = refused(patch(alice, {"tools": ["calculator", "rm_rf", "mcp:nowhere/x"]}), 400, "tools")
    assert "rm_rf" in unknown[0] and "mcp:nowhere/x" in unknown[0] and "calculator" not in unknown[0]
    assert "mcp:off/x" in refused(patch(alice, {"tools": ["mcp:off/x"]}), 400, "tools")[0]
    # web_search is offered only with a search endpoint configured
    assert "web_search" in refused(patch(alice, {"tools": ["web_search"]}), 400, "tools")[0]
    for malformed in ("mcp:", "mcp:files", "mcp:/tool", "mcp:files/", ""):
        refused(patch(alice, {"tools": [malformed]}), 400, "tools")
    assert "calculator" in refused(patch(alice, {"tools": ["calculator", "calculator"]}), 400, "tools")[0]
    many = [f"mcp:s/t{i}" for i in range(MAX_TOOLS + 1)]
    assert str(MAX_TOOLS) in refused(patch(alice, {"tools": many}), 400, "tools")[0]
    refused(patch(alice, {"tools": ["x" * 201]}), 400, "tools")  # over the schema's length
    refused(patch(alice, {"tools": "calculator"}), 400, "tools")
    refused(patch(alice, {"tools": [1]}), 400, "tools")
    outside = refused(
        patch(alice, {"tools": ["calculator"], "tools_requiring_approval": ["current_time"]}),
        400,
        "tools_requiring_approval",
    )
    assert "current_time" in outside[0]
    refused(patch(alice, {"tools_requiring_approval": ["calculator"]}), 400, "tools_requiring_approval")
    refused(patch(alice, {"agent": "nobody"}), 400, "agent")
    helper.enabled = False
    helper.save()
    refused(patch(alice, {"agent": "helper"}), 400, "agent")
    refused(patch(alice, {"agent": 5}), 400, "agent")
    refused(patch(alice, {"agent_choice": "anyone"}), 400, "agent_choice")
    refused(patch(alice, {"memory": "yes"}), 400, "memory")
    stored = Channel.objects.get(pk=channel.pk)
    assert stored.tools == [] and stored.agent_id is None and stored.memory is False
    assert updates(channel) == []


def test_tools_already_on_a_channel_stay_when_their_server_is_disabled(channel, alice):
    server = McpServer.objects.create(name="files", url="http://127.0.0.1:9/mcp")
    assert patch(alice, {"tools": ["mcp:files/read", "calculator"]}).status_code == 200
    server.enabled = False
    server.save()
    # Saving the settings page sends them back: not refused; adding another is.
    assert patch(alice, {"tools": ["mcp:files/read", "calculator", "current_time"]}).status_code == 200
    refused(patch(alice, {"tools": ["mcp:files/write"]}), 400, "tools")


def test_completion_mode_takes_no_tools_and_keeps_those_it_had(channel, alice):
    assert (
        patch(alice, {"tools": ["calculator"], "tools_requiring_approval": ["calculator"]}).status_code == 200
    )
    # The mode changes at the desk (the API's PATCH does not take it), through the same service.
    update_channel(channel=Channel.objects.get(pk=channel.pk), user=alice, changes={"mode": "completion"})
    switched = client_for(alice).get(LOBBY).json()
    assert switched["tools"] == ["calculator"] and switched["tools_apply"] is False
    assert updates(channel)[-1]["tools_apply"] is False
    message = refused(patch(alice, {"tools": ["current_time"]}), 400, "tools")
    assert message == ["tools apply to chat mode only"]
    refused(patch(alice, {"tools_requiring_approval": ["calculator"]}), 400, "tools_requiring_approval")
    assert patch(alice, {"tools": []}).json()["tools"] == []  # clearing is fine
    with pytest.raises(ServiceError) as refusal:
        update_channel(
            channel=Channel.objects.get(pk=channel.pk), user=alice, changes={"tools": ["calculator"]}
        )
    assert refusal.value.fields == {"tools": ["tools apply to chat mode only"]}
    changes = {"mode": "chat", "tools": ["calculator"]}
    update_channel(channel=Channel.objects.get(pk=channel.pk), user=alice, changes=changes)
    assert client_for(alice).get(LOBBY).json()["tools_apply"] is True


def test_only_the_owner_or_a_moderator_changes_them(
    channel, private_channel, alice, bob, carol, mona, helper
):
    assert patch(bob, {"tools": ["calculator"]}).status_code == 403
    assert patch(carol, {"agent": "helper"}).status_code == 403  # public: seen, not changed
    assert patch(carol, {"memory": True}, "/api/channels/backroom").status_code == 404
    assert client_for().patch(LOBBY, {"memory": True}, format="json").status_code == 401
    assert patch(mona, {"agent": "helper", "memory": True}).status_code == 200
    assert Channel.objects.get(pk=channel.pk).memory is True


@pytest.mark.asyncio
async def test_a_watcher_sees_the_fields_and_cannot_change_them(channel, alice, bob, helper):
    await db_call(lambda: patch(alice, {"agent": "helper", "tools": ["calculator"]}))()
    socket, _, _ = await open_socket("/ws/lobby?watch=1", token=await token_for(bob))
    history = await receive(socket)
    assert history["agent"] == "helper" and history["tools"] == ["calculator"]
    assert history["agent_choice"] == "fixed" and history["tools_apply"] is True
    await socket.send_json_to({"type": "message", "text": "hi", "agent": "helper"})
    assert (await receive(socket))["code"] == "read_only"
    await db_call(lambda: patch(alice, {"agent_choice": "members"}))()
    updated = await receive(socket)
    assert updated["type"] == "channel_updated" and updated["agent_choice"] == "members"
    await socket.disconnect()


# --- a message names an agent ------------------------------------------------------------


def send(user: Any, body: dict[str, Any]) -> Any:
    return client_for(user).post(f"{LOBBY}/messages", body, format="json")


def test_a_member_names_the_channels_agent_or_any_where_members_may_choose(
    channel, alice, bob, helper, critic
):
    patch(alice, {"agent": "helper"})
    named = send(bob, {"text": "hi", "agent": "helper"})
    assert named.status_code == 200, named.content
    assert named.json()["user_turn"]["request"]["agent"] == "helper"
    wait_until_no_generation()
    forbidden = send(bob, {"text": "hi", "agent": "critic"})
    refused(forbidden, 403, "agent")
    assert forbidden.json()["code"] == "forbidden"
    refused(send(bob, {"text": "hi", "agent": "nobody"}), 400, "agent")
    critic.enabled = False
    critic.save()
    refused(send(alice, {"text": "hi", "agent": "critic"}), 400, "agent")  # even the owner
    critic.enabled = True
    critic.save()
    patch(alice, {"agent_choice": "members"})
    chosen = send(bob, {"text": "hi", "agent": "critic"})
    assert chosen.status_code == 200 and chosen.json()["user_turn"]["request"]["agent"] == "critic"
    wait_until_no_generation()
    refused(send(bob, {"text": "hi", "agent": 3}), 400, "agent")
    refused(send(bob, {"text": "hi", "agent": "x" * 65}), 400, "agent")
    # A refused message saved nothing.
    assert Turn.objects.filter(role="user").count() == 2


def test_the_owner_and_moderators_name_any_agent_in_a_fixed_channel(channel, alice, mona, critic):
    owner = send(alice, {"text": "hi", "agent": "critic"})
    assert owner.status_code == 200 and owner.json()["user_turn"]["request"]["agent"] == "critic"
    wait_until_no_generation()
    moderator = send(mona, {"text": "hi", "agent": "critic"})
    assert moderator.status_code == 200, moderator.content
    wait_until_no_generation()


def test_a_regenerate_names_an_agent_within_the_same_policy(channel, alice, bob, helper, critic):
    patch(alice, {"agent": "helper"})
    sent = send(bob, {"text": "hi"})
    assert sent.status_code == 200 and "agent" not in sent.json()["user_turn"]["request"]
    wait_until_no_generation()
    regenerate = f"{LOBBY}/regenerate"
    refused(client_for(bob).post(regenerate, {"agent": "critic"}, format="json"), 403, "agent")
    refused(client_for(bob).post(regenerate, {"agent": "nobody"}, format="json"), 400, "agent")
    assert client_for(bob).post(regenerate, {"agent": "helper"}, format="json").status_code == 202
    wait_until_no_generation()
    asked = Turn.objects.get(pk=sent.json()["user_turn"]["id"])
    assert asked.request["agent"] == "helper"


@pytest.mark.asyncio
async def test_the_socket_applies_the_same_policy(channel, alice, bob, helper, critic):
    await db_call(lambda: patch(alice, {"agent": "helper"}))()
    socket, _, _ = await open_socket("/ws/lobby", token=await token_for(bob))
    assert (await receive(socket))["type"] == "history"
    await socket.send_json_to({"type": "message", "text": "hi", "agent": "critic"})
    error = await receive(socket)
    assert error["code"] == "forbidden" and "agent" in error["fields"]
    await socket.send_json_to({"type": "message", "text": "hi", "agent": "nobody"})
    error = await receive(socket)
    assert error["code"] == "invalid" and "agent" in error["fields"]
    await socket.send_json_to({"type": "message", "text": "hi", "agent": "helper"})
    frames = await receive_until(socket, "done")
    user_turn = next(f for f in frames if f["type"] == "turn" and f["role"] == "user")
    assert user_turn["request"]["agent"] == "helper"
    await socket.send_json_to({"type": "regenerate", "agent": "critic"})
    assert (await receive(socket))["code"] == "forbidden"
    await socket.disconnect()


# --- GET /api/agents and /api/tools ------------------------------------------------------


def test_agents_are_listed_to_signed_in_callers_with_only_the_bases_they_may_read(channel, alice, bob, carol):
    from chat.knowledge.services import create_base

    backroom = create_channel(name="backroom", owner=alice, visibility="private")
    add_member(actor=alice, channel=backroom, user=bob)
    room = create_base(user=alice, name="Secrets", channel=backroom)
    mine = create_base(user=carol, name="Carol's")
    public = create_base(user=alice, name="Lobby FAQ", channel=channel)
    agent = Agent.objects.create(
        name="helper",
        description="Helps.",
        model="m1",
        tools=["calculator"],
        params={"temperature": 0.3},
    )
    agent.knowledge_bases.set([room, mine, public])
    Agent.objects.create(name="hidden", enabled=False)
    assert client_for().get("/api/agents").status_code == 401
    assert client_for().get("/api/agents/helper").status_code == 401
    seen = {
        user.username: client_for(user).get("/api/agents").json()["agents"] for user in (alice, bob, carol)
    }
    assert [a["name"] for a in seen["bob"]] == ["helper"]
    assert seen["bob"][0] == {
        "name": "helper",
        "description": "Helps.",
        "provider": None,
        "model": "m1",
        "tools": ["calculator"],
        "knowledge_base_ids": sorted([str(room.pk), str(public.pk)]),
        "params": {"temperature": 0.3},
    }
    assert seen["carol"][0]["knowledge_base_ids"] == sorted([str(mine.pk), str(public.pk)])
    stranger = make_user("dave")
    assert client_for(stranger).get("/api/agents/helper").json()["knowledge_base_ids"] == [str(public.pk)]
    assert client_for(stranger).get("/api/agents/hidden").status_code == 404
    assert client_for(stranger).get("/api/agents/nobody").status_code == 404
    # a session login works as a token does
    browser = Client()
    browser.force_login(bob)
    assert browser.get("/api/agents").json()["agents"][0]["name"] == "helper"


def test_the_tools_list_has_the_builtins_and_says_which_are_offered(alice, settings):
    settings.WEB_SEARCH_URL = ""
    assert client_for().get("/api/tools").status_code == 401
    tools = {t["name"]: t for t in client_for(alice).get("/api/tools").json()["tools"]}
    assert {"calculator", "current_time", "web_fetch", "web_search", "kb_search"} <= set(tools)
    assert all(t["builtin"] is True for t in tools.values())
    assert tools["web_search"]["available"] is False
    for tool in tools.values():
        assert set(tool) == {"name", "description", "builtin", "available"}
        # a tool's module that is part of this build describes it
        assert bool(tool["description"]) == tool["available"] or tool["name"] == "web_search"


# --- the admin -------------------------------------------------------------------------------


def desk(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def channel_form(**changes: str) -> dict[str, str]:
    return {
        "title": "Lobby",
        "visibility": "public",
        "mode": "chat",
        "framing": "{}",
        "params": "{}",
        "member_params": "{}",
        "tools": "[]",
        "tools_requiring_approval": "[]",
        "agent_choice": "fixed",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        **changes,
    }


def test_the_channel_admin_saves_the_fields_through_update_channel(channel, admin_user, helper):
    url = f"/admin/chat/channel/{channel.pk}/change/"
    bad = desk(admin_user).post(url, channel_form(tools='["rm_rf"]'))
    assert bad.status_code == 200 and b"rm_rf" in bad.content  # the form again, with the error
    assert Channel.objects.get(pk=channel.pk).tools == []
    good = channel_form(
        tools='["calculator"]',
        tools_requiring_approval='["calculator"]',
        agent=str(helper.pk),
        agent_choice="members",
        memory="on",
    )
    response = desk(admin_user).post(url, good)
    assert response.status_code == 302, response.content[:600]
    stored = Channel.objects.get(pk=channel.pk)
    assert stored.tools == ["calculator"] and stored.tools_requiring_approval == ["calculator"]
    assert stored.agent_id == helper.pk and stored.agent_choice == "members" and stored.memory
    event = updates(channel)[-1]
    assert event["agent"] == "helper" and event["tools"] == ["calculator"] and event["memory"] is True
    bad = desk(admin_user).post(url, channel_form(mode="completion", tools='["calculator"]'))
    assert bad.status_code == 200 and b"tools apply to chat mode only" in bad.content


def test_the_agent_admin_checks_tools_as_a_channels_are(admin_user, channel):
    from chat.knowledge.services import create_base

    base = create_base(user=admin_user, name="Handbook")
    form = {
        "name": "helper",
        "description": "",
        "model": "",
        "instructions": "Be kind.",
        "tools": '["calculator", "nonsense"]',
        "tools_requiring_approval": "[]",
        "params": "{}",
        "enabled": "on",
        "knowledge_bases": [str(base.pk)],
    }
    bad = desk(admin_user).post("/admin/chat/agent/add/", form)
    assert bad.status_code == 200 and b"nonsense" in bad.content and not Agent.objects.exists()
    bad = desk(admin_user).post(
        "/admin/chat/agent/add/", {**form, "tools": '["calculator"]', "params": '{"temperature": 9}'}
    )
    assert bad.status_code == 200 and not Agent.objects.exists()
    bad = desk(admin_user).post(
        "/admin/chat/agent/add/",
        {**form, "tools": '["calculator"]', "tools_requiring_approval": '["web_fetch"]'},
    )
    assert bad.status_code == 200 and not Agent.objects.exists()
    good = {**form, "tools": '["calculator"]', "tools_requiring_approval": '["calculator"]'}
    response = desk(admin_user).post("/admin/chat/agent/add/", {**good, "params": '{"max_tokens": 50}'})
    assert response.status_code == 302, response.content[:600]
    agent = Agent.objects.get(name="helper")
    assert agent.tools == ["calculator"] and agent.params == {"max_tokens": 50}
    assert list(agent.knowledge_bases.all()) == [base]
    assert desk(admin_user).get("/admin/chat/agent/").status_code == 200
