"""The moderation desk: every action taken in the admin (in this process) changes the
database, writes its audit record, and is seen live by a watcher and a chat client
connected to a server process of their own."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from chat import services
from chat.errors import ServiceError
from chat.models import ApiToken, Channel, Membership, ModerationAction, Session, Turn
from chat.permissions import MODERATOR_PERMISSIONS, ensure_moderators_group
from tests.conftest import use_slow_model

pytestmark = pytest.mark.django_db(transaction=True)


def desk(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def admin_action(user: Any, model: str, action: str, objects: list[Any], reason: str = "spam") -> None:
    app = "auth" if model == "user" else "chat"
    response = desk(user).post(
        f"/admin/{app}/{model}/",
        {"action": action, "_selected_action": [obj.pk for obj in objects], "reason": reason},
    )
    assert response.status_code == 302, response.content[:500]


class Socket:
    """A WebSocket client of a real server process."""

    def __init__(self, host: str, path: str, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ws: ClientConnection = connect(
            f"ws://{host}{path}", origin=Origin(f"http://{host}"), additional_headers=headers, open_timeout=10
        )
        self.history = self.next()
        assert self.history["type"] == "history", self.history

    def next(self, timeout: float = 10) -> dict[str, Any]:
        """The next frame that is not presence."""
        deadline = time.monotonic() + timeout
        while True:
            event = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if event["type"] != "presence":
                return event

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(deadline - time.monotonic(), 0.01))
            if predicate(event):
                return event

    def send(self, **message: Any) -> None:
        self.ws.send(json.dumps(message))

    def close_code(self, timeout: float = 10) -> int | None:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        raise AssertionError("the socket stayed open")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def screens(host, channel, bob) -> Iterator[tuple[Socket, Socket]]:
    """An anonymous watcher and bob's chat client on the lobby, both on the server process."""
    watcher = Socket(host, "/ws/lobby?watch=1")
    chatter = Socket(host, "/ws/lobby", token=ApiToken.issue(bob))
    yield watcher, chatter
    watcher.close()
    chatter.close()


def audit(action: str) -> ModerationAction:
    return ModerationAction.objects.get(action=action)


def a_turn(channel: Channel, text: str = "a line to moderate") -> Turn:
    assert channel.owner is not None
    return services.inject(channel=channel, user=channel.owner, role="user", text=text)


# --- turns ----------------------------------------------------------------------------------


def test_hiding_a_turn_removes_it_from_every_open_screen(host, channel, mona, screens):
    turn = a_turn(channel)
    for screen in screens:
        screen.wait_for(lambda e: e["type"] == "turn" and e["id"] == turn.pk)

    admin_action(mona, "turn", "hide", [turn], reason="off-topic")

    turn.refresh_from_db()
    assert turn.hidden
    record = audit("hide_turn")
    assert (record.actor, record.target_id, record.reason, record.channel) == (
        mona,
        str(turn.pk),
        "off-topic",
        channel,
    )
    for screen in screens:
        assert screen.wait_for(lambda e: e["type"] == "turn_removed")["id"] == turn.pk
    assert turn.pk not in [t["id"] for t in Socket(host, "/ws/lobby?watch=1").history["turns"]]


def test_unhiding_a_turn_brings_it_back_on_every_open_screen(host, channel, mona, screens):
    turn = a_turn(channel)
    services.hide_turn(actor=mona, turn=turn)

    admin_action(mona, "turn", "unhide", [turn])

    turn.refresh_from_db()
    assert not turn.hidden and audit("unhide_turn").target_id == str(turn.pk)
    for screen in screens:
        event = screen.wait_for(lambda e: e["type"] == "turn" and e["id"] == turn.pk)
        assert event["text"] == "a line to moderate" and event["hidden"] is False


def test_deleting_a_turn_removes_it_for_good_and_from_every_open_screen(host, channel, mona, screens):
    turn = a_turn(channel)

    admin_action(mona, "turn", "delete_for_good", [turn])

    assert not Turn.objects.filter(pk=turn.pk).exists()
    assert audit("delete_turn").target_id == str(turn.pk)
    for screen in screens:
        assert screen.wait_for(lambda e: e["type"] == "turn_removed")["id"] == turn.pk


# --- channels -------------------------------------------------------------------------------


def test_locking_a_channel_refuses_writes_everywhere_and_unlocking_allows_them_again(
    host, channel, mona, screens
):
    _, chatter = screens
    admin_action(mona, "channel", "lock", [channel])

    channel.refresh_from_db()
    assert channel.locked and audit("lock_channel").channel == channel
    for screen in screens:
        assert screen.wait_for(lambda e: e["type"] == "channel_updated")["locked"] is True
    chatter.send(type="inject", role="user", text="let me in")
    assert chatter.wait_for(lambda e: e["type"] == "error")["code"] == "locked"

    admin_action(mona, "channel", "unlock", [channel])

    assert audit("unlock_channel").channel == channel
    for screen in screens:
        assert screen.wait_for(lambda e: e["type"] == "channel_updated")["locked"] is False
    chatter.send(type="inject", role="user", text="thanks")
    assert chatter.wait_for(lambda e: e["type"] in ("turn", "error"))["text"] == "thanks"


