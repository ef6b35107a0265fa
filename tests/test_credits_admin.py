"""Credits at the moderation desk (issue 18): prices validated in the form (field errors,
never a 500), grants and revocations through the grant service (audited, a ledger row, the
balance moved; refusals as messages), and a ledger and balances that are only read."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client

from chat.credits import balances
from chat.errors import ServiceError
from chat.models import Balance, LedgerEntry, ModelPrice, ModerationAction, Provider
from tests.conftest import make_user
from tests.usage_rows import ledger_adds_up

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def credits_on(settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "10"
    settings.CREDITS_DEFAULT_PRICE = "1.5"


def desk(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def provider(db) -> Provider:
    return Provider.objects.create(name="acme", kind="openai_compat", base_url="http://127.0.0.1:9/v1")


def price_form(
    provider: Provider, model: str = "big", input_price: str = "0.5", output_price: str = "2"
) -> dict:
    return {
        "provider": provider.pk,
        "model": model,
        "input_per_1k": input_price,
        "output_per_1k": output_price,
    }


def form_errors(response) -> dict:
    assert response.status_code == 200, response.status_code  # the form again, not a 500
    form = response.context["adminform"].form
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


# --- prices -------------------------------------------------------------------------------------


def test_a_price_is_added_and_changed_by_an_admin(admin_user, provider):
    client = desk(admin_user)
    assert client.post("/admin/chat/modelprice/add/", price_form(provider)).status_code == 302
    price = ModelPrice.objects.get()
    assert (price.model, price.input_per_1k, price.output_per_1k) == ("big", Decimal("0.5"), Decimal("2"))
    changed = client.post(
        f"/admin/chat/modelprice/{price.pk}/change/", price_form(provider, output_price="0")
    )
    assert changed.status_code == 302
    price.refresh_from_db()
    assert price.output_per_1k == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_per_1k", "-0.01", "greater than or equal to 0"),
        ("output_per_1k", "-1", "greater than or equal to 0"),
        ("input_per_1k", "NaN", "Enter a number"),
        ("output_per_1k", "Infinity", "Enter a number"),
        ("input_per_1k", "1e20", "no more than"),
        ("output_per_1k", "123456789", "no more than"),
        ("input_per_1k", "0.0000001", "decimal places"),
        ("input_per_1k", "", "required"),
    ],
)
def test_a_bad_price_is_a_field_error(admin_user, provider, field, value, message):
    form = price_form(provider)
    form[field] = value
    errors = form_errors(desk(admin_user).post("/admin/chat/modelprice/add/", form))
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert not ModelPrice.objects.exists()


@pytest.mark.parametrize("model", ["big", ""])
def test_a_second_price_for_the_same_provider_and_model_is_refused_clearly(admin_user, provider, model):
    client = desk(admin_user)
    assert client.post("/admin/chat/modelprice/add/", price_form(provider, model=model)).status_code == 302
    errors = form_errors(client.post("/admin/chat/modelprice/add/", price_form(provider, model=model)))
    assert "already exists" in " ".join(text for texts in errors.values() for text in texts)
    assert ModelPrice.objects.count() == 1


def test_the_price_list_shows_the_default_price(admin_user, provider):
    page = desk(admin_user).get("/admin/chat/modelprice/").content.decode()
    assert 'id="default-price"' in page and "<strong>1.5</strong> credits per 1,000" in page


def test_a_moderator_may_not_change_prices(mona, provider):
    assert desk(mona).post("/admin/chat/modelprice/add/", price_form(provider)).status_code == 403
    assert not ModelPrice.objects.exists()


# --- grants -------------------------------------------------------------------------------------


def grant_form(username: str, credits: str, reason: str = "support ticket 7") -> dict:
    return {"username": username, "credits": credits, "reason": reason}


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_an_admin_grants_and_revokes_credits_audited_with_a_ledger_row(admin_user, bob):
    client = desk(admin_user)
    assert client.get("/admin/chat/balance/grant/?username=bob").status_code == 200
    granted = client.post("/admin/chat/balance/grant/", grant_form("bob", "2.5"))
    assert granted.status_code == 302
    assert Balance.objects.get(user=bob).available == 12_500_000
    entry = LedgerEntry.objects.filter(user=bob, kind="grant").first()
    assert entry is not None and (entry.amount, entry.actor, entry.note) == (
        2_500_000,
        admin_user,
        "support ticket 7",
    )
    audit = ModerationAction.objects.get(action="grant_credits")
    assert (audit.actor, audit.target_id, audit.reason) == (admin_user, str(bob.pk), "support ticket 7")

    revoked = client.post("/admin/chat/balance/grant/", grant_form("bob", "-12.5", "refund fraud"))
    assert revoked.status_code == 302
    assert Balance.objects.get(user=bob).available == 0
    assert ModerationAction.objects.filter(action="revoke_credits", reason="refund fraud").count() == 1
    assert ledger_adds_up(bob)


def test_revoking_more_than_is_available_is_refused_with_a_message(admin_user, bob):
    client = desk(admin_user)
    refused = client.post("/admin/chat/balance/grant/", grant_form("bob", "-10.000001"), follow=True)
    assert refused.status_code == 200
    assert any("more credits than are available" in text for text in texts(refused))
    assert Balance.objects.get(user=bob).available == 10_000_000
    assert not ModerationAction.objects.exists()
    assert LedgerEntry.objects.filter(user=bob).count() == 1  # the initial grant only


@pytest.mark.parametrize(
    ("credits", "message"),
    [("0", "zero"), ("NaN", "Enter a number"), ("1e20", "no more than"), ("0.0000001", "decimal places")],
)
def test_a_bad_amount_is_a_field_error(admin_user, bob, credits, message):
    response = desk(admin_user).post("/admin/chat/balance/grant/", grant_form("bob", credits))
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors["credits"])
    assert Balance.objects.get(user=bob).available == 10_000_000


def test_an_unknown_user_is_a_field_error(admin_user):
    response = desk(admin_user).post("/admin/chat/balance/grant/", grant_form("nobody", "1"))
    assert response.status_code == 200
    assert response.context["form"].errors["username"] == ["No user of that name."]


def test_the_grant_action_on_selected_balances(admin_user, alice, bob):
    client = desk(admin_user)
    selected = [alice.pk, bob.pk]
    done = client.post(
        "/admin/chat/balance/",
        {"action": "grant_credits", "_selected_action": selected, "credits": "1.25", "reason": "promo"},
        follow=True,
    )
    assert any("Granted 1.25 credits: 2 users." in text for text in texts(done))
    both = Balance.objects.filter(user__in=selected)
    assert [b.available for b in both] == [11_250_000, 11_250_000]
    assert ModerationAction.objects.filter(action="grant_credits", reason="promo").count() == 2

    balances.grant(user=alice, credits=Decimal("-11"), actor=admin_user)
    partly = client.post(
        "/admin/chat/balance/",
        {"action": "grant_credits", "_selected_action": selected, "credits": "-1", "reason": "x"},
        follow=True,
    )
    messages = texts(partly)
    assert any("alice: Cannot revoke more credits than are available." in text for text in messages)
    assert any("Revoked 1 credits: 1 users." in text for text in messages)
    missing = client.post(
        "/admin/chat/balance/",
        {"action": "grant_credits", "_selected_action": selected, "credits": "", "reason": "x"},
        follow=True,
    )
    assert any(text.startswith("Credits:") for text in texts(missing))
    assert ledger_adds_up(alice) and ledger_adds_up(bob)


def test_who_may_grant(mona, bob):
    # A moderator looks after rooms, not money.
    assert desk(mona).get("/admin/chat/balance/grant/").status_code == 403
    assert desk(mona).post("/admin/chat/balance/grant/", grant_form("bob", "5")).status_code == 403
    # A staff member with the right to add ledger entries may.
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.add(
        Permission.objects.get(codename="add_ledgerentry"), Permission.objects.get(codename="view_balance")
    )
    assert desk(clerk).post("/admin/chat/balance/grant/", grant_form("bob", "5")).status_code == 302
    assert Balance.objects.get(user=bob).available == 15_000_000
    page = desk(clerk).get("/admin/chat/balance/").content.decode()
    assert 'id="grant-credits"' in page and 'value="grant_credits"' in page
    # Staff without it sees the balances, not the action.
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_balance"))
    assert 'value="grant_credits"' not in desk(viewer).get("/admin/chat/balance/").content.decode()
    assert desk(viewer).post("/admin/chat/balance/grant/", grant_form("bob", "5")).status_code == 403


def test_the_grant_service_itself_refuses_a_person_who_may_not_grant(mona, bob):
    """Whatever calls it (the desk, a script, a future API): the service checks."""
    before = Balance.objects.get(user=bob).available
    with pytest.raises(ServiceError) as refused:
        balances.grant(user=bob, credits=Decimal("5"), actor=mona)
    assert refused.value.code == "forbidden"
    assert Balance.objects.get(user=bob).available == before
    assert not ModerationAction.objects.filter(action="grant_credits").exists()
    balances.grant(user=bob, credits=Decimal("5"), actor=None)  # the system (a script) may
    assert ledger_adds_up(bob)


# --- the ledger and balances: read-only ---------------------------------------------------------


def test_the_ledger_is_read_only_and_filtered_by_user_and_kind(admin_user, alice, bob):
    balances.grant(user=bob, credits=Decimal("3"), actor=admin_user, reason="<b>thanks</b>")
    client = desk(admin_user)
    entry = LedgerEntry.objects.filter(user=bob).first()
    assert entry is not None
    assert client.get("/admin/chat/ledgerentry/add/").status_code == 403
    assert client.get(f"/admin/chat/ledgerentry/{entry.pk}/change/").status_code == 200  # to read
    assert client.post(f"/admin/chat/ledgerentry/{entry.pk}/change/", {"note": "x"}).status_code == 403
    assert client.post(f"/admin/chat/ledgerentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.note == "<b>thanks</b>"

    page = client.get(f"/admin/chat/ledgerentry/?user__id__exact={bob.pk}&kind__exact=grant")
    assert page.status_code == 200
    rows = list(page.context["cl"].result_list)
    assert {row.user for row in rows} == {bob} and len(rows) == 2
    html = page.content.decode()
    assert "3.000000" in html and "&lt;b&gt;thanks&lt;/b&gt;" in html and "<b>thanks" not in html
    assert client.get(f"/admin/chat/ledgerentry/?user__id__exact={alice.pk}").context["cl"].result_count == 1


def test_balances_are_read_only_with_a_link_to_the_ledger(admin_user, bob):
    client = desk(admin_user)
    page = client.get("/admin/chat/balance/").content.decode()
    assert f"/admin/chat/ledgerentry/?user__id__exact={bob.pk}" in page
    assert "10.000000" in page
    assert client.get("/admin/chat/balance/add/").status_code == 403
    assert client.post(f"/admin/chat/balance/{bob.pk}/change/", {"available": "1"}).status_code == 403
    assert client.post(f"/admin/chat/balance/{bob.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Balance.objects.get(user=bob).available == 10_000_000
