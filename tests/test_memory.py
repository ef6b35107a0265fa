"""Memory (issue 17): per-user facts — the services and their checks, whose memories a
reply may use (personal rooms, the owner's switch, consent, the user's own switch,
expiry), the prompt block, the REST API, the ``memory`` tool, extraction after a
session by the task model (a real HTTP model server, run by a real Celery worker), and
the account page's section in a real browser."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from chat import services
from chat.agents import memory
from chat.agents.memory_extraction import demo_facts, extract, parse_facts, rememberers
from chat.agents.memory_tool import MemoryTool
from chat.agents.tools import ToolContext, ToolError
from chat.errors import ServiceError
from chat.models import Channel, Memory, ModerationAction, Session, UserPreference
from tests.browser import log_in, no_script_errors
from tests.conftest import add_provider, client_for, use_provider, wait_for

pytestmark = pytest.mark.django_db


def personal(owner: Any, name: str = "diary") -> Channel:
    """A private room with its owner alone."""
    return services.create_channel(name=name, owner=owner, visibility="private")


def active_session(channel: Channel) -> Session:
    found = channel.active_session
    assert found is not None
    return found


def prefer(user: Any, **switches: bool) -> None:
    UserPreference.objects.update_or_create(user=user, defaults=switches)


def expired(user: Any, text: str) -> Memory:
    made = Memory.objects.create(user=user, text=text)
    Memory.objects.filter(pk=made.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    return made


# --- services ---------------------------------------------------------------------------------


def test_a_memory_is_trimmed_and_checked(alice):
    made = memory.create_memory(user=alice, text="  likes tea \n")
    assert (made.text, made.origin, made.expires_at) == ("likes tea", "user", None)
    for bad, field in (("   ", "text"), ("x" * 1001, "text"), (5, "text")):
        with pytest.raises(ServiceError) as refused:
            memory.create_memory(user=alice, text=bad)
        assert refused.value.code == "invalid" and field in (refused.value.fields or {})
    assert len(memory.create_memory(user=alice, text="y" * 1000).text) == 1000
    with pytest.raises(ServiceError) as past:
        memory.create_memory(user=alice, text="soon", expires_at=timezone.now() - timedelta(minutes=1))
    assert "expires_at" in (past.value.fields or {})


def test_the_cap_counts_only_memories_not_expired(alice, settings):
    settings.MEMORY_MAX_PER_USER = 2
    memory.create_memory(user=alice, text="one")
    old = expired(alice, "gone")
    memory.create_memory(user=alice, text="two")  # the expired one does not count
    assert not Memory.objects.filter(pk=old.pk).exists()  # and was cleared away
    with pytest.raises(ServiceError) as full:
        memory.create_memory(user=alice, text="three")
    assert full.value.code == "invalid" and "at most 2" in full.value.text


def test_only_the_owner_changes_or_deletes_a_memory(alice, bob):
    mine = memory.create_memory(user=alice, text="likes tea")
    assert memory.memory_for(bob, mine.pk) is None
    assert memory.memory_for(alice, "not-a-uuid") is None
    for act in (
        lambda: memory.update_memory(user=bob, memory=mine, changes={"text": "x"}),
        lambda: memory.delete_memory(user=bob, memory=mine),
    ):
        with pytest.raises(ServiceError) as refused:
            act()
        assert refused.value.code == "not_found"
    later = timezone.now() + timedelta(days=3)
    changed = memory.update_memory(
        user=alice, memory=mine, changes={"text": " likes green tea ", "expires_at": later}
    )
    assert (changed.text, changed.expires_at) == ("likes green tea", later)
    assert memory.update_memory(user=alice, memory=mine, changes={"expires_at": None}).expires_at is None
    memory.delete_memory(user=alice, memory=mine)
    assert not Memory.objects.exists()


def test_remember_skips_a_fact_kept_already_in_any_case(alice):
    first, new = memory.remember(user=alice, text="Alice lives in Lyon.", origin="tool")
    again, new_again = memory.remember(user=alice, text="alice LIVES in lyon.", origin="extracted")
    assert new and not new_again and again.pk == first.pk and Memory.objects.count() == 1


def test_expired_memories_appear_nowhere(alice):
    memory.create_memory(user=alice, text="likes tea")
    old = expired(alice, "was in Paris")
    assert [m.text for m in memory.memories_of(alice.pk)] == ["likes tea"]
    assert memory.memory_for(alice, old.pk) is None
    assert "Paris" not in memory.memory_block([alice.pk])
    listed = client_for(alice).get("/api/me/memories").json()["memories"]
    assert [m["text"] for m in listed] == ["likes tea"]
    assert client_for(alice).delete(f"/api/me/memories/{old.pk}").status_code == 404


def test_the_prompt_block_keeps_the_newest_facts_that_fit(alice, bob, settings):
    assert memory.memory_block([alice.pk]) == ""
    for n in range(5):
        memory.create_memory(user=alice, text=f"fact number {n}")
    assert memory.memory_block([alice.pk]) == "What you remember about alice:\n" + "\n".join(
        f"- fact number {n}" for n in range(5)
    )
    header = len("What you remember about alice:")
    settings.MEMORY_PROMPT_CHARS = header + 2 * len("- fact number 0\n")
    assert (
        memory.memory_block([alice.pk]) == "What you remember about alice:\n- fact number 3\n- fact number 4"
    )
    settings.MEMORY_PROMPT_CHARS = 2000
    memory.create_memory(user=bob, text="plays chess")
    both = memory.memory_block([alice.pk, bob.pk])
    assert both.endswith("\n\nWhat you remember about bob:\n- plays chess")


# --- whose memories a reply may use -------------------------------------------------------------


def test_a_personal_room_uses_its_owners_memories(alice):
    diary = personal(alice)
    assert memory.memory_scope(diary, alice.pk) == (alice.pk,)
    assert memory.memory_scope(diary, None) == ()


def test_memory_off_for_the_user_means_off_everywhere(alice):
    diary = personal(alice)
    prefer(alice, memory_enabled=False, memory_in_shared_rooms=True)
    diary.memory = True
    diary.save()
    assert memory.memory_scope(diary, alice.pk) == ()


def test_a_room_others_read_needs_the_owners_switch_and_the_authors_consent(
    alice, bob, channel, private_channel
):
    for room in (channel, private_channel):  # public, and private with a member
        assert memory.memory_scope(room, alice.pk) == ()  # owner's switch off, no consent
        prefer(alice, memory_in_shared_rooms=True)
        assert memory.memory_scope(room, alice.pk) == ()  # consent, but the switch is off
        room.memory = True
        room.save()
        assert memory.memory_scope(room, alice.pk) == (alice.pk,)
        assert memory.memory_scope(room, bob.pk) == ()  # bob did not consent
        prefer(bob, memory_in_shared_rooms=True)
        assert memory.memory_scope(room, bob.pk) == (bob.pk,)  # only ever the author's
        prefer(alice, memory_in_shared_rooms=False)
        prefer(bob, memory_in_shared_rooms=False)


def test_a_private_room_of_someone_else_is_not_personal(alice, bob):
    theirs = personal(alice)
    assert memory.memory_scope(theirs, bob.pk) == ()


# --- the REST API -----------------------------------------------------------------------------


def test_the_api_lists_adds_rewrites_and_deletes_ones_own(alice):
    api = client_for(alice)
    made = api.post("/api/me/memories", {"text": " likes tea "}, format="json")
    assert made.status_code == 201
    body = made.json()
    assert body["text"] == "likes tea" and body["origin"] == "user" and body["expires_at"] is None
    assert set(body) == {"id", "text", "origin", "source_turn", "created_at", "updated_at", "expires_at"}
    later = (timezone.now() + timedelta(days=1)).isoformat()
    dated = api.post("/api/me/memories", {"text": "on holiday", "expires_at": later}, format="json").json()
    assert dated["expires_at"].endswith("Z")
    listed = api.get("/api/me/memories").json()["memories"]
    assert [m["text"] for m in listed] == ["likes tea", "on holiday"]
    changed = api.patch(f"/api/me/memories/{body['id']}", {"text": "likes green tea"}, format="json")
    assert changed.status_code == 200 and changed.json()["text"] == "likes green tea"
    cleared = api.patch(f"/api/me/memories/{dated['id']}", {"expires_at": None}, format="json").json()
    assert cleared["expires_at"] is None
    assert api.delete(f"/api/me/memories/{body['id']}").status_code == 204
    assert [m["text"] for m in api.get("/api/me/memories").json()["memories"]] == ["on holiday"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "x", "colour": "red"}, "colour"),
        ({}, "text"),
        ({"text": 5}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "x" * 1001}, "text"),
        ({"text": "x", "expires_at": "tomorrow"}, "expires_at"),
        ({"text": "x", "expires_at": 1700000000}, "expires_at"),
        ({"text": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_the_api_refuses_bad_input_naming_the_field(alice, body, field):
    answer = client_for(alice).post("/api/me/memories", body, format="json")
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["fields"]


def test_the_api_refuses_a_bad_change_naming_the_field(alice):
    mine = memory.create_memory(user=alice, text="likes tea")
    api = client_for(alice)
    for body, field in (({"origin": "tool"}, "origin"), ({"text": ""}, "text"), ({"text": None}, "text")):
        answer = api.patch(f"/api/me/memories/{mine.pk}", body, format="json")
        assert answer.status_code == 400 and field in answer.json()["fields"], answer.content
    assert api.get("/api/me/memories?page=2").status_code == 400


def test_another_users_memory_is_not_found(alice, bob):
    mine = memory.create_memory(user=alice, text="likes tea")
    api = client_for(bob)
    assert api.get("/api/me/memories").json() == {"memories": []}
    assert api.patch(f"/api/me/memories/{mine.pk}", {"text": "x"}, format="json").status_code == 404
    assert api.delete(f"/api/me/memories/{mine.pk}").status_code == 404
    assert api.delete("/api/me/memories/123").status_code == 404
    assert Memory.objects.get().text == "likes tea"


def test_anonymous_callers_are_refused(alice):
    mine = memory.create_memory(user=alice, text="likes tea")
    anonymous = client_for()
    assert anonymous.get("/api/me/memories").status_code == 401
    assert anonymous.post("/api/me/memories", {"text": "x"}, format="json").status_code in (401, 403)
    assert anonymous.delete(f"/api/me/memories/{mine.pk}").status_code in (401, 403)
    assert Memory.objects.count() == 1


def test_the_memory_switches_are_preferences(alice, settings):
    api = client_for(alice)
    assert api.get("/api/me").json()["preferences"]["memory_enabled"] is True
    assert api.get("/api/me").json()["preferences"]["memory_in_shared_rooms"] is False
    changed = api.patch("/api/me", {"memory_in_shared_rooms": True, "memory_enabled": False}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["preferences"]["memory_enabled"] is False
    assert changed.json()["preferences"]["memory_in_shared_rooms"] is True
    assert api.patch("/api/me", {"memory_enabled": "yes"}, format="json").status_code == 400
    # A default provider disabled since it was chosen does not stop a change of switch.
    add_provider("gone", "http://127.0.0.1:9/v1")
    api.patch("/api/me", {"provider": "gone"}, format="json")
    from chat.models import Provider

    Provider.objects.filter(name="gone").update(enabled=False)
    assert api.patch("/api/me", {"memory_enabled": True}, format="json").status_code == 200


# --- the memory tool ------------------------------------------------------------------------------


def context(*user_ids: int, turn_id: int = 0) -> ToolContext:
    return ToolContext(
        channel_id=1,
        channel_name="diary",
        session_id=None,
        turn_id=turn_id,
        requester_id=user_ids[0] if user_ids else None,
        author_id=user_ids[0] if user_ids else None,
        memory_user_ids=user_ids,
    )


@pytest.mark.django_db(transaction=True)  # the tool reaches the database from another thread
def test_the_tool_saves_lists_and_forgets_for_the_person_in_scope(alice, bob):
    diary = personal(alice)
    turn = services.inject(channel=diary, user=alice, role="bot", text="noted")
    tool = MemoryTool()
    assert tool.spec.name == "memory"

    saved = asyncio.run(
        tool.run({"action": "save", "text": "Alice likes tea."}, context(alice.pk, turn_id=turn.pk))
    )
    assert saved.ok and saved.private_to == alice.pk and "Saved" in saved.content
    kept = Memory.objects.get()
    assert (kept.user_id, kept.origin, kept.source_turn_id) == (alice.pk, "tool", turn.pk)
    again = asyncio.run(tool.run({"action": "save", "text": "alice likes TEA."}, context(alice.pk)))
    assert "Already remembered" in again.content and Memory.objects.count() == 1

    memory.create_memory(user=bob, text="bob's secret")
    listed = asyncio.run(tool.run({"action": "list"}, context(alice.pk)))
    assert listed.private_to == alice.pk
    assert listed.content == f"[{kept.pk}] Alice likes tea." and "secret" not in listed.content

    forgot = asyncio.run(tool.run({"action": "forget", "id": str(kept.pk)}, context(alice.pk)))
    assert forgot.ok and forgot.private_to == alice.pk and "Alice likes tea." in forgot.content
    assert not Memory.objects.filter(user=alice).exists()
    by_text = memory.create_memory(user=alice, text="Alice plays go.")
    asyncio.run(tool.run({"action": "forget", "text": "alice plays go."}, context(alice.pk)))
    assert not Memory.objects.filter(pk=by_text.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_the_tool_refuses_clearly(alice, bob):
    tool = MemoryTool()
    off = asyncio.run(tool.run({"action": "list"}, context()))
    assert (off.ok, off.content) == (False, "memory is off here")
    theirs = memory.create_memory(user=bob, text="bob's secret")
    for arguments, words in (
        ({"action": "shout"}, "action must be"),
        ({"action": "save"}, "text"),
        ({"action": "save", "text": "x" * 1001}, "at most 1000"),
        ({"action": "save", "text": "x", "colour": 1}, "unknown argument"),
        ({"action": "forget"}, "needs the fact's id"),
        ({"action": "forget", "id": str(theirs.pk)}, "No such memory"),  # another's: not found
        ({"action": "forget", "id": 5}, "must be a string"),
    ):
        with pytest.raises(ToolError, match=words):
            asyncio.run(tool.run(arguments, context(alice.pk)))
    assert Memory.objects.filter(user=bob).count() == 1 and not Memory.objects.filter(user=alice).exists()


# --- extraction after a session ------------------------------------------------------------------


def test_the_demo_keeps_the_sentences_that_say_who_one_is():
    said = "Hello! My name is Bob. I am a vegetarian and I'm learning Go.\nI live in Lyon. What time is it?"
    assert demo_facts("bob", said) == [
        "bob's name is Bob.",
        "bob is a vegetarian and I'm learning Go.",
        "bob lives in Lyon.",
    ]


def test_the_models_answer_is_read_as_a_json_list():
    assert parse_facts('Sure:\n```json\n["a", " b ", 3, ""]\n```') == ["a", "b"]
    assert parse_facts(str(list(map(str, range(9)))).replace("'", '"')) == ["0", "1", "2", "3", "4"]
    for bad in ("nothing", '{"a": 1}', "[not json]"):
        with pytest.raises(ValueError):
            parse_facts(bad)


def test_only_writers_the_replies_could_remember_are_read(alice, bob, channel):
    services.inject(channel=channel, user=alice, role="user", text="My name is Alice.")
    services.inject(channel=channel, user=bob, role="user", text="My name is Bob.")
    session = active_session(channel)
    assert rememberers(channel, session.pk) == []  # a shared room, memory off
    channel.memory = True
    channel.save()
    prefer(bob, memory_in_shared_rooms=True)
    assert rememberers(channel, session.pk) == [bob.pk]


def test_the_offline_demo_extracts_in_a_personal_room(alice):
    diary = personal(alice)
    services.inject(channel=diary, user=alice, role="user", text="I am a night owl. Tell me a joke.")
    services.inject(channel=diary, user=alice, role="bot", text="I am a bot.")  # not alice's
    session = active_session(diary)
    services.reset(channel=diary, user=alice)
    assert extract(str(session.pk)) == 1
    kept = Memory.objects.get()
    assert (kept.text, kept.origin, kept.user_id) == ("alice is a night owl.", "extracted", alice.pk)
    assert extract(str(session.pk)) == 0  # a second run adds no duplicate


def test_a_model_that_answers_no_list_saves_nothing_and_logs(alice, openai_server, caplog):
    diary = personal(alice)
    add_provider("tasks", openai_server.base_url)
    use_provider(diary, "tasks")
    openai_server.behaviour.tokens = ["I cannot", " help."]
    services.inject(channel=diary, user=alice, role="user", text="I am tired.")
    with caplog.at_level(logging.WARNING):
        assert extract(str(active_session(diary).pk)) == 0
    assert "no memories of user" in caplog.text and not Memory.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_reset_has_the_worker_extract_new_facts_with_the_task_model(worker, alice, openai_server):
    diary = personal(alice)
    add_provider("tasks", openai_server.base_url)
    use_provider(diary, "tasks")
    openai_server.behaviour.tokens = ['["alice lives in Lyon.", ', '"alice climbs on weekends."', ", 7]"]
    memory.create_memory(user=alice, text="Alice lives in Lyon.")  # kept already
    services.inject(channel=diary, user=alice, role="user", text="I moved to Lyon; I climb every weekend.")
    session = active_session(diary)
    services.reset(channel=diary, user=alice)
    extracted = wait_for(lambda: list(Memory.objects.filter(origin="extracted")), timeout=30)
    assert [m.text for m in extracted] == ["alice climbs on weekends."]
    asked = openai_server.requests[-1]
    assert "alice: I moved to Lyon" in asked["messages"][-1]["content"]
    assert "JSON list" in asked["messages"][0]["content"]
    assert Session.objects.get(pk=session.pk).status == "archived"
    assert Memory.objects.filter(user=alice).count() == 2


@pytest.mark.django_db(transaction=True)
def test_archiving_through_the_sessions_api_extracts_too(worker, alice):
    diary = personal(alice)
    services.inject(channel=diary, user=alice, role="user", text="My name is Alice Martin.")
    session = active_session(diary)
    services.update_session(session=session, user=alice, status="archived")
    kept = wait_for(lambda: Memory.objects.filter(origin="extracted").first(), timeout=30)
    assert kept.text == "alice's name is Alice Martin."


# --- the desk ----------------------------------------------------------------------------------------


def test_admins_may_delete_a_memory_audited_without_its_text(alice, mona, admin_user):
    from django.test import Client

    mine = memory.create_memory(user=alice, text="a private fact")
    desk = Client()
    desk.force_login(mona)  # a moderator: rooms, not people's memories
    assert desk.get("/admin/chat/memory/").status_code == 403
    desk.force_login(admin_user)
    assert desk.get("/admin/chat/memory/").status_code == 200
    answer = desk.post(f"/admin/chat/memory/{mine.pk}/delete/", {"post": "yes"})
    assert answer.status_code == 302 and not Memory.objects.exists()
    record = ModerationAction.objects.get(action="delete_memory")
    assert record.details == {"user": "alice", "origin": "user"} and "private" not in str(record.details)


# --- the account page ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_account_page_lists_adds_edits_and_deletes_memories(host, browser, alice, bob):
    memory.create_memory(user=alice, text="<b>likes</b> tea")
    memory.create_memory(user=bob, text="bob's own")
    page = log_in(browser, host, "alice")
    page.goto(f"http://{host}/account/")
    items = page.locator("#memory-list > li")
    expect(items).to_have_count(1)
    expect(items.first.locator(".memory-text")).to_have_text("<b>likes</b> tea")  # as text, not markup

    page.fill("#memory-text", "  plays the cello ")
    page.click("#memory-add")
    expect(items).to_have_count(2)
    expect(items.nth(1).locator(".memory-text")).to_have_text("plays the cello")
    page.click("#memory-add")  # blank: refused, named
    expect(page.locator("#memory-new-error")).to_contain_text("text")

    items.nth(1).locator(".memory-edit").click()
    items.nth(1).locator("textarea").fill("plays the viola")
    items.nth(1).locator(".memory-save").click()
    expect(page.locator("#memory-list .memory-text").nth(1)).to_have_text("plays the viola")

    page.locator("#memory-list > li").first.locator(".memory-delete").click()
    expect(items).to_have_count(1)
    assert list(Memory.objects.filter(user=alice).values_list("text", flat=True)) == ["plays the viola"]

    page.check("#memory-shared")
    expect(page.locator("#memory-notice")).to_have_text("Saved.")
    page.uncheck("#memory-enabled")
    wait_for(lambda: not UserPreference.objects.get(user=alice).memory_enabled)
    assert UserPreference.objects.get(user=alice).memory_in_shared_rooms
    page.reload()
    expect(page.locator("#memory-enabled")).not_to_be_checked()
    expect(page.locator("#memory-shared")).to_be_checked()
    no_script_errors(page)
