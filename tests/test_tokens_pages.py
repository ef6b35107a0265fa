"""Tokens on the account page and at the admin desk (issue 18): listed without secrets,
made (shown once) and revoked through chat/services/tokens.py; names escaped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import SCOPES, ApiToken, hash_token
from chat.services.tokens import create_token

pytestmark = pytest.mark.django_db


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_named_token_is_made_on_the_account_page_and_shown_once(alice):
    client = logged_in(alice)
    response = client.post(
        "/account/",
        {"form": "token-new", "name": "ci <b>bot</b>", "scopes": ["chats:read", "files:write"]},
    )
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    raw = response.context["new_token"]["token"]
    made = ApiToken.objects.get(user=alice)
    assert made.key_hash == hash_token(raw) and made.scopes == ["chats:read", "files:write"]
    page = response.content.decode()
    assert raw in page and "ci &lt;b&gt;bot&lt;/b&gt;" in page and "<b>bot</b>" not in page
    later = client.get("/account/").content.decode()
    assert raw not in later and "ci &lt;b&gt;bot&lt;/b&gt;" in later and "chats:read, files:write" in later


def test_an_expiry_is_taken_in_utc_and_shown(alice):
    when = (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    logged_in(alice).post(
        "/account/", {"form": "token-new", "name": "t", "scopes": ["chats:read"], "expires_at": when}
    )
    made = ApiToken.objects.get(user=alice)
    assert made.expires_at is not None and made.expires_at.strftime("%Y-%m-%dT%H:%M") == when
    assert when.replace("T", " ") in logged_in(alice).get("/account/").content.decode()


@pytest.mark.parametrize(
    ("post", "field"),
    [
        ({"name": "", "scopes": ["chats:read"]}, "name"),
        ({"name": "x"}, "scopes"),
        ({"name": "x", "scopes": ["admin:moderate"]}, "scopes"),  # not offered to alice
        ({"name": "x", "scopes": ["chats:read"], "expires_at": "2001-01-01T00:00"}, "expires_at"),
    ],
)
def test_bad_input_shows_the_form_again_with_the_error(alice, post, field):
    response = logged_in(alice).post("/account/", {"form": "token-new", **post})
    assert response.status_code == 400
    assert field in response.context["token_form"].errors
    assert not ApiToken.objects.filter(user=alice).exists()


def test_a_taken_name_is_an_error_on_the_name(alice):
    create_token(user=alice, name="ci", scopes=["chats:read"])
    response = logged_in(alice).post(
        "/account/", {"form": "token-new", "name": "ci", "scopes": ["chats:read"]}
    )
    assert response.status_code == 400
    assert response.context["token_form"].errors["name"] == ["You already have a token of that name."]


def test_moderators_are_offered_admin_moderate(alice, mona):
    assert "admin:moderate" not in logged_in(alice).get("/account/").content.decode()
    assert 'value="admin:moderate"' in logged_in(mona).get("/account/").content.decode()


def test_a_token_is_revoked_on_the_account_page_and_others_are_left_alone(alice, bob):
    mine, _ = create_token(user=alice, name="mine", scopes=["chats:read"])
    bobs, _ = create_token(user=bob, name="bob's", scopes=["chats:read"])
    client = logged_in(alice)
    assert client.post("/account/", {"form": "token-revoke", "id": str(bobs.pk)}).status_code == 302
    assert ApiToken.objects.filter(pk=bobs.pk).exists()
    assert client.post("/account/", {"form": "token-revoke", "id": str(mine.pk)}).status_code == 302
    assert not ApiToken.objects.filter(pk=mine.pk).exists()
    assert client.post("/account/", {"form": "token-revoke", "id": "nonsense"}).status_code == 302


def test_the_full_scope_button_still_rotates_only_the_full_token(alice):
    create_token(user=alice, name="ci", scopes=["chats:read"])
    client = logged_in(alice)
    first = client.post("/account/").context["token"]
    second = client.post("/account/").context["token"]
    assert first != second
    legacy = ApiToken.objects.get(user=alice, name=ApiToken.LEGACY_NAME)
    assert legacy.key_hash == hash_token(second) and legacy.scopes == list(SCOPES)
    assert ApiToken.objects.filter(user=alice).count() == 2


def test_the_desk_lists_tokens_without_secrets_and_revokes_them(alice, admin_user):
    made, raw = create_token(user=alice, name="ci", scopes=["chats:read", "chats:write"])
    desk = logged_in(admin_user)
    listing = desk.get("/admin/chat/apitoken/").content.decode()
    assert "ci" in listing and "chats:read, chats:write" in listing
    assert raw not in listing and made.key_hash not in listing
    detail = desk.get(f"/admin/chat/apitoken/{made.pk}/change/").content.decode()
    assert made.key_hash not in detail and raw not in detail
    assert desk.get("/admin/chat/apitoken/add/").status_code == 403
    response = desk.post(
        "/admin/chat/apitoken/", {"action": "delete_selected", "_selected_action": [made.pk], "post": "yes"}
    )
    assert response.status_code == 302 and not ApiToken.objects.filter(pk=made.pk).exists()
