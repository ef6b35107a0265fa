"""What one read of the REST API costs: `GET /api/channels` and `GET /api/sessions/{id}/turns`
run a fixed number of SQL queries and Redis round trips however many channels or turns
they list, nothing they run grows with the history behind them, and a token request
writes nothing on every call. Counted on the real database and a real Redis.

- The channel list asks Redis once, and the database a fixed number of times, whether
  the caller sees 2 channels or 30 (owner, member, moderator, anonymous).
- Its turn counts read no turn: they are kept beside each session as turns come and go
  (by the database itself), and stay right through every way a turn is added, hidden
  or removed, and through a migrate that lost the triggers keeping them.
- A page of turns costs the same for 5 turns and for 50, of any mix of authors.
- An API token is looked up once a request; its `last_used_at` is written at most once
  a minute, not by every read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from redis.connection import AbstractConnection

from chat import services, turn_counts
from chat.models import ApiToken, Channel, Session, Turn
from tests.conftest import client_for, make_user, wait_for_done

pytestmark = pytest.mark.django_db


@dataclass
class Cost:
    queries: list[str] = field(default_factory=list)
    redis_round_trips: int = 0


@pytest.fixture
def measure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``with measure() as cost: ...`` counts the SQL statements and the Redis round trips
    (one per command, one per pipeline) this thread makes meanwhile."""
    counting: list[Cost] = []
    me = threading.get_ident()
    send = AbstractConnection.send_packed_command

    def counted_send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        if counting and threading.get_ident() == me:
            counting[-1].redis_round_trips += 1
        send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted_send)

    class Measuring:
        def __enter__(self) -> Cost:
            self.cost = Cost()
            counting.append(self.cost)
            self.queries = CaptureQueriesContext(connection)
            self.queries.__enter__()
            return self.cost

        def __exit__(self, *exc: Any) -> None:
            self.queries.__exit__(*exc)
            counting.remove(self.cost)
            self.cost.queries = [q["sql"] for q in self.queries.captured_queries]

    yield Measuring


def open_channels(owner: Any, member: Any, count: int, *, start: int = 0) -> None:
    """``count`` channels of ``owner``, every other one private with ``member`` in it,
    each with a turn."""
    for i in range(start, start + count):
        channel = services.create_channel(
            name=f"room{i:02}", owner=owner, visibility="private" if i % 2 else "public"
        )
        services.add_member(actor=owner, channel=channel, user=member)
        services.inject(channel=channel, user=owner, role="user", text=f"hello {i}")


def list_channels(client: Any, measure: Any) -> tuple[Cost, list[dict[str, Any]]]:
    client.get("/api/channels")  # a first use of the token may record it
    with measure() as cost:
        response = client.get("/api/channels")
    assert response.status_code == 200
    return cost, response.json()["channels"]


# --- the channel list ------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["owner", "member", "moderator", "anonymous"])
def test_listing_2_channels_or_30_costs_the_same_queries_and_one_redis_round_trip(
    caller, alice, bob, mona, measure
):
    who = {"owner": alice, "member": bob, "moderator": mona, "anonymous": None}[caller]
    client = client_for(who)
    open_channels(alice, bob, 2)
    few, listed = list_channels(client, measure)
    assert len(listed) == (1 if caller == "anonymous" else 2)

    open_channels(alice, bob, 28, start=2)
    many, listed = list_channels(client, measure)
    assert len(listed) == (15 if caller == "anonymous" else 30)

    assert len(many.queries) == len(few.queries), many.queries
    assert len(many.queries) <= 3, many.queries  # the token, the moderator check, the page
    assert few.redis_round_trips == many.redis_round_trips == 1


def test_the_channel_list_reads_no_turn(channel, alice, measure):
    """Counting turns per request would grow with every turn ever written."""
    services.inject(channel=channel, user=alice, role="user", text="hi")
    cost, listed = list_channels(client_for(alice), measure)
    assert listed[0]["turns"] == 1
    assert not [sql for sql in cost.queries if '"chat_turn"' in sql], cost.queries


def test_a_read_writes_nothing(channel, alice, measure):
    cost, _ = list_channels(client_for(alice), measure)
    assert [sql for sql in cost.queries if not sql.lstrip().upper().startswith("SELECT")] == []


def counts(client: Any) -> dict[str, int]:
    return {c["name"]: c["turns"] for c in client.get("/api/channels").json()["channels"]}


def visible_in_active_session(channel: Channel) -> int:
    return Turn.objects.filter(session__channel=channel, session__status="active", hidden=False).count()


def test_the_listed_turn_count_is_the_active_sessions_visible_turns_however_many_members(
    channel, alice, bob, carol
):
    services.add_member(actor=alice, channel=channel, user=carol)
    for text in ("one", "two", "three"):
        services.inject(channel=channel, user=alice, role="user", text=text)
    for caller in (alice, bob, carol, None):
        assert counts(client_for(caller)) == {"lobby": 3}
    assert client_for(alice).get("/api/channels/lobby").json()["turns"] == 3


