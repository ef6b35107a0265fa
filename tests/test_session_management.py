"""Renaming, archiving, deleting and reopening sessions (`PATCH /api/sessions/{id}`,
issue 14), seen through REST and a watcher's WebSocket; who may; what every input gets;
truncate keeping the most recent turns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chat.models import ModerationAction, Session, Turn
from chat.realtime.async_db import db_call
from chat.services import hide_turn, inject, post_message, remove_member, reset
from tests.conftest import client_for, use_slow_model, wait_for
from tests.ws_helpers import open_socket, receive, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def patch(user: Any, session: Session, body: Any, **extra: Any) -> Any:
    return client_for(user).patch(f"/api/sessions/{session.pk}", body, format="json", **extra)


async def watch(path: str = "/ws/lobby?watch=1", token: str | None = None) -> Any:
    socket, connected, _ = await open_socket(path, token=token)
    assert connected
    assert (await receive(socket))["type"] == "history"
    return socket


async def events_until(socket: Any, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """Frames up to and including the ``count``-th of ``kind``."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while sum(f["type"] == kind for f in frames) < count:
            frames.append(await receive(socket))
    return frames


# --- renaming ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_rename_is_saved_trimmed_and_broadcast(channel, alice):
    socket = await watch()
    session = await db_call(lambda: channel.active_session)()
    response = await db_call(patch)(alice, session, {"title": "  Trip plans  "})
    assert response.status_code == 200
    body = response.json()
    assert body["title"] == "Trip plans" and body["title_by_person"] is True
    (event,) = [f for f in await events_until(socket, "session_updated") if f["type"] == "session_updated"]
    assert event == {
        "type": "session_updated",
        "session": str(session.pk),
        "title": "Trip plans",
        "status": "active",
        "channel": "lobby",
        "seq": event["seq"],
    }
    await socket.disconnect()


def test_an_empty_title_clears_it_and_lets_a_generated_one_come_again(channel, alice):
    session = channel.active_session
    patch(alice, session, {"title": "Mine"})
    body = patch(alice, session, {"title": ""}).json()
    assert body["title"] == "" and body["title_by_person"] is False


def test_a_rename_is_activity_and_audited(channel, alice):
    first = channel.active_session
    second = reset(channel=channel, user=alice)
    patch(alice, first, {"title": "Older"})
    sessions = client_for(alice).get("/api/channels/lobby/sessions").json()["sessions"]
    assert [s["id"] for s in sessions] == [str(first.pk), str(second.pk)]
    action = ModerationAction.objects.get(action="update_session")
    assert action.actor == alice and action.details == {"title": "Older"}


# --- who may -----------------------------------------------------------------------------


def test_only_the_owner_moderators_and_admins_may_change_a_session(channel, alice, bob, mona, admin_user):
    session = channel.active_session
    assert patch(bob, session, {"title": "member"}).status_code == 403
    assert patch(None, session, {"title": "anonymous"}).status_code == 401
    assert patch(mona, session, {"title": "moderator"}).status_code == 200
    assert patch(admin_user, session, {"title": "admin"}).status_code == 200
    assert patch(alice, session, {"title": "owner"}).json()["title"] == "owner"


def test_outsiders_and_removed_members_get_404_for_a_private_session(private_channel, alice, bob, carol):
    session = private_channel.active_session
    assert patch(carol, session, {"title": "x"}).status_code == 404
    remove_member(actor=alice, channel=private_channel, user=bob)
    assert patch(bob, session, {"status": "archived"}).status_code == 404
    assert Session.objects.get(pk=session.pk).status == "active"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x" * 201}, "title"),
        ({"title": 5}, "title"),
        ({"title": None}, "title"),
        ({"title": "a\x00b"}, "title"),
        ({"status": "gone"}, "status"),
        ({"status": True}, "status"),
        ({"colour": "red"}, "colour"),
        ([], "non_field_errors"),
    ],
)
def test_every_bad_input_is_a_400_naming_it(channel, alice, body, field):
    response = patch(alice, channel.active_session, body)
    assert response.status_code == 400
    assert field in response.json()["fields"]


