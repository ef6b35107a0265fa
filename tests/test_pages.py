"""The pages as the server renders them: who sees what, forms, errors, headers."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from chat import services
from chat.models import ApiToken, Channel, hash_token

pytestmark = pytest.mark.django_db


def client_for(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_the_index_lists_public_channels_to_anonymous_visitors_but_not_private_ones(channel, private_channel):
    page = client_for().get("/").content.decode()
    assert "/channel/lobby" in page and "/watch/lobby" in page
    assert "backroom" not in page
    assert "Log in</a> to open a channel" in page


def test_the_index_lists_private_channels_to_their_members(private_channel, bob, carol):
    assert "backroom" in client_for(bob).get("/").content.decode()
    assert "backroom" not in client_for(carol).get("/").content.decode()


def test_a_logged_in_user_opens_a_channel_from_the_index(alice):
    response = client_for(alice).post(
        "/", {"name": "garden", "title": "Garden", "visibility": "public", "mode": "chat"}
    )
    assert response.status_code == 302 and response["Location"] == "/channel/garden"
    assert Channel.objects.get(name="garden").owner == alice


@pytest.mark.parametrize("name", ["Bad Name", "-dash-first", "x" * 65, ""])
def test_an_invalid_channel_name_is_refused_with_a_clear_message(alice, name):
    response = client_for(alice).post("/", {"name": name, "visibility": "public", "mode": "chat"})
    assert response.status_code == 400
    assert b'class="errors"' in response.content
    assert not Channel.objects.filter(name=name).exists()


def test_a_taken_channel_name_is_refused(alice, channel):
    response = client_for(alice).post("/", {"name": "lobby", "visibility": "public", "mode": "chat"})
    assert response.status_code == 400 and b"Taken." in response.content


def test_an_anonymous_visitor_cannot_open_a_channel(db):
    response = client_for().post("/", {"name": "garden", "visibility": "public", "mode": "chat"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Channel.objects.filter(name="garden").exists()


def test_the_channel_form_needs_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/", {"name": "garden", "visibility": "public", "mode": "chat"}).status_code == 403


def test_a_missing_channel_answers_404_and_offers_to_open_it(alice):
    response = client_for(alice).get("/channel/nowhere")
    assert response.status_code == 404
    assert b'value="nowhere"' in response.content and b"Open channel" in response.content


def test_an_outsider_sees_a_private_channel_as_missing(private_channel, carol):
    assert client_for(carol).get("/channel/backroom").status_code == 404
    assert client_for(carol).get("/watch/backroom").status_code == 404


def test_the_channel_page_needs_a_login(channel):
    response = client_for().get("/channel/lobby")
    assert response.status_code == 302 and "next=/channel/lobby" in response["Location"]


def test_the_owner_gets_the_settings_editor_and_a_member_does_not(channel, alice, bob):
    assert b'id="settings-form"' in client_for(alice).get("/channel/lobby").content
    page = client_for(bob).get("/channel/lobby").content
    assert b'id="composer"' in page and b'id="settings-form"' not in page


def test_the_watch_page_has_no_composer_and_works_without_an_account(channel):
    response = client_for().get("/watch/lobby")
    assert response.status_code == 200
    assert b'data-mode="watch"' in response.content and b'id="composer"' not in response.content


def test_a_private_channel_is_watched_with_its_key_and_a_wrong_key_is_told_apart(private_channel):
    assert client_for().get(f"/watch/backroom?key={private_channel.watch_key}").status_code == 200
    response = client_for().get("/watch/backroom?key=wrong")
    assert response.status_code == 403 and b"not valid" in response.content
    # A made-up name with a key gets the same answer: names of private channels stay hidden.
    made_up = client_for().get("/watch/nowhere?key=wrong")
    assert made_up.status_code == 403 and made_up.templates[0].name == response.templates[0].name


def test_a_members_copy_link_carries_the_key_of_a_private_channel(private_channel, bob):
    page = client_for(bob).get("/channel/backroom").content.decode()
    assert f"/watch/backroom?key={private_channel.watch_key}" in page


def test_titles_are_escaped_on_every_page(alice):
    services.create_channel(name="x", owner=alice, title="<script>alert(1)</script>")
    for path in ("/", "/channel/x", "/watch/x"):
        page = client_for(alice).get(path).content.decode()
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_every_page_forbids_inline_scripts(channel, alice):
    for path in ("/", "/channel/lobby", "/watch/lobby", "/account/", "/accounts/login/", "/api/docs"):
        policy = client_for(alice).get(path)["Content-Security-Policy"]
        script_src = next(part for part in policy.split(";") if part.strip().startswith("script-src"))
        assert script_src.split()[1:] == ["'self'"], policy
        assert "img-src 'self' data:" in policy


def test_the_account_page_shows_a_new_token_once_and_keeps_only_its_hash(alice):
    client = client_for(alice)
    assert b"You have no token yet" in client.get("/account/").content
    response = client.post("/account/")
    token = response.context["token"]
    assert token.encode() in response.content and response["Cache-Control"] == "no-store"
    assert ApiToken.objects.get(user=alice).key_hash == hash_token(token)
    assert token.encode() not in client.get("/account/").content


def test_the_account_page_shows_usage_and_limits(alice, settings):
    settings.DAILY_MESSAGES = 200
    page = client_for(alice).get("/account/").content.decode()
    assert "0 of 200" in page


def test_the_account_page_needs_a_login(db):
    assert client_for().get("/account/").status_code == 302


@override_settings(ALLOW_SIGNUP=False)
def test_sign_up_is_closed_unless_allowed(db):
    assert client_for().get("/accounts/signup/").status_code == 404


@override_settings(ALLOW_SIGNUP=True)
def test_sign_up_creates_an_account_and_logs_in_when_allowed(db):
    client = client_for()
    assert b"Sign up" in client.get("/accounts/login/").content
    response = client.post(
        "/accounts/signup/",
        {"username": "dora", "password1": "a long enough pass 1", "password2": "a long enough pass 1"},
    )
    assert response.status_code == 302
    assert client.get("/account/").context["state"]["username"] == "dora"


def test_pages_answer_head_requests(channel, alice):
    for path in ("/", "/watch/lobby", "/accounts/login/"):
        assert client_for().head(path).status_code == 200, path
    assert client_for(alice).head("/account/").status_code == 200


def test_the_index_tells_when_the_bot_is_writing(channel):
    from chat.realtime import store

    lock = store.key(channel.pk, "lock")
    assert "bot is writing" not in client_for().get("/").content.decode()
    store.sync_redis().set(lock, "someone", px=5000)
    try:
        assert "bot is writing" in client_for().get("/").content.decode()
    finally:
        store.sync_redis().delete(lock)