def test_interrupting_from_the_admin_stops_a_reply_running_in_another_process(
    host, channel, mona, screens, openai_server
):
    _, chatter = screens
    use_slow_model(channel, openai_server, delay=0.2, tokens=[f"t{i} " for i in range(100)])
    chatter.send(type="message", text="talk for a long time")
    for screen in screens:
        screen.wait_for(lambda e: e["type"] == "token")

    admin_action(mona, "channel", "interrupt", [channel])

    assert audit("interrupt_generation").details == {"stopped": True}
    for screen in screens:
        screen.wait_for(lambda e: e["type"] == "interrupted")
        assert screen.wait_for(lambda e: e["type"] == "done")["finish_reason"] == "interrupted"


def test_rotating_the_watch_key_closes_the_watch_sockets_that_used_the_old_one(
    host, private_channel, mona, bob
):
    old_key = private_channel.watch_key
    key_watcher = Socket(host, f"/ws/backroom?watch=1&key={old_key}")
    member = Socket(host, "/ws/backroom", token=ApiToken.issue(bob))

    admin_action(mona, "channel", "rotate_key", [private_channel])

    private_channel.refresh_from_db()
    assert private_channel.watch_key != old_key
    assert audit("rotate_watch_key").channel == private_channel
    assert key_watcher.close_code() == 4003
    member.send(type="ping")
    assert member.wait_for(lambda e: e["type"] == "pong")
    with pytest.raises(Exception):  # noqa: B017 - the old link is refused at the handshake
        Socket(host, f"/ws/backroom?watch=1&key={old_key}")
    Socket(host, f"/ws/backroom?watch=1&key={private_channel.watch_key}").close()
    member.close()


def test_purging_a_session_gives_every_open_screen_a_fresh_empty_history(host, channel, mona, screens):
    for n in range(3):
        a_turn(channel, f"line {n}")
    for screen in screens:
        screen.wait_for(lambda e: e["type"] == "turn" and e["text"] == "line 2")
    session = channel.active_session
    assert session is not None

    admin_action(mona, "session", "purge", [session])

    assert not Turn.objects.filter(session=session).exists()
    assert audit("purge_session").details == {"turns": 3}
    for screen in screens:
        history = screen.wait_for(lambda e: e["type"] == "history")
        assert history["turns"] == [] and history["session"] == str(session.pk)


def test_a_reconnecting_client_does_not_replay_purged_turns(host, channel, mona, screens):
    watcher, _ = screens
    a_turn(channel, "soon gone")
    seen = watcher.wait_for(lambda e: e["type"] == "turn")["seq"] - 1
    session = channel.active_session
    assert session is not None
    services.purge_session(actor=mona, session=session)
    late = Socket(host, "/ws/lobby?watch=1")
    late.send(type="get_history", since=seen)
    assert late.wait_for(lambda e: e["type"] in ("history", "turn"))["type"] == "history"
    late.close()


# --- users ----------------------------------------------------------------------------------


def test_muting_a_user_refuses_their_writes_in_that_channel_until_unmuted(host, channel, mona, bob, screens):
    _, chatter = screens
    membership = Membership.objects.get(user=bob, channel=channel)

    admin_action(mona, "membership", "mute", [membership])

    membership.refresh_from_db()
    assert membership.muted and audit("mute_user").target_id == str(bob.pk)
    chatter.send(type="message", text="hello?")
    assert chatter.wait_for(lambda e: e["type"] == "error")["code"] == "muted"
    assert not Turn.objects.filter(text="hello?").exists()

    admin_action(mona, "membership", "unmute", [membership])

    assert audit("unmute_user").target_id == str(bob.pk)
    chatter.send(type="inject", role="user", text="back again")
    assert chatter.wait_for(lambda e: e["type"] in ("turn", "error"))["text"] == "back again"


def test_a_user_muted_in_one_channel_may_still_write_in_another(channel, private_channel, mona, bob):
    services.set_muted(actor=mona, channel=channel, user=bob, muted=True)
    with pytest.raises(ServiceError):
        services.inject(channel=channel, user=bob, role="user", text="no")
    assert services.inject(channel=private_channel, user=bob, role="user", text="yes").text == "yes"


