"""Sessions and turns over REST: scoping, paging, truncate and delete do exactly what they say."""

import pytest

from chat.models import Session, Turn
from chat.services import inject, reset
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def fill(channel, user, count):
    return [inject(channel=channel, user=user, role="user", text=f"t{i}") for i in range(count)]


def test_sessions_are_scoped_to_the_caller(channel, private_channel, alice, bob, carol, admin_user):
    assert {s["channel"] for s in client_for(alice).get("/api/sessions").json()["sessions"]} == {
        "lobby",
        "backroom",
    }
    assert client_for(carol).get("/api/sessions").json()["sessions"] == []
    assert len(client_for(admin_user).get("/api/sessions").json()["sessions"]) == 2
    only = client_for(alice).get("/api/sessions?channel=backroom").json()["sessions"]
    assert [s["channel"] for s in only] == ["backroom"]
    assert client_for().get("/api/sessions").status_code == 401


def test_a_session_with_its_usage(channel, private_channel, alice, carol):
    session = channel.active_session
    fill(channel, alice, 2)
    body = client_for(alice).get(f"/api/sessions/{session.pk}").json()
    assert body["id"] == str(session.pk) and body["turns"] == 2 and body["status"] == "active"
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert client_for(carol).get(f"/api/sessions/{session.pk}").status_code == 200  # a public channel
    assert client_for(carol).get(f"/api/sessions/{private_channel.active_session.pk}").status_code == 404
    assert client_for(alice).get("/api/sessions/not-a-uuid").status_code == 404


def test_turns_page_backwards_oldest_first(channel, alice):
    turns = fill(channel, alice, 7)
    session = channel.active_session
    page = client_for(alice).get(f"/api/sessions/{session.pk}/turns?limit=3").json()["turns"]
    assert [t["text"] for t in page] == ["t4", "t5", "t6"]
    older = client_for(alice).get(f"/api/sessions/{session.pk}/turns?limit=3&before={turns[4].pk}").json()
    assert [t["text"] for t in older["turns"]] == ["t1", "t2", "t3"]
    assert client_for(alice).get(f"/api/sessions/{session.pk}/turns?limit=0").status_code == 400
    assert client_for(alice).get(f"/api/sessions/{session.pk}/turns?limit=101").status_code == 400


def test_hidden_turns_only_for_moderators_who_ask(channel, alice, admin_user):
    turns = fill(channel, alice, 3)
    Turn.objects.filter(pk=turns[1].pk).update(hidden=True)
    session = channel.active_session
    url = f"/api/sessions/{session.pk}/turns?include_hidden=1"
    assert [t["text"] for t in client_for(alice).get(url).json()["turns"]] == ["t0", "t2"]
    assert [t["text"] for t in client_for(admin_user).get(url).json()["turns"]] == ["t0", "t1", "t2"]


def test_the_channels_sessions_newest_first(channel, alice):
    first = channel.active_session
    second = reset(channel=channel, user=alice)
    sessions = client_for(alice).get("/api/channels/lobby/sessions").json()["sessions"]
    assert [s["id"] for s in sessions] == [str(second.pk), str(first.pk)]


def test_truncate_from_the_start_keeps_exactly_the_first_n(channel, alice, bob):
    turns = fill(channel, alice, 5)
    session = channel.active_session
    url, body = f"/api/sessions/{session.pk}/truncate", {"keep": 2, "from": "start"}
    assert client_for(bob).post(url, body, format="json").status_code == 403
    response = client_for(alice).post(url, body, format="json")
    assert response.json() == {"session": str(session.pk), "kept": 2, "deleted": 3}
    assert list(Turn.objects.filter(session=session).values_list("pk", flat=True)) == [
        turns[0].pk,
        turns[1].pk,
    ]
    bad = client_for(alice).post(f"/api/sessions/{session.pk}/truncate", {"keep": -1}, format="json")
    assert bad.status_code == 400


def test_deleting_a_session_removes_it_and_its_turns(channel, alice):
    fill(channel, alice, 3)
    old = channel.active_session
    assert client_for(alice).delete(f"/api/sessions/{old.pk}").status_code == 204
    assert not Session.objects.filter(pk=old.pk).exists()
    assert Turn.objects.filter(session_id=old.pk).count() == 0
    assert Session.objects.filter(channel=channel, status="active").count() == 1  # a fresh one


def test_bulk_delete_removes_only_what_the_caller_may(channel, private_channel, alice, carol):
    lobby_session = channel.active_session
    backroom_session = private_channel.active_session
    response = client_for(carol).post(
        "/api/sessions/bulk-delete", {"ids": [str(lobby_session.pk), str(backroom_session.pk)]}, format="json"
    )
    assert response.json() == {"deleted": 0}
    response = client_for(alice).post(
        "/api/sessions/bulk-delete", {"ids": [str(lobby_session.pk), str(backroom_session.pk)]}, format="json"
    )
    assert response.json() == {"deleted": 2}
    assert not Session.objects.filter(pk__in=[lobby_session.pk, backroom_session.pk]).exists()
    bad = client_for(alice).post("/api/sessions/bulk-delete", {"ids": ["nope"]}, format="json")
    assert bad.status_code == 400