def test_a_body_that_is_not_json_is_refused(channel, alice):
    url, form = f"/api/sessions/{channel.active_session.pk}", "application/x-www-form-urlencoded"
    response = client_for(alice).patch(url, "title=x", content_type=form)
    assert response.status_code == 400
    assert client_for(alice).patch("/api/sessions/not-a-uuid", {}, format="json").status_code == 404


# --- archiving, deleting, reopening ------------------------------------------------------


@pytest.mark.asyncio
async def test_archiving_the_active_session_starts_a_fresh_one(channel, alice):
    socket = await watch()
    session = await db_call(lambda: channel.active_session)()
    body = (await db_call(patch)(alice, session, {"status": "archived"})).json()
    assert body["status"] == "archived" and body["archived_at"] is not None
    frames = await events_until(socket, "reset")
    updated = next(f for f in frames if f["type"] == "session_updated")
    reset_to = next(f for f in frames if f["type"] == "reset")["session"]
    assert updated["session"] == str(session.pk) and updated["status"] == "archived"
    fresh = await db_call(lambda: Session.objects.get(channel=channel, status="active"))()
    assert reset_to == str(fresh.pk) != str(session.pk)
    await socket.disconnect()


@pytest.mark.asyncio
async def test_a_deleted_session_is_for_managers_alone(channel, alice, bob):
    turn = await db_call(inject)(channel=channel, user=bob, role="user", text="soon deleted")
    session = await db_call(lambda: channel.active_session)()
    socket = await watch()
    body = (await db_call(patch)(alice, session, {"status": "deleted"})).json()
    assert body["status"] == "deleted" and body["deleted_at"] is not None
    frames = await events_until(socket, "reset")
    assert {"session_updated", "reset"} <= {f["type"] for f in frames}
    await socket.disconnect()

    def reads(user: Any) -> list[int]:
        api = client_for(user)
        return [
            api.get(f"/api/sessions/{session.pk}").status_code,
            api.get(f"/api/sessions/{session.pk}/turns").status_code,
            api.get(f"/api/turns/{turn.pk}").status_code,
            len(api.get("/api/channels/lobby/sessions?status=deleted").json()["sessions"]),
            len(api.get("/api/sessions?status=deleted").json()["sessions"]),
        ]

    assert await db_call(reads)(bob) == [404, 404, 404, 0, 0]
    assert await db_call(reads)(alice) == [200, 200, 200, 1, 1]
    # A watcher's socket cannot fetch its turns either; the owner's can.
    for token, expected in ((None, "error"), (await token_for(alice), "turn_detail")):
        socket = await watch(token=token)
        await socket.send_json_to({"type": "get_turn", "id": turn.pk})
        assert (await receive(socket))["type"] == expected
        await socket.disconnect()


def test_a_soft_deleted_session_can_be_restored_or_deleted_for_good(channel, alice):
    session = reset(channel=channel, user=alice)
    inject(channel=channel, user=alice, role="user", text="x")
    reset(channel=channel, user=alice)
    patch(alice, session, {"status": "deleted"})
    restored = patch(alice, session, {"status": "archived"}).json()
    assert restored["status"] == "archived" and restored["deleted_at"] is None
    patch(alice, session, {"status": "deleted"})
    assert client_for(alice).delete(f"/api/sessions/{session.pk}").status_code == 204
    assert not Session.objects.filter(pk=session.pk).exists()
    assert not Turn.objects.filter(session_id=session.pk).exists()


