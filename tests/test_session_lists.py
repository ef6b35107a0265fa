"""Session lists over REST (issue 14): the session object, most recent activity first,
status, search, limit and cursor paging, a 400 naming each bad parameter, and who sees
what (outsiders, removed members, deleted sessions)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import Session
from chat.services import hide_turn, inject, remove_member, reset
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def ids(response) -> list[str]:
    return [s["id"] for s in response.json()["sessions"]]


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_session_has_every_field_of_the_contract(channel, alice):
    inject(channel=channel, user=alice, role="user", text="hello")
    body = client_for(alice).get("/api/channels/lobby/sessions").json()["sessions"][0]
    assert set(body) == {
        "id",
        "channel",
        "title",
        "status",
        "title_by_person",
        "started_by",
        "created_at",
        "updated_at",
        "archived_at",
        "deleted_at",
        "turns",
        "usage",
    }
    assert body["turns"] == 1 and body["title_by_person"] is False and body["deleted_at"] is None
    assert body["updated_at"] >= body["created_at"]


def test_a_new_turn_moves_its_session_to_the_top(channel, alice):
    first = channel.active_session
    inject(channel=channel, user=alice, role="user", text="in the first")
    second = reset(channel=channel, user=alice)
    assert ids(client_for(alice).get("/api/channels/lobby/sessions")) == [str(second.pk), str(first.pk)]
    before = Session.objects.get(pk=second.pk).updated_at
    inject(channel=channel, user=alice, role="user", text="in the second")
    assert Session.objects.get(pk=second.pk).updated_at > before


def test_the_list_costs_the_same_however_many_sessions(channel, alice):
    api = client_for(alice)

    def cost() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert api.get("/api/channels/lobby/sessions").status_code == 200
        return len(queries.captured_queries)

    inject(channel=channel, user=alice, role="user", text="x")
    cost()  # (the token's first use is written down once)
    few = cost()
    for i in range(8):
        reset(channel=channel, user=alice)
        inject(channel=channel, user=alice, role="user", text=f"t{i}")
    assert cost() == few


def test_pages_follow_next_to_the_end_without_repeats(channel, alice):
    made = [str(reset(channel=channel, user=alice).pk) for _ in range(6)]
    api = client_for(alice)
    seen: list[str] = []
    url: str | None = "/api/channels/lobby/sessions?limit=2"
    while url:
        body = api.get(url).json()
        assert len(body["sessions"]) <= 2
        seen += [s["id"] for s in body["sessions"]]
        url = path_of(body["next"]) if body["next"] else None
    assert seen[:6] == list(reversed(made)) and len(seen) == len(set(seen)) == 7


def test_next_keeps_the_query(channel, alice):
    for _ in range(3):
        reset(channel=channel, user=alice)
    body = client_for(alice).get("/api/sessions?status=archived&limit=1&channel=lobby").json()
    assert body["next"].startswith("http://testserver/api/sessions?")
    assert "status=archived" in body["next"] and "channel=lobby" in body["next"]
    following = client_for(alice).get(path_of(body["next"])).json()
    assert [s["status"] for s in following["sessions"]] == ["archived"]


def test_status_chooses_which_sessions(channel, alice):
    archived = channel.active_session
    active = reset(channel=channel, user=alice)
    api = client_for(alice)
    assert ids(api.get("/api/channels/lobby/sessions?status=archived")) == [str(archived.pk)]
    assert ids(api.get("/api/channels/lobby/sessions?status=active")) == [str(active.pk)]
    assert len(ids(api.get("/api/channels/lobby/sessions?status=active,archived"))) == 2


def test_search_matches_the_title_or_a_visible_turn(channel, alice, admin_user):
    titled = channel.active_session
    Session.objects.filter(pk=titled.pk).update(title="Planning the Garden")
    reset(channel=channel, user=alice)
    inject(channel=channel, user=alice, role="user", text="what about TOMATOES then")
    secret = inject(channel=channel, user=alice, role="user", text="a hidden cucumber")
    hide_turn(actor=admin_user, turn=secret)
    api = client_for(alice)
    assert ids(api.get("/api/channels/lobby/sessions?q=garden")) == [str(titled.pk)]
    assert ids(api.get("/api/channels/lobby/sessions?q=tomatoes")) == [str(channel.active_session.pk)]
    assert ids(api.get("/api/channels/lobby/sessions?q=cucumber")) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=gone", "status"),
        ("status=active,", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("q=" + "x" * 201, "q"),
        ("q=a%00b", "q"),
        ("cursor=not-ours", "cursor"),
        ("cursor=", "cursor"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(channel, alice, query, field):
    for url in ("/api/sessions", "/api/channels/lobby/sessions"):
        response = client_for(alice).get(f"{url}?{query}")
        assert response.status_code == 400, (url, query)
        assert list(response.json()["fields"]) == [field]


def test_outsiders_see_no_private_sessions(private_channel, alice, carol):
    assert client_for(carol).get("/api/channels/backroom/sessions").status_code == 404
    assert client_for().get("/api/channels/backroom/sessions").status_code == 404
    assert client_for(carol).get("/api/sessions?channel=backroom").json()["sessions"] == []
    assert client_for().get("/api/sessions").status_code == 401


def test_a_removed_member_no_longer_lists_the_channels_sessions(private_channel, alice, bob):
    assert len(ids(client_for(bob).get("/api/channels/backroom/sessions"))) == 1
    remove_member(actor=alice, channel=private_channel, user=bob)
    assert client_for(bob).get("/api/channels/backroom/sessions").status_code == 404
    assert ids(client_for(bob).get("/api/sessions")) == []


def test_anonymous_watchers_list_a_public_channels_sessions(channel):
    assert len(ids(client_for().get("/api/channels/lobby/sessions"))) == 1
    assert ids(client_for().get("/api/channels/lobby/sessions?status=deleted")) == []
