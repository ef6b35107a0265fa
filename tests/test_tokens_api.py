"""Named, scoped API tokens (issue 18): /api/me/tokens make, list and revoke them; the
rules (names, scopes, moderators, expiry, a token minting only what it holds) and the
legacy /api/me/token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from chat.logins import LAST_USED_RESOLUTION
from chat.models import SCOPES, ApiToken, hash_token
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

ALL = list(SCOPES)
PLAIN = [s for s in SCOPES if s != "admin:moderate"]


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def session(user: Any) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def make(client: APIClient, status: int = 201, **body: Any) -> dict[str, Any]:
    response = client.post("/api/me/tokens", body, format="json")
    assert response.status_code == status, response.content
    return response.json()


def test_a_token_is_made_shown_once_stored_hashed_and_works(alice):
    made = make(session(alice), name="reader", scopes=["chats:read"])
    assert set(made) == {"id", "name", "scopes", "token", "expires_at"}
    assert made["name"] == "reader" and made["scopes"] == ["chats:read"] and made["expires_at"] is None
    stored = ApiToken.objects.get(pk=made["id"])
    assert stored.key_hash == hash_token(made["token"]) and made["token"] not in str(stored.__dict__)
    assert bearer(made["token"]).get("/api/channels").status_code == 200
    listed = session(alice).get("/api/me/tokens").json()["tokens"]
    assert [t["name"] for t in listed] == ["reader"]
    assert "token" not in listed[0] and "key_hash" not in listed[0]
    assert set(listed[0]) >= {"id", "name", "scopes", "created_at", "last_used_at", "expires_at"}


def test_scopes_come_back_in_a_fixed_order(alice):
    made = make(session(alice), name="x", scopes=["files:write", "chats:read"])
    assert made["scopes"] == ["chats:read", "files:write"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["chats:read"]}, "name"),
        ({"name": "", "scopes": ["chats:read"]}, "name"),
        ({"name": "   ", "scopes": ["chats:read"]}, "name"),
        ({"name": "x" * 101, "scopes": ["chats:read"]}, "name"),
        ({"name": 5, "scopes": ["chats:read"]}, "name"),
        ({"name": "n"}, "scopes"),
        ({"name": "n", "scopes": []}, "scopes"),
        ({"name": "n", "scopes": "chats:read"}, "scopes"),
        ({"name": "n", "scopes": ["chats:everything"]}, "scopes"),
        ({"name": "n", "scopes": ["chats:read", "chats:read"]}, "scopes"),
        ({"name": "n", "scopes": [7]}, "scopes"),
        ({"name": "n", "scopes": ["admin:moderate"]}, "scopes"),  # alice is no moderator
        ({"name": "n", "scopes": ["chats:read"], "expires_at": "yesterday"}, "expires_at"),
        ({"name": "n", "scopes": ["chats:read"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "n", "scopes": ["chats:read"], "expires_at": 1893456000}, "expires_at"),
        ({"name": "n", "scopes": ["chats:read"], "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(alice, body, field):
    answer = make(session(alice), status=400, **body)
    assert answer["code"] == "invalid" and field in answer["fields"], answer
    assert not ApiToken.objects.filter(user=alice).exists()


def test_a_name_is_unique_per_user_only(alice, bob):
    make(session(alice), name="ci", scopes=["chats:read"])
    answer = make(session(alice), status=400, name="ci", scopes=["chats:write"])
    assert answer["fields"]["name"] == ["You already have a token of that name."]
    make(session(bob), name="ci", scopes=["chats:read"])


def test_moderators_may_hold_admin_moderate(mona):
    made = make(session(mona), name="desk", scopes=["admin:moderate", "chats:read"])
    assert made["scopes"] == ["chats:read", "admin:moderate"]


def test_a_token_makes_only_tokens_with_scopes_it_holds(alice):
    reader = make(session(alice), name="reader", scopes=["chats:read"])["token"]
    answer = make(bearer(reader), status=403, name="writer", scopes=["chats:read", "chats:write"])
    assert answer == {
        "detail": "This token lacks the scope chats:write: a token may only make tokens with scopes it has.",
        "code": "forbidden",
    }
    assert make(bearer(reader), name="reader 2", scopes=["chats:read"])["scopes"] == ["chats:read"]
    # …nor rotate the full-scope token, which holds every scope
    response = bearer(reader).post("/api/me/token")
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "This token lacks the scopes chats:write, chats:delete, files:write, admin:moderate."
    )
    assert not ApiToken.objects.filter(user=alice, name=ApiToken.LEGACY_NAME).exists()


def test_a_moderators_token_without_admin_moderate_cannot_mint_it(mona):
    plain = make(session(mona), name="plain", scopes=PLAIN)["token"]
    answer = make(bearer(plain), status=400, name="desk", scopes=["admin:moderate"])
    assert "scopes" in answer["fields"]  # acting without moderation, mona is no moderator here


def test_the_legacy_endpoint_still_makes_a_full_scope_token(alice):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION="Basic " + __import__("base64").b64encode(b"alice:pw-alice").decode()
    )
    first = client.post("/api/me/token")
    assert first.status_code == 201
    token = ApiToken.objects.get(user=alice)
    assert token.name == ApiToken.LEGACY_NAME and token.scopes == ALL and token.expires_at is None
    rotated = bearer(first.json()["token"]).post("/api/me/token")  # a full token may rotate itself
    assert rotated.status_code == 201
    assert bearer(first.json()["token"]).get("/api/me").status_code == 401
    assert bearer(rotated.json()["token"]).get("/api/me").status_code == 200
    # named tokens are left alone by a rotation
    make(session(alice), name="ci", scopes=["chats:read"])
    bearer(rotated.json()["token"]).post("/api/me/token")
    assert sorted(ApiToken.objects.filter(user=alice).values_list("name", flat=True)) == ["API token", "ci"]


def test_revoking_answers_204_and_the_token_stops(alice):
    made = make(session(alice), name="ci", scopes=["chats:read"])
    assert bearer(made["token"]).get("/api/me").status_code == 200
    assert session(alice).delete(f"/api/me/tokens/{made['id']}").status_code == 204
    refused = bearer(made["token"]).get("/api/me")
    assert refused.status_code == 401 and refused.json()["code"] == "auth_required"
    assert session(alice).delete(f"/api/me/tokens/{made['id']}").status_code == 404


@pytest.mark.parametrize("token_id", ["999999", "abc", "-1", "1.5", "٣", "99999999999999999999999"])
def test_revoking_an_unknown_id_is_404(alice, token_id):
    response = session(alice).delete(f"/api/me/tokens/{token_id}")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_others_tokens_are_404_and_never_listed(alice, bob):
    bobs = make(session(bob), name="bob's", scopes=["chats:read"])
    assert session(alice).delete(f"/api/me/tokens/{bobs['id']}").status_code == 404
    assert ApiToken.objects.filter(pk=bobs["id"]).exists()
    assert session(alice).get("/api/me/tokens").json() == {"tokens": []}


def test_a_token_revokes_itself_or_narrower_ones_only(alice):
    reader = make(session(alice), name="reader", scopes=["chats:read"])
    writer = make(session(alice), name="writer", scopes=["chats:read", "chats:write"])
    refused = bearer(reader["token"]).delete(f"/api/me/tokens/{writer['id']}")
    assert refused.status_code == 403 and "chats:write" in refused.json()["detail"]
    assert bearer(writer["token"]).delete(f"/api/me/tokens/{reader['id']}").status_code == 204
    assert bearer(writer["token"]).delete(f"/api/me/tokens/{writer['id']}").status_code == 204
    assert not ApiToken.objects.filter(user=alice).exists()


def test_the_list_marks_the_token_asking(alice):
    made = make(session(alice), name="mine", scopes=["chats:read"])
    make(session(alice), name="other", scopes=["chats:read"])
    listed = bearer(made["token"]).get("/api/me/tokens").json()["tokens"]
    assert [(t["name"], t["current"]) for t in listed] == [("mine", True), ("other", False)]


def test_anonymous_callers_get_401(db):
    assert APIClient().get("/api/me/tokens").status_code == 401
    assert (
        APIClient().post("/api/me/tokens", {"name": "x", "scopes": ["chats:read"]}, format="json").status_code
        == 401
    )
    assert APIClient().delete("/api/me/tokens/1").status_code == 401


def test_an_expired_token_is_refused_with_the_same_401_as_a_revoked_one(alice):
    soon = timezone.now() + timedelta(hours=1)
    made = make(session(alice), name="short", scopes=["chats:read"], expires_at=soon.isoformat())
    assert made["expires_at"] is not None
    assert bearer(made["token"]).get("/api/me").status_code == 200
    ApiToken.objects.filter(pk=made["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = bearer(made["token"]).get("/api/me")
    revoked = bearer("never-issued").get("/api/me")
    assert expired.status_code == revoked.status_code == 401
    assert expired.json() == revoked.json()
    listed = session(alice).get("/api/me/tokens").json()["tokens"]
    assert listed[0]["expired"] is True  # still listed, to be seen and revoked


def test_last_used_at_is_written_at_most_once_a_resolution(alice):
    made = make(session(alice), name="ci", scopes=["chats:read"])
    assert ApiToken.objects.get(pk=made["id"]).last_used_at is None
    bearer(made["token"]).get("/api/me")
    first = ApiToken.objects.get(pk=made["id"]).last_used_at
    assert first is not None
    bearer(made["token"]).get("/api/me")
    assert ApiToken.objects.get(pk=made["id"]).last_used_at == first
    ApiToken.objects.filter(pk=made["id"]).update(last_used_at=first - LAST_USED_RESOLUTION)
    bearer(made["token"]).get("/api/me")
    again = ApiToken.objects.get(pk=made["id"]).last_used_at
    assert again is not None and again > first - LAST_USED_RESOLUTION
    listed = session(alice).get("/api/me/tokens").json()["tokens"]
    assert listed[0]["last_used_at"] is not None


def test_full_tokens_of_the_old_kind_keep_working(alice):
    assert client_for(alice).get("/api/me/tokens").status_code == 200


def test_revoking_a_token_revokes_the_tokens_it_made(alice):
    """A leaked token's owner revokes it: what it minted meanwhile goes with it (all the
    way down), while tokens made by the owner's session stay."""
    parent = make(session(alice), name="parent", scopes=PLAIN)
    child = make(bearer(parent["token"]), name="child", scopes=["chats:read", "chats:write"])
    grandchild = make(bearer(child["token"]), name="grandchild", scopes=["chats:read"])
    sibling = make(session(alice), name="sibling", scopes=["chats:read"])
    assert session(alice).delete(f"/api/me/tokens/{parent['id']}").status_code == 204
    for made in (parent, child, grandchild):
        assert bearer(made["token"]).get("/api/channels").status_code == 401
    assert bearer(sibling["token"]).get("/api/channels").status_code == 200
    assert [t["name"] for t in session(alice).get("/api/me/tokens").json()["tokens"]] == ["sibling"]


