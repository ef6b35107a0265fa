"""/api/channels: what owner, member, outsider, anonymous and admin each get."""

import pytest
from rest_framework.test import APIClient

from chat.models import ApiToken, Channel
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def names(response):
    return [c["name"] for c in response.json()["channels"]]


def test_anonymous_callers_see_public_channels_only(channel, private_channel):
    response = client_for().get("/api/channels")
    assert response.status_code == 200
    assert names(response) == ["lobby"]
    item = response.json()["channels"][0]
    assert set(item) == {
        "name",
        "title",
        "turns",
        "visibility",
        "locked",
        "generating",
        "chat_url",
        "watch_url",
    }
    assert response.json()["next"] is None


def test_members_see_their_private_channels_with_the_watch_key(channel, private_channel, bob):
    response = client_for(bob).get("/api/channels")
    assert names(response) == ["backroom", "lobby"]
    backroom = response.json()["channels"][0]
    assert backroom["watch_url"].endswith(f"/watch/backroom?key={private_channel.watch_key}")


def test_outsiders_get_404_for_a_private_channel(private_channel, carol):
    assert names(client_for(carol).get("/api/channels")) == []
    assert client_for(carol).get("/api/channels/backroom").status_code == 404
    assert client_for().get("/api/channels/backroom").status_code == 404
    assert client_for(carol).get("/api/channels/nothing-here").json() == {
        "detail": "No such channel.",
        "code": "not_found",
    }


def test_admins_see_everything(channel, private_channel, admin_user):
    assert names(client_for(admin_user).get("/api/channels")) == ["backroom", "lobby"]


def test_creating_a_channel(alice):
    response = client_for(alice).post(
        "/api/channels",
        {"name": "new-one", "visibility": "private", "params": {"temperature": 0.3}},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert (
        body["owner"] == "alice" and body["visibility"] == "private" and body["params"]["temperature"] == 0.3
    )
    assert Channel.objects.get(name="new-one").owner == alice


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "ok", "visibility": "secret"}, "visibility"),
        ({"name": "ok", "params": {"base_url": "http://x"}}, "params"),
        ({"name": "ok", "params": {"temperature": 5}}, "params"),
        ({}, "name"),
    ],
)
def test_bad_channel_input_is_a_400_with_a_detail(alice, payload, field):
    response = client_for(alice).post("/api/channels", payload, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] and field in response.json()["fields"]


def test_creating_needs_a_login():
    assert client_for().post("/api/channels", {"name": "x"}, format="json").status_code == 401


def test_a_malformed_body_is_a_400(alice):
    response = client_for(alice).post("/api/channels", "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["detail"]


def test_the_owner_changes_a_channel_and_a_member_may_not(channel, alice, bob):
    assert client_for(bob).patch("/api/channels/lobby", {"title": "Mine"}, format="json").status_code == 403
    response = client_for(alice).patch(
        "/api/channels/lobby", {"title": "Hall", "locked": True}, format="json"
    )
    assert (
        response.status_code == 200
        and response.json()["title"] == "Hall"
        and response.json()["locked"] is True
    )


def test_a_moderator_may_change_but_not_delete_a_channel_they_do_not_own(channel, carol):
    from django.contrib.auth.models import Group

    carol.groups.add(Group.objects.get(name="moderators"))
    assert client_for(carol).patch("/api/channels/lobby", {"locked": True}, format="json").status_code == 200
    assert client_for(carol).delete("/api/channels/lobby").status_code == 403


def test_deleting_a_channel(channel, alice, bob, admin_user):
    assert client_for(bob).delete("/api/channels/lobby").status_code == 403
    assert client_for(alice).delete("/api/channels/lobby").status_code == 204
    assert not Channel.objects.filter(name="lobby").exists()


def test_rotating_the_watch_key(private_channel, alice, bob):
    old = private_channel.watch_key
    assert client_for(bob).post("/api/channels/backroom/watch-key").status_code == 403
    response = client_for(alice).post("/api/channels/backroom/watch-key")
    assert response.status_code == 200
    private_channel.refresh_from_db()
    assert private_channel.watch_key != old
    assert response.json()["watch_url"].endswith(f"?key={private_channel.watch_key}")


def test_providers_lists_the_enabled_ones():
    response = client_for().get("/api/providers")
    assert {
        "name": "demo",
        "kind": "demo",
        "modes": ["chat", "completion"],
        "models": ["demo"],
    } in response.json()["providers"]


def test_me_and_the_token(alice):
    client = APIClient()
    client.force_login(alice)
    me = client.get("/api/me").json()
    assert me["username"] == "alice" and me["is_staff"] is False and "usage" in me and "limits" in me
    token = client.post("/api/me/token").json()["token"]
    assert APIClient().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    newer = client.post("/api/me/token").json()["token"]
    assert APIClient().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert APIClient().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {newer}").status_code == 200
    assert not ApiToken.objects.filter(key_hash=token).exists()  # only the hash is stored


def test_a_banned_users_token_gets_401(channel, bob, admin_user):
    from chat.services import ban_user

    client = client_for(bob)
    assert client.get("/api/me").status_code == 200
    ban_user(actor=admin_user, user=bob, reason="spam")
    assert client.get("/api/me").status_code == 401


def test_session_auth_needs_csrf_for_unsafe_methods(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/api/channels", {"name": "csrf"}, format="json").status_code == 403


def test_the_schema_and_docs_pages():
    schema = APIClient().get("/api/schema")
    assert schema.status_code == 200 and b"/api/channels/{name}/messages" in schema.content
    docs = APIClient().get("/api/docs")
    assert docs.status_code == 200 and b"/api/sessions/{session_id}/truncate" in docs.content


def test_a_password_can_be_exchanged_for_a_token_but_not_used_elsewhere(alice):
    import base64

    basic = "Basic " + base64.b64encode(b"alice:pw-alice").decode()
    response = APIClient().post("/api/me/token", HTTP_AUTHORIZATION=basic)
    assert response.status_code == 201 and response.json()["token"]
    assert APIClient().get("/api/me", HTTP_AUTHORIZATION=basic).status_code == 401
    wrong = "Basic " + base64.b64encode(b"alice:nope").decode()
    assert APIClient().post("/api/me/token", HTTP_AUTHORIZATION=wrong).status_code == 401