@pytest.mark.asyncio
async def test_reopening_interrupts_the_reply_and_makes_it_active_again(channel, alice, bob, openai_server):
    await db_call(inject)(channel=channel, user=alice, role="user", text="in the old session")
    old = await db_call(lambda: channel.active_session)()
    current = await db_call(reset)(channel=channel, user=alice)
    await db_call(use_slow_model)(channel, openai_server, delay=0.05, tokens=[" t"] * 200, max_tokens=500)
    socket = await watch()
    await db_call(post_message)(channel=channel, user=bob, text="go")
    await events_until(socket, "token")
    body = (await db_call(patch)(alice, old, {"status": "active"})).json()
    assert body["status"] == "active" and body["archived_at"] is None
    frames = await events_until(socket, "history")  # a fresh history follows the reopening
    kinds = [f["type"] for f in frames]
    assert "interrupted" in kinds and "reset" in kinds
    assert next(f for f in frames if f["type"] == "reset")["session"] == str(old.pk)
    history = frames[-1]
    assert history["session"] == str(old.pk)
    assert [t["text"] for t in history["turns"]] == ["in the old session"]
    statuses = Session.objects.filter(channel=channel).values_list("pk", "status")
    states = await db_call(lambda: dict(statuses))()
    assert states == {old.pk: "active", current.pk: "archived"}
    bot = await db_call(lambda: Turn.objects.get(role="bot"))()
    assert bot.finish_reason == "interrupted"
    await socket.disconnect()


# --- truncate ----------------------------------------------------------------------------


def test_truncate_keeps_the_most_recent_turns_by_default(channel, alice, admin_user):
    turns = [inject(channel=channel, user=alice, role="user", text=f"t{i}") for i in range(5)]
    hide_turn(actor=admin_user, turn=turns[3])  # after the cut: stays, for audit
    session = channel.active_session
    response = client_for(alice).post(f"/api/sessions/{session.pk}/truncate", {"keep": 2}, format="json")
    assert response.json() == {"session": str(session.pk), "kept": 2, "deleted": 2}
    assert list(Turn.objects.filter(session=session).values_list("text", flat=True)) == ["t2", "t3", "t4"]
    same = client_for(alice).post(
        f"/api/sessions/{session.pk}/truncate", {"keep": 2, "from": "end"}, format="json"
    )
    assert same.json()["deleted"] == 0
    none_left = client_for(alice).post(f"/api/sessions/{session.pk}/truncate", {"keep": 0}, format="json")
    assert none_left.json()["deleted"] == 3 and not Turn.objects.filter(session=session).exists()


def test_truncate_refuses_an_unknown_side(channel, alice):
    response = client_for(alice).post(
        f"/api/sessions/{channel.active_session.pk}/truncate", {"keep": 1, "from": "middle"}, format="json"
    )
    assert response.status_code == 400 and list(response.json()["fields"]) == ["from"]


def test_a_reply_in_a_reopened_session_continues_it(channel, alice):
    inject(channel=channel, user=alice, role="user", text="first words")
    old = channel.active_session
    reset(channel=channel, user=alice)
    patch(alice, old, {"status": "active"})
    reply = client_for(alice).post("/api/channels/lobby/messages", {"text": "again"}, format="json").json()
    assert reply["session"] == str(old.pk)
    wait_for(lambda: Session.objects.get(pk=old.pk).visible_turns == 3)


@pytest.mark.asyncio
async def test_a_reply_left_running_in_a_session_that_left_is_stopped(channel, alice, bob, openai_server):
    """The race a status change (or reset) leaves open: a message arriving between its
    interrupt and its transaction starts a reply in the session about to leave. Here
    the outcome of that race is set up directly — the session archived under a running
    reply — and the reply must stop itself, not stream on into the fresh session."""
    await db_call(use_slow_model)(channel, openai_server, delay=0.05, tokens=[" t"] * 200, max_tokens=500)
    socket = await watch()
    await db_call(post_message)(channel=channel, user=bob, text="go")
    await events_until(socket, "token")
    old = await db_call(lambda: channel.active_session)()

    def archive_under_the_reply() -> None:
        Session.objects.filter(pk=old.pk).update(status=Session.Status.ARCHIVED)
        Session.objects.create(channel=channel, started_by=alice)

    await db_call(archive_under_the_reply)()
    done = (await events_until(socket, "done"))[-1]
    assert done["finish_reason"] == "interrupted"
    bot = await db_call(lambda: Turn.objects.get(role="bot"))()
    assert bot.session_id == old.pk and bot.finish_reason == "interrupted"
    assert 0 < bot.text.count(" t") < 200  # it kept what it had written
    await socket.disconnect()