def test_a_token_revoking_itself_takes_its_own_tokens_along(alice):
    parent = make(session(alice), name="parent", scopes=PLAIN)
    child = make(bearer(parent["token"]), name="child", scopes=["chats:read"])
    assert bearer(parent["token"]).delete(f"/api/me/tokens/{parent['id']}").status_code == 204
    assert bearer(child["token"]).get("/api/channels").status_code == 401


def test_the_full_scope_token_rotated_by_another_token_goes_with_it(mona):
    """Rotating the legacy token counts as making it: a leaked full-scope token cannot
    leave it behind. Rotating itself, the legacy token stays its own."""
    full = make(session(mona), name="full", scopes=ALL)
    legacy = bearer(full["token"]).post("/api/me/token").json()["token"]
    again = bearer(legacy).post("/api/me/token").json()["token"]  # rotates itself
    assert bearer(legacy).get("/api/channels").status_code == 401
    assert session(mona).delete(f"/api/me/tokens/{full['id']}").status_code == 204
    assert bearer(again).get("/api/channels").status_code == 401


def test_rotating_the_full_scope_token_from_the_browser_revokes_what_its_old_secret_made(mona):
    """The usual answer to a leaked full-scope token: rotate it from the account page
    (or the API with a session). What the leaked secret minted goes with it."""
    legacy = session(mona).post("/api/me/token").json()["token"]
    minted = make(bearer(legacy), name="minted", scopes=["chats:read"])
    fresh = session(mona).post("/api/me/token").json()["token"]
    assert bearer(legacy).get("/api/channels").status_code == 401
    assert bearer(minted["token"]).get("/api/channels").status_code == 401
    assert bearer(fresh).get("/api/channels").status_code == 200