def test_the_turn_count_follows_every_way_a_turn_comes_and_goes(channel, alice, mona):
    client = client_for(alice)

    def check() -> None:
        assert counts(client) == {"lobby": visible_in_active_session(channel)}
        for session in Session.objects.all():
            assert session.visible_turns == session.turns.filter(hidden=False).count()

    turns = [
        services.inject(channel=channel, user=alice, role=role, text=f"t{i}")
        for i, role in enumerate(["user", "bot", "agent", "user", "bot", "user"])
    ]
    check()
    services.hide_turn(actor=mona, turn=turns[1])
    check()
    services.hide_turn(actor=mona, turn=turns[1])  # hiding twice counts once
    check()
    services.unhide_turn(actor=mona, turn=turns[1])
    check()
    services.hide_turn(actor=mona, turn=turns[2])
    services.delete_turn(actor=mona, turn=turns[2])  # a hidden turn deleted
    check()
    services.delete_turn(actor=mona, turn=turns[3])
    check()
    services.truncate_session(session=channel.active_session, user=alice, keep=2)
    check()
    archived = channel.active_session
    services.reset(channel=channel, user=alice)
    assert counts(client) == {"lobby": 0}
    services.inject(channel=channel, user=alice, role="user", text="fresh")
    check()
    services.purge_session(actor=mona, session=archived)
    check()
    services.delete_session(session=channel.active_session, user=alice)
    check()
    Turn.objects.bulk_create([Turn(session=channel.active_session, role="user", text="x") for _ in range(3)])
    check()


def test_saving_a_session_loaded_earlier_keeps_the_count(channel, alice):
    session = Session.objects.get(pk=channel.active_session.pk)
    services.inject(channel=channel, user=alice, role="user", text="after the load")
    session.title = "renamed"
    session.save()
    session.refresh_from_db()
    assert session.title == "renamed" and session.visible_turns == 1


@pytest.mark.django_db(transaction=True)
def test_a_migrate_puts_the_counting_back_and_recounts_when_it_was_lost(channel, alice):
    """SQLite drops a table's triggers when a migration rebuilds the table."""
    turn = services.inject(channel=channel, user=alice, role="user", text="one")
    turn_counts.uninstall(connection)
    Turn.objects.filter(pk=turn.pk).update(hidden=True)  # nothing counts it now
    call_command("migrate", verbosity=0)
    assert counts(client_for(alice)) == {"lobby": 0}
    services.inject(channel=channel, user=alice, role="user", text="two")
    assert counts(client_for(alice)) == {"lobby": 1}


@pytest.mark.django_db(transaction=True)
def test_the_turn_count_follows_replies_and_regenerations(channel, alice):
    client = client_for(alice)
    services.post_message(channel=channel, user=alice, text="hello")
    wait_for_done(channel)
    assert counts(client) == {"lobby": 2} == {"lobby": visible_in_active_session(channel)}
    services.regenerate(channel=channel, user=alice)
    wait_for_done(channel)  # (the regeneration dropped the replay log, and the first done)
    assert Turn.objects.filter(role="bot").count() == 2
    assert counts(client) == {"lobby": 2} == {"lobby": visible_in_active_session(channel)}


# --- a page of turns -----------------------------------------------------------------------


def page_of_turns(client: Any, session: Session, limit: int, measure: Any) -> tuple[Cost, list[Any]]:
    url = f"/api/sessions/{session.pk}/turns?limit={limit}"
    client.get(url)
    with measure() as cost:
        response = client.get(url)
    assert response.status_code == 200
    return cost, response.json()["turns"]


@pytest.mark.parametrize(
    ("caller", "queries"),
    # the token, the session with its channel, the turns with their authors, the
    # checkpoints among them (issue 17); whether a member of this private channel;
    # whether a moderator
    [("owner", 4), ("member", 5), ("moderator", 6)],
)
def test_a_page_of_5_turns_or_50_costs_the_same(
    caller, queries, private_channel, alice, bob, carol, mona, measure
):
    dave = make_user("dave")
    for user in (carol, dave):
        services.add_member(actor=alice, channel=private_channel, user=user)
    authors = [alice, bob, carol, dave, None]
    for i in range(60):
        author = authors[i % len(authors)]
        role = "bot" if author is None else "user"
        services.inject(channel=private_channel, user=author or alice, role=role, text=f"t{i}")
    client = client_for({"owner": alice, "member": bob, "moderator": mona}[caller])
    session = private_channel.active_session

    few, page = page_of_turns(client, session, 5, measure)
    assert [t["text"] for t in page] == [f"t{i}" for i in range(55, 60)]
    many, page = page_of_turns(client, session, 50, measure)
    assert len(page) == 50 and {t["author"] for t in page} == {"alice", "bob", "carol", "dave", None}

    assert len(many.queries) == len(few.queries) == queries, many.queries
    assert [sql for sql in many.queries if not sql.lstrip().upper().startswith("SELECT")] == []
    assert few.redis_round_trips == many.redis_round_trips == 0


# --- the token -------------------------------------------------------------------------------


def test_a_token_is_looked_up_once_and_its_use_recorded_at_most_once_a_minute(alice, measure):
    client = client_for(alice)
    with measure() as first:
        assert client.get("/api/me").status_code == 200
    token = ApiToken.objects.get(user=alice)
    assert token.last_used_at is not None
    assert sum('"chat_apitoken"' in sql for sql in first.queries) == 2  # read, and the use recorded

    with measure() as again:
        assert client.get("/api/me").status_code == 200
    assert [sql for sql in again.queries if '"chat_apitoken"' in sql and "UPDATE" in sql] == []
    assert sum('"chat_apitoken"' in sql for sql in again.queries) == 1

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    assert client.get("/api/me").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert timezone.now() - token.last_used_at < timedelta(seconds=30)
