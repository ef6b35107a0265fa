"""Retention (issue 14): RETENTION_DAYS after their last activity sessions are deleted
(deleted ones, after their deletion), by `manage.py purge_sessions` and by `make run`'s
server every RETENTION_INTERVAL_SECONDS; an active one is replaced by a fresh session,
and no replay serves what went."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from chat.models import ModerationAction, Session, Turn
from chat.services import inject, reset, update_session
from tests.conftest import channel_events, wait_for
from tests.processes import free_port, live_env, running

pytestmark = pytest.mark.django_db(transaction=True)


def age(session: Session, days: float, *, deleted: bool = False) -> None:
    moment = timezone.now() - timedelta(days=days)
    extra = {"deleted_at": moment} if deleted else {}
    Session.objects.filter(pk=session.pk).update(updated_at=moment, **extra)


def test_nothing_goes_while_retention_is_off(channel, alice, settings):
    settings.RETENTION_DAYS = 0
    age(channel.active_session, 10_000)
    call_command("purge_sessions")
    assert Session.objects.count() == 1


def test_sessions_older_than_retention_go_with_their_turns(channel, alice, settings):
    settings.RETENTION_DAYS = 30
    inject(channel=channel, user=alice, role="user", text="old words")
    old = channel.active_session
    recent = reset(channel=channel, user=alice)
    inject(channel=channel, user=alice, role="user", text="new words")
    age(old, 31)
    age(recent, 29)
    call_command("purge_sessions")
    assert list(Session.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Turn.objects.filter(text="old words").exists()
    assert ModerationAction.objects.get(action="expire_session").target_id == str(old.pk)


def test_deleted_sessions_go_retention_days_after_their_deletion(channel, alice, settings):
    settings.RETENTION_DAYS = 7
    sessions = [reset(channel=channel, user=alice) for _ in range(2)]
    reset(channel=channel, user=alice)
    for session in sessions:
        update_session(session=session, user=alice, status="deleted")
    age(sessions[0], 8, deleted=True)
    age(sessions[1], 6, deleted=True)
    call_command("purge_sessions")
    assert not Session.objects.filter(pk=sessions[0].pk).exists()
    assert Session.objects.get(pk=sessions[1].pk).status == "deleted"


def test_an_expired_active_session_is_replaced_and_replay_forgets_it(channel, alice, settings):
    settings.RETENTION_DAYS = 1
    inject(channel=channel, user=alice, role="user", text="forgotten words")
    old = channel.active_session
    age(old, 2)
    call_command("purge_sessions")
    fresh = Session.objects.get(channel=channel, status="active")
    assert fresh.pk != old.pk
    events = channel_events(channel)
    assert [e["type"] for e in events] == ["reset"] and events[0]["session"] == str(fresh.pk)


def test_make_runs_server_purges_on_its_own(channel, alice):
    inject(channel=channel, user=alice, role="user", text="x")
    old = channel.active_session
    age(old, 3)
    port = free_port()
    env = live_env(RETENTION_DAYS="2", RETENTION_INTERVAL_SECONDS="0.2")
    base = f"http://127.0.0.1:{port}"
    with running([sys.executable, "manage.py", "serve", "--port", str(port)], env, base + "/"):
        wait_for(lambda: not Session.objects.filter(pk=old.pk).exists(), timeout=20)
        recent = Session.objects.get(channel=channel, status="active")
        another = reset(channel=channel, user=alice)
        reset(channel=channel, user=alice)
        age(recent, 1)  # not old enough
        age(another, 3)
        # Gone in a later pass, which looked at the recent one too and kept it.
        wait_for(lambda: not Session.objects.filter(pk=another.pk).exists(), timeout=20)
    assert Session.objects.filter(pk=recent.pk).exists()
