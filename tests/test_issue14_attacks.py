"""Issue 14 attacked from outside (sessions, titles, instructions): forged cursors, other
channels' sessions, deleted sessions, another user's instruction. Each test here failed
on the code as it landed, or pins down a rule no other test states."""

from __future__ import annotations

import base64
import uuid

import pytest

from chat import services
from chat.generation import titles
from chat.models import Session, Turn
from chat.services import create_channel, inject, reset
from tests.conftest import channel_events, client_for, wait_until_no_generation

pytestmark = pytest.mark.django_db(transaction=True)


def forged_cursor(moment: str, session_id: object) -> str:
    raw = f"{moment}|{session_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def ids(response) -> list[str]:
    return [s["id"] for s in response.json()["sessions"]]


# --- cursors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 once in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 once in UTC
    ],
)
def test_a_cursor_at_the_edge_of_time_is_a_400_not_a_500(channel, alice, moment):
    cursor = forged_cursor(moment, uuid.uuid4())
    for url in ("/api/sessions", "/api/channels/lobby/sessions"):
        response = client_for(alice).get(f"{url}?cursor={cursor}")
        assert response.status_code == 400, (url, response.status_code)
        assert list(response.json()["fields"]) == ["cursor"]


def test_a_cursor_naming_another_channels_session_shows_nothing_of_it(private_channel, alice, carol):
    """A cursor is a place in the order, not a key: pointing it at a private session
    lists only what the caller may see anyway."""
    secret = private_channel.active_session
    Session.objects.filter(pk=secret.pk).update(title="the merger plan")
    mine = create_channel(name="carols", owner=carol).active_session
    assert mine is not None
    cursor = forged_cursor("9999-01-01T00:00:00+00:00", secret.pk)
    for url in ("/api/sessions", "/api/channels/carols/sessions"):
        body = client_for(carol).get(f"{url}?cursor={cursor}&q=merger").json()
        assert body["sessions"] == [], url
    assert ids(client_for(carol).get(f"/api/sessions?cursor={cursor}")) == [str(mine.pk)]


# --- search and deleted sessions ----------------------------------------------------------


def test_search_never_reaches_private_or_deleted_sessions(channel, private_channel, alice, bob, carol):
    inject(channel=private_channel, user=alice, role="user", text="the password is swordfish")
    inject(channel=channel, user=alice, role="user", text="swordfish in public")
    public = channel.active_session
    assert ids(client_for(carol).get("/api/sessions?q=swordfish")) == []  # started none
    assert ids(client_for(carol).get("/api/channels/lobby/sessions?q=swordfish")) == [str(public.pk)]
    assert client_for(carol).get("/api/channels/backroom/sessions?q=swordfish").status_code == 404
    services.update_session(session=public, user=alice, status="deleted")
    for who in (bob, carol, None):
        for status in ("deleted", "active,archived,deleted"):
            found = client_for(who).get(f"/api/channels/lobby/sessions?q=swordfish&status={status}")
            assert ids(found) == [], (who, status)
    assert ids(client_for(alice).get("/api/channels/lobby/sessions?q=swordfish&status=deleted")) == [
        str(public.pk)
    ]


def test_the_owner_of_one_channel_may_not_patch_another_channels_session(channel, private_channel, carol):
    create_channel(name="carols", owner=carol)
    public, private = channel.active_session, private_channel.active_session
    answer = client_for(carol).patch(f"/api/sessions/{public.pk}", {"title": "mine now"}, format="json")
    assert answer.status_code == 403
    answer = client_for(carol).patch(f"/api/sessions/{private.pk}", {"status": "deleted"}, format="json")
    assert answer.status_code == 404
    assert Session.objects.get(pk=public.pk).title == ""
    assert Session.objects.get(pk=private.pk).status == "active"


# --- generated titles ---------------------------------------------------------------------


def test_a_title_written_after_the_session_was_deleted_is_neither_saved_nor_broadcast(channel, alice):
    """The title job reads the first turns, then the model takes its time: a session
    deleted meanwhile must not get a title made of its (now unreadable) turns, told to
    every watcher of the channel."""
    session = channel.active_session
    inject(channel=channel, user=alice, role="user", text="the password is swordfish")
    reset(channel=channel, user=alice)
    services.update_session(session=session, user=alice, status="deleted")
    assert titles.title_job(session.pk) is None
    saved = services.save_generated_title(session_id=session.pk, title="Swordfish password")
    assert saved is False
    assert Session.objects.get(pk=session.pk).title == ""
    assert not [e for e in channel_events(channel) if e.get("title") == "Swordfish password"]


# --- instructions ---------------------------------------------------------------------------


def test_regenerating_someone_elses_message_does_not_apply_their_private_instruction(
    channel, alice, bob, carol
):
    """Bob's own instruction answers his message; carol regenerating it may not have it
    applied again (its text goes into the reply's substrate, which every reader sees,
    and bob may have rewritten it since)."""
    created = client_for(bob).post(
        "/api/instructions", {"name": "Mine", "text": "Speak like a pirate."}, format="json"
    )
    mine = created.json()["id"]
    sent = client_for(bob).post(
        "/api/channels/lobby/messages", {"text": "hello", "instruction": mine}, format="json"
    )
    assert sent.status_code == 200, sent.json()
    client_for(bob).patch(f"/api/instructions/{mine}", {"text": "My bank PIN is 4321."}, format="json")
    for who in (carol, alice):
        refused = client_for(who).post("/api/channels/lobby/regenerate", {}, format="json")
        assert refused.status_code == 403, refused.json()
    assert not Turn.objects.filter(role="bot", instruction="Mine").exclude(pk=sent.json()["bot_turn"]["id"])
    chosen = client_for(carol).post("/api/channels/lobby/regenerate", {"instruction": None}, format="json")
    assert chosen.status_code == 202, chosen.json()
    wait_until_no_generation()
    newest = Turn.objects.filter(role="bot", hidden=False).get()
    assert newest.instruction == ""
    # bob himself still regenerates with it.
    assert (
        client_for(bob)
        .post("/api/channels/lobby/regenerate", {"instruction": mine}, format="json")
        .status_code
        == 202
    )
    wait_until_no_generation()
    assert Turn.objects.filter(role="bot", hidden=False).get().instruction == "Mine"


@pytest.mark.parametrize("query", ["page=2", "search=x", "sort=title", "offset=50"])
def test_a_list_parameter_it_does_not_read_is_a_400_naming_it(channel, alice, query):
    """Not a 200 that did without it: `page=2` would answer the first page again, for ever."""
    name = query.split("=")[0]
    for url in ("/api/sessions", "/api/channels/lobby/sessions"):
        response = client_for(alice).get(f"{url}?{query}")
        assert response.status_code == 400, (url, query)
        assert list(response.json()["fields"]) == [name]
    assert client_for(alice).get("/api/channels/lobby/sessions?channel=lobby").status_code == 400
    assert client_for(alice).get("/api/sessions?channel=lobby&format=json").status_code == 200
