"""Access to a session is access to its channel; truncating and deleting belong to the
channel's owner, moderators and admins, never to whoever started the session
(issue 11, items 3 and 12)."""

import pytest

from chat.models import Session, Turn
from chat.services import hide_turn, inject, remove_member, reset
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_removed_member_loses_the_sessions_they_started(private_channel, alice, bob):
    inject(channel=private_channel, user=bob, role="user", text="mine")
    session = reset(channel=private_channel, user=bob)  # bob is now its starter
    inject(channel=private_channel, user=alice, role="user", text="secret")
    remove_member(actor=alice, channel=private_channel, user=bob)
    api = client_for(bob)
    assert api.get(f"/api/sessions/{session.pk}").status_code == 404
    assert api.get(f"/api/sessions/{session.pk}/turns").status_code == 404
    assert api.post(f"/api/sessions/{session.pk}/truncate", {"keep": 0}, format="json").status_code == 404
    assert api.delete(f"/api/sessions/{session.pk}").status_code == 404
    assert str(session.pk) not in {s["id"] for s in api.get("/api/sessions").json()["sessions"]}
    assert Turn.objects.filter(session=session, text="secret").exists()


def test_starting_a_public_session_gives_no_right_to_delete_it(channel, alice, carol):
    inject(channel=channel, user=alice, role="user", text="alice's words")
    session = reset(channel=channel, user=carol)  # carol, an outsider, may write and reset
    inject(channel=channel, user=alice, role="user", text="more of alice's words")
    api = client_for(carol)
    assert api.post(f"/api/sessions/{session.pk}/truncate", {"keep": 0}, format="json").status_code == 403
    assert api.delete(f"/api/sessions/{session.pk}").status_code == 403
    response = api.post("/api/sessions/bulk-delete", {"ids": [str(session.pk)]}, format="json")
    assert response.json() == {"deleted": 0}
    assert Turn.objects.filter(session=session).count() == 1
    assert Session.objects.filter(pk=session.pk).exists()


def test_anyone_who_may_see_a_public_channel_reads_its_archived_sessions(channel, alice, carol):
    inject(channel=channel, user=alice, role="user", text="archived words")
    archived = channel.active_session
    reset(channel=channel, user=alice)
    api = client_for(carol)
    assert api.get(f"/api/sessions/{archived.pk}").status_code == 200
    turns = api.get(f"/api/sessions/{archived.pk}/turns").json()["turns"]
    assert [t["text"] for t in turns] == ["archived words"]


def test_the_owner_and_a_moderator_may_truncate_and_delete(channel, alice, carol, admin_user):
    session = reset(channel=channel, user=carol)
    inject(channel=channel, user=carol, role="user", text="x")
    assert (
        client_for(alice)
        .post(f"/api/sessions/{session.pk}/truncate", {"keep": 0}, format="json")
        .json()["deleted"]
        == 1
    )
    assert client_for(admin_user).delete(f"/api/sessions/{session.pk}").status_code == 204


def test_truncate_counts_only_visible_turns_toward_keep(channel, alice, admin_user):
    turns = [inject(channel=channel, user=alice, role="user", text=f"t{i}") for i in range(4)]
    hide_turn(actor=admin_user, turn=turns[1])
    session = channel.active_session
    body = {"keep": 2, "from": "start"}
    response = client_for(alice).post(f"/api/sessions/{session.pk}/truncate", body, format="json")
    assert response.json() == {"session": str(session.pk), "kept": 2, "deleted": 1}
    visible = Turn.objects.filter(session=session, hidden=False).order_by("id")
    assert [t.text for t in visible] == ["t0", "t2"]
    # keeping as many as there are visible removes nothing, hidden turns included
    again = client_for(alice).post(f"/api/sessions/{session.pk}/truncate", body, format="json")
    assert again.json()["deleted"] == 0 and Turn.objects.filter(session=session).count() == 3
