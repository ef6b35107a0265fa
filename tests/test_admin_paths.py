"""One path per change (issue 11, items 6, 7, 8): the admin's stock delete buttons and
change forms go through the services (live effects, audit records, validation); a
moderator's decision is undone only by a moderator; moderators do not act on staff."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chat import services
from chat.errors import ServiceError
from chat.models import Channel, Membership, ModerationAction, Session
from chat.realtime import store
from tests.conftest import channel_events, client_for, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def desk(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def access_version() -> int:
    return int(store.sync_redis().get(store.global_keys()[0]) or 0)


def test_the_stock_delete_of_memberships_goes_through_remove_member(private_channel, bob, admin_user):
    membership = Membership.objects.get(user=bob, channel=private_channel)
    before = access_version()
    response = desk(admin_user).post(
        "/admin/chat/membership/",
        {"action": "delete_selected", "_selected_action": [membership.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert access_version() > before  # every process rechecks bob's connections


def test_a_membership_cannot_be_moved_to_another_user_in_the_desk(private_channel, bob, carol, admin_user):
    membership = Membership.objects.get(user=bob, channel=private_channel)
    desk(admin_user).post(
        f"/admin/chat/membership/{membership.pk}/change/",
        {"user": carol.pk, "channel": private_channel.pk, "role": "member"},
    )
    membership.refresh_from_db()
    assert membership.user_id == bob.pk and membership.channel_id == private_channel.pk


def test_the_stock_delete_of_sessions_goes_through_delete_session(channel, alice, admin_user):
    services.inject(channel=channel, user=alice, role="user", text="to be deleted")
    session = channel.active_session
    response = desk(admin_user).post(
        "/admin/chat/session/",
        {"action": "delete_selected", "_selected_action": [str(session.pk)], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Session.objects.filter(pk=session.pk).exists()
    assert Session.objects.filter(channel=channel, status="active").count() == 1  # a fresh one
    events = channel_events(channel)
    assert events[0]["type"] == "reset"  # screens were told; the log before it is gone
    assert not any(e.get("text") == "to be deleted" for e in events)
    assert ModerationAction.objects.filter(action="delete_session", target_id=str(session.pk)).exists()


def test_the_channel_form_validates_framing_and_publishes_through_update_channel(channel, admin_user):
    url = f"/admin/chat/channel/{channel.pk}/change/"
    form = {
        "title": "Lobby",
        "visibility": "public",
        "mode": "chat",
        "framing": '{"stop": [null]}',
        "params": "{}",
        "agent_choice": "fixed",  # issue 17: a field the form always sends
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    response = desk(admin_user).post(url, form)
    assert response.status_code == 200  # the form again, with the error
    assert Channel.objects.get(pk=channel.pk).framing == channel.framing
    before = access_version()
    response = desk(admin_user).post(url, {**form, "framing": '{"preamble": "Hi."}', "visibility": "private"})
    assert response.status_code == 302, response.content[:400]
    changed = Channel.objects.get(pk=channel.pk)
    assert changed.visibility == "private" and changed.framing["preamble"] == "Hi."
    updates = [e for e in channel_events(channel) if e["type"] == "channel_updated"]
    assert updates and updates[-1]["visibility"] == "private"
    assert access_version() > before


def test_a_muted_member_cannot_unmute_themselves_by_leaving(channel, bob, mona):
    services.set_muted(actor=mona, channel=channel, user=bob, muted=True)
    response = client_for(bob).delete("/api/channels/lobby/members/bob")
    assert response.status_code == 403
    assert Membership.objects.get(user=bob, channel=channel).muted


def test_the_owner_cannot_lift_a_moderators_mute_by_removing_the_member(channel, alice, bob, mona):
    services.set_muted(actor=mona, channel=channel, user=bob, muted=True)
    assert client_for(alice).delete("/api/channels/lobby/members/bob").status_code == 403
    services.remove_member(actor=mona, channel=channel, user=bob)  # a moderator may


def test_the_owner_cannot_undo_a_moderators_lock_and_every_lock_is_audited(channel, alice, mona):
    services.set_locked(actor=mona, channel=channel, locked=True)
    response = client_for(alice).patch("/api/channels/lobby", {"locked": False}, format="json")
    assert response.status_code == 403
    assert Channel.objects.get(pk=channel.pk).locked
    services.set_locked(actor=mona, channel=channel, locked=False)
    assert client_for(alice).patch("/api/channels/lobby", {"locked": True}, format="json").status_code == 200
    assert client_for(alice).patch("/api/channels/lobby", {"locked": False}, format="json").status_code == 200
    audit = list(
        ModerationAction.objects.filter(channel=channel).order_by("id").values_list("action", "actor")
    )
    assert audit == [
        ("lock_channel", mona.pk),
        ("unlock_channel", mona.pk),
        ("lock_channel", alice.pk),
        ("unlock_channel", alice.pk),
    ]


def test_moderators_do_not_act_on_staff_or_superusers(channel, mona, admin_user):
    staff = make_user("stella", is_staff=True)
    for target in (staff, admin_user):
        with pytest.raises(ServiceError) as caught:
            services.ban_user(actor=mona, user=target)
        assert caught.value.code == "forbidden"
        with pytest.raises(ServiceError):
            services.set_muted(actor=mona, channel=channel, user=target, muted=True)
        target.refresh_from_db()
        assert target.is_active
    response = desk(mona).post(
        "/admin/auth/user/", {"action": "ban", "_selected_action": [staff.pk], "reason": "x"}
    )
    assert response.status_code == 302
    staff.refresh_from_db()
    assert staff.is_active


def test_a_superuser_may_ban_staff(channel, admin_user):
    staff = make_user("stella", is_staff=True)
    services.ban_user(actor=admin_user, user=staff)
    staff.refresh_from_db()
    assert not staff.is_active