def test_banning_a_user_closes_their_sockets_and_ends_their_token_and_login(
    host, channel, mona, bob, screens
):
    watcher, chatter = screens
    token = ApiToken.issue(bob)
    bobs_browser = desk(bob)
    assert bobs_browser.get("/account/").status_code == 200

    admin_action(mona, "user", "ban", [bob], reason="abuse")

    bob.refresh_from_db()
    assert not bob.is_active and audit("ban_user").reason == "abuse"
    assert chatter.close_code() == 4003
    assert httpx.get(f"http://{host}/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert bobs_browser.get("/account/").status_code == 302  # sent to log in
    watcher.send(type="ping")
    assert watcher.wait_for(lambda e: e["type"] == "pong")  # others stay

    admin_action(mona, "user", "unban", [bob])
    bob.refresh_from_db()
    assert bob.is_active and audit("unban_user").target_id == str(bob.pk)


def test_removing_a_member_of_a_private_channel_closes_their_sockets_there(host, private_channel, alice, bob):
    member = Socket(host, "/ws/backroom", token=ApiToken.issue(bob))
    response = httpx.delete(
        f"http://{host}/api/channels/backroom/members/bob",
        headers={"Authorization": f"Bearer {ApiToken.issue(alice)}"},
    )
    assert response.status_code == 204
    assert not Membership.objects.filter(user=bob, channel=private_channel).exists()
    assert member.close_code() == 4003


# --- permissions ----------------------------------------------------------------------------


def test_the_moderators_group_has_the_moderation_permissions_and_no_more():
    ensure_moderators_group()
    codenames = set(Group.objects.get(name="moderators").permissions.values_list("codename", flat=True))
    assert {
        "moderate_channel",
        "ban_user",
        "change_turn",
        "delete_turn",
        "view_moderationaction",
    } <= codenames
    assert not {"delete_channel", "change_user", "delete_user", "change_moderationaction"} & codenames


def test_the_migration_grants_the_same_permissions_as_the_code():
    granted = [
        *importlib.import_module("chat.migrations.0004_moderators_permissions").MODERATOR_PERMISSIONS,
        *importlib.import_module("chat.migrations.0011_moderators_see_knowledge_bases").MODERATOR_PERMISSIONS,
    ]
    assert granted == MODERATOR_PERMISSIONS


def test_a_member_can_neither_moderate_nor_enter_the_desk(channel, bob):
    turn = a_turn(channel)
    with pytest.raises(ServiceError):
        services.hide_turn(actor=bob, turn=turn)
    assert desk(bob).get("/admin/").status_code == 302
    desk(bob).post("/admin/chat/turn/", {"action": "hide", "_selected_action": [turn.pk]})
    turn.refresh_from_db()
    assert not turn.hidden and not ModerationAction.objects.exists()


def test_a_moderator_enters_the_desk_and_sees_the_turns(channel, mona):
    a_turn(channel, "visible to the desk")
    page = desk(mona).get("/admin/chat/turn/?q=desk")
    assert page.status_code == 200 and b"visible to the desk" in page.content


def test_a_moderator_cannot_delete_a_channel_they_do_not_own_but_an_admin_can(channel, mona, admin_user):
    client = desk(mona)
    assert client.delete("/api/channels/lobby").status_code == 403
    assert client.get(f"/admin/chat/channel/{channel.pk}/delete/").status_code == 403
    assert Channel.objects.filter(pk=channel.pk).exists()
    assert desk(admin_user).delete("/api/channels/lobby").status_code == 204


def test_the_audit_log_is_read_only_even_for_admins(channel, mona, admin_user):
    services.set_locked(actor=mona, channel=channel, locked=True)
    record = ModerationAction.objects.get()
    for user in (mona, admin_user):
        client = desk(user)
        assert client.get("/admin/chat/moderationaction/").status_code == 200
        assert client.get("/admin/chat/moderationaction/add/").status_code == 403
        assert (
            client.post(f"/admin/chat/moderationaction/{record.pk}/delete/", {"post": "yes"}).status_code
            == 403
        )
    assert ModerationAction.objects.count() == 1


def test_model_and_user_text_is_escaped_in_the_admin(channel, mona):
    a_turn(channel, "<script>alert('x')</script>")
    page = desk(mona).get("/admin/chat/turn/").content.decode()
    assert "<script>alert('x')</script>" not in page
    assert "&lt;script&gt;" in page


def test_the_channel_list_shows_owner_visibility_lock_turns_and_generation_state(channel, mona):
    a_turn(channel)
    page = desk(mona).get("/admin/chat/channel/").content.decode()
    for column in ("owner", "visibility", "locked", "turns (active session)", "bot writing", "sessions"):
        assert column in page.lower(), column


def test_owners_invite_members_over_the_api_and_members_cannot(private_channel, alice, bob, carol):
    def api(user: Any) -> Client:
        return desk(user)

    assert (
        api(bob).post("/api/channels/backroom/members", {"username": "carol"}, "application/json").status_code
        == 403
    )
    assert api(carol).get("/api/channels/backroom/members").status_code == 404
    response = api(alice).post("/api/channels/backroom/members", {"username": "carol"}, "application/json")
    assert response.status_code == 201 and response.json()["username"] == "carol"
    names = [m["username"] for m in api(carol).get("/api/channels/backroom/members").json()["members"]]
    assert sorted(names) == ["alice", "bob", "carol"]
    assert (
        api(alice)
        .post("/api/channels/backroom/members", {"username": "nobody"}, "application/json")
        .status_code
        == 404
    )


def test_a_session_that_is_not_active_is_purged_without_disturbing_open_screens(channel, mona):
    old = channel.active_session
    a_turn(channel, "old line")
    services.reset(channel=channel, user=channel.owner)
    assert old is not None
    assert services.purge_session(actor=mona, session=Session.objects.get(pk=old.pk)) == 1
