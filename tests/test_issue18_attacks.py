"""Attacks on issue 18 (credits and scoped tokens) that found holes: each test failed
before its fix."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from rest_framework.test import APIClient

from chat import services
from chat.credits import holds
from chat.credits.prices import credits_setting
from chat.errors import ServiceError
from chat.generation import driver
from chat.generation.prompt import estimate_tokens
from chat.models import (
    SCOPES,
    ApiToken,
    Balance,
    Channel,
    CreditHold,
    KnowledgeBase,
    LedgerEntry,
    Turn,
    Upload,
)
from tests.conftest import (
    add_provider,
    channel_events,
    use_provider,
    wait_for,
    wait_until_no_generation,
)
from tests.credits_helpers import assert_ledger_balances, set_available, set_price
from tests.knowledge_rows import make_base
from tests.test_attachment_prompts import document_upload
from tests.test_tokens_api import bearer, session

pytestmark = pytest.mark.django_db


def short_lived(user: Any, scopes: list[str]) -> tuple[str, Any]:
    """A token that expires in an hour: its secret and its expiry."""
    soon = timezone.now() + timedelta(hours=1)
    made = session(user).post(
        "/api/me/tokens",
        {"name": "short", "scopes": scopes, "expires_at": soon.isoformat()},
        format="json",
    )
    assert made.status_code == 201, made.content
    return made.json()["token"], ApiToken.objects.get(pk=made.json()["id"]).expires_at


# --- a token's lifetime: an expiring token must not outlive itself through its children --


def test_an_expiring_token_cannot_mint_a_token_that_never_expires(alice):
    raw, _ = short_lived(alice, ["chats:read"])
    answer = bearer(raw).post("/api/me/tokens", {"name": "forever", "scopes": ["chats:read"]}, format="json")
    assert answer.status_code == 400, answer.content
    assert "expires_at" in answer.json()["fields"]
    assert not ApiToken.objects.filter(user=alice, name="forever").exists()


def test_an_expiring_token_cannot_mint_a_token_that_expires_later(alice):
    raw, expiry = short_lived(alice, ["chats:read"])
    later = (expiry + timedelta(days=30)).isoformat()
    answer = bearer(raw).post(
        "/api/me/tokens", {"name": "later", "scopes": ["chats:read"], "expires_at": later}, format="json"
    )
    assert answer.status_code == 400, answer.content
    assert "expires_at" in answer.json()["fields"]


def test_an_expiring_token_may_mint_one_that_ends_no_later_than_itself(alice):
    raw, expiry = short_lived(alice, ["chats:read"])
    sooner = (expiry - timedelta(minutes=5)).isoformat()
    answer = bearer(raw).post(
        "/api/me/tokens", {"name": "sooner", "scopes": ["chats:read"], "expires_at": sooner}, format="json"
    )
    assert answer.status_code == 201, answer.content


def test_an_expiring_full_scope_token_cannot_rotate_into_the_never_expiring_one(mona):
    raw, _ = short_lived(mona, list(SCOPES))  # a moderator's: every scope there is
    answer = bearer(raw).post("/api/me/token")
    assert answer.status_code == 403, answer.content
    assert "expires" in answer.json()["detail"]
    assert not ApiToken.objects.filter(user=mona, name=ApiToken.LEGACY_NAME).exists()


def test_a_session_still_makes_tokens_that_never_expire(alice):
    answer = session(alice).post("/api/me/tokens", {"name": "f", "scopes": ["chats:read"]}, format="json")
    assert answer.status_code == 201 and answer.json()["expires_at"] is None


# --- CREDITS_* settings: a number that cannot be stored is a configuration error ---------


@pytest.mark.parametrize("value", ["1e30", "1E+400", "99999999999999", "0.0000001", "1e-30"])
def test_an_unstorable_credits_setting_is_refused_as_a_configuration_error(settings, value):
    settings.CREDITS_INITIAL = value
    with pytest.raises(ImproperlyConfigured, match="CREDITS_INITIAL"):
        credits_setting("CREDITS_INITIAL")


@pytest.mark.parametrize("value", ["0", "-0", "100", "0.000001", "1e3", "999999999.999999"])
def test_storable_credits_settings_are_accepted(settings, value):
    settings.CREDITS_DEFAULT_PRICE = value
    assert credits_setting("CREDITS_DEFAULT_PRICE") >= 0


def test_a_huge_initial_credit_never_makes_sign_up_a_server_error(settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "1e30"
    with pytest.raises(ImproperlyConfigured, match="CREDITS_INITIAL"):
        get_user_model().objects.create_user("zed", password="pw-zed-12345")
    assert not Balance.objects.exists()


# --- an interrupted reply pays for its reasoning too -------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_interrupted_reply_pays_for_the_reasoning_it_streamed(channel, alice, openai_server, settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "10"
    # All the reasoning at once, then the answer stalls: interrupted before any text.
    openai_server.behaviour.reasoning = [" step"] * 200
    openai_server.behaviour.stall_after = 0
    add_provider("thinker", openai_server.base_url)
    use_provider(channel, "thinker", max_tokens=1000)
    set_price("thinker", input_per_1k="0", output_per_1k="1")
    services.post_message(channel=channel, user=alice, text="think hard")
    wait_for(lambda: any(e["type"] == "reasoning" for e in channel_events(channel)))
    wait_for(lambda: Turn.objects.filter(role="bot").exclude(reasoning="").exists())
    services.interrupt(channel=channel, user=alice)
    wait_until_no_generation()
    bot = Turn.objects.get(role="bot")
    assert bot.finish_reason == "interrupted" and bot.text == "" and bot.reasoning
    debit = LedgerEntry.objects.get(kind="debit")  # before the fix: no debit at all
    assert debit.estimated and debit.output_tokens == bot.usage["completion_tokens"]
    assert debit.output_tokens >= estimate_tokens(bot.reasoning) > 0
    assert_ledger_balances(alice)


@pytest.mark.django_db(transaction=True)
def test_a_dead_thinking_reply_pays_for_its_reasoning_at_recovery(channel, alice, settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "10"
    add_provider("thinker", "http://127.0.0.1:9")  # never asked: the reply is already dead
    set_price("thinker", input_per_1k="0", output_per_1k="1")
    session = services.post_message(channel=channel, user=alice, text="hi").session
    driver.interrupt(channel.pk, wait=5)
    wait_until_no_generation()
    holds.release_abandoned(channel.pk, now=timezone.now() + holds.ABANDONED_AFTER * 2)
    # A reply whose process died while it was thinking: no text yet, its hold claimed.
    dead = Turn.objects.create(
        session=session, role="bot", text="", reasoning=" step" * 200, params={"max_tokens": 100}
    )
    holds.reserve(alice, 100_000)
    hold = CreditHold.objects.get(
        pk=holds.record_hold(
            user=alice, channel=channel, basis=holds.Basis("thinker", "", 100_000), turn=None
        )
    )
    CreditHold.objects.filter(pk=hold.pk).update(reply=dead)
    assert driver.recover_unfinished() == 1
    debit = LedgerEntry.objects.get(kind="debit", hold=hold)  # before the fix: none
    assert debit.estimated and debit.output_tokens >= estimate_tokens(dead.reasoning)
    assert_ledger_balances(alice)


# --- an admin's token without admin:moderate has no admin powers --------------------------


def staff_token(user: Any, scopes: list[str]) -> APIClient:
    made = session(user).post("/api/me/tokens", {"name": "narrow", "scopes": scopes}, format="json")
    assert made.status_code == 201, made.content
    return bearer(made.json()["token"])


def test_an_admins_token_without_moderate_cannot_delete_someone_elses_channel(admin_user, channel):
    client = staff_token(admin_user, ["chats:read", "chats:delete"])
    answer = client.delete(f"/api/channels/{channel.name}")
    assert answer.status_code == 403, answer.content
    assert Channel.objects.filter(pk=channel.pk).exists()
    # With admin:moderate it may, as at the desk.
    full = staff_token_named(admin_user, ["chats:read", "chats:delete", "admin:moderate"], "mod")
    assert full.delete(f"/api/channels/{channel.name}").status_code == 204


def test_an_admins_token_without_moderate_cannot_delete_someone_elses_upload(admin_user, alice):
    upload = document_upload(alice, "notes.txt", "private notes")
    client = staff_token(admin_user, ["chats:read", "files:write"])
    answer = client.delete(f"/api/uploads/{upload.pk}")
    assert answer.status_code in (403, 404), answer.content
    assert Upload.objects.filter(pk=upload.pk).exists()


def test_an_admins_token_without_moderate_cannot_delete_someone_elses_knowledge_base(admin_user, alice):
    base = make_base("alice's", owner=alice)
    client = staff_token(admin_user, ["chats:read", "files:write"])
    answer = client.delete(f"/api/knowledge-bases/{base.pk}")
    assert answer.status_code in (403, 404), answer.content
    assert KnowledgeBase.objects.filter(pk=base.pk).exists()


def staff_token_named(user: Any, scopes: list[str], name: str) -> APIClient:
    made = session(user).post("/api/me/tokens", {"name": name, "scopes": scopes}, format="json")
    assert made.status_code == 201, made.content
    return bearer(made.json()["token"])


# --- a hold covers the thinking budget a provider adds to max_tokens ---------------------


@pytest.mark.django_db(transaction=True)
def test_the_hold_covers_anthropics_thinking_budget(channel, alice, anthropic_server, settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "0"
    add_provider("claude", anthropic_server.base_url, kind="anthropic")
    # Anthropic is asked for max_tokens + the budget (16384 at "high"): all of it may come.
    use_provider(channel, "claude", max_tokens=100, thinking="high")
    set_price("claude", input_per_1k="0", output_per_1k="1")
    set_available(alice, 100 * 1000)  # 100 output tokens: max_tokens alone
    with pytest.raises(ServiceError) as refused:
        services.post_message(channel=channel, user=alice, text="think")
    assert refused.value.code == "insufficient_credits"  # before the fix: held 100 tokens only
    set_available(alice, (100 + 16384) * 1000)
    services.post_message(channel=channel, user=alice, text="think")
    wait_until_no_generation()
    assert LedgerEntry.objects.filter(kind="hold").get().amount == (100 + 16384) * 1000
    assert_ledger_balances(alice)
