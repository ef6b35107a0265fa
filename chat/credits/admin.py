"""Credits at the moderation desk (docs/moderation.md, "Credits"): model prices, grants and
revocations, and each user's balance and ledger. Grants go through
chat.credits.balances.grant, which changes the balance in one conditional update, writes
the ledger row and the audit record; balances and the ledger are only read here (nothing
at the desk may change credits without its ledger row). Registered on import from
chat/admin.py."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import DecimalField, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from chat.admin_site import ReadOnlyAdmin
from chat.credits import balances
from chat.credits.balances import can_grant
from chat.credits.prices import credits_setting, to_credits
from chat.errors import ServiceError
from chat.models import Balance, LedgerEntry, ModelPrice

# A grant at most this many credits either way (15 digits with 6 decimals): a typo of a few
# zeros is refused with a field error, and no sum of grants nears the BigInteger columns.
GRANT_DIGITS, GRANT_DECIMALS = 15, 6


def credits_text(units: int) -> str:
    return format(to_credits(units), "f")


# --- prices -----------------------------------------------------------------------------


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
    """Prices per provider and model. The form refuses negative, non-finite and oversized
    numbers (field errors) and a second price for the same provider and model (the unique
    constraint, checked by the form before the database would refuse it). The default price
    for every model without one is shown above the list (change_list.html)."""

    list_display = ["provider", "model_name", "input_per_1k", "output_per_1k"]
    list_filter = ["provider"]
    search_fields = ["model", "provider__name"]
    list_select_related = ["provider"]
    # Django's DecimalField already refuses NaN and infinities and too many digits; the
    # database's check constraint would refuse a negative price with a 500, so the form
    # does first, on the field.
    formfield_overrides = {DecimalField: {"min_value": Decimal(0)}}

    @admin.display(ordering="model", description="model")
    def model_name(self, price: ModelPrice) -> str:
        return price.model or "(every model without its own price)"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        context = {**(extra_context or {}), "default_price": credits_setting("CREDITS_DEFAULT_PRICE")}
        return super().changelist_view(request, context)


# --- grants -----------------------------------------------------------------------------


def credits_field(**extra: Any) -> forms.DecimalField:
    return forms.DecimalField(
        max_digits=GRANT_DIGITS,
        decimal_places=GRANT_DECIMALS,
        help_text="Credits to add; a negative number revokes (never below 0 available).",
        **extra,
    )


class GrantForm(forms.Form):
    username = forms.CharField(max_length=150)
    credits = credits_field()
    reason = forms.CharField(max_length=200, help_text="For the audit log and the ledger.")

    def clean_username(self) -> Any:
        name = self.cleaned_data["username"]
        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise forms.ValidationError("No user of that name.")
        return user

    def clean_credits(self) -> Decimal:
        value: Decimal = self.cleaned_data["credits"]
        if value == 0:
            raise forms.ValidationError("Must not be zero.")
        return value


class GrantFields(forms.Form):
    credits = credits_field(required=False)
    reason = forms.CharField(required=False, max_length=200, label="Reason (for the audit log)")


class GrantActionForm(ActionForm, GrantFields):
    """The changelist's action bar: the action, and the amount and reason it takes."""


def run_grant(request: HttpRequest, user: Any, credits: Decimal, reason: str) -> bool:
    """Grant (or revoke) through the service; its refusal becomes an admin message."""
    try:
        balances.grant(user=user, credits=credits, actor=request.user, reason=reason)
    except ServiceError as error:
        messages.error(request, f"{user}: {error.text}")
        return False
    return True


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin, admin.ModelAdmin[Balance]):
    """Balances, read-only: they change through grants (here) and replies (holds and
    debits), each with its ledger row. "Grant credits" (the button above the list, the
    link on each row, or the action with an amount) calls the grant service."""

    list_display = ["user", "available_credits", "held_credits", "updated_at", "ledger_link", "grant_link"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    fields = ("user", "available_credits", "held_credits", "updated_at", "ledger_link", "grant_link")
    readonly_fields = fields
    action_form = GrantActionForm
    actions = ["grant_credits"]

    @admin.display(ordering="available", description="available")
    def available_credits(self, balance: Balance) -> str:
        return credits_text(balance.available)

    @admin.display(ordering="held", description="held")
    def held_credits(self, balance: Balance) -> str:
        return credits_text(balance.held)

    @admin.display(description="ledger")
    def ledger_link(self, balance: Balance) -> str:
        url = reverse("admin:chat_ledgerentry_changelist")
        return format_html('<a href="{}?user__id__exact={}">ledger</a>', url, balance.user_id)

    @admin.display(description="grant")
    def grant_link(self, balance: Balance) -> str:
        url = reverse("admin:chat_balance_grant")
        query = urlencode({"username": balance.user.get_username()})
        return format_html('<a href="{}?{}">grant or revoke</a>', url, query)

    def has_grant_permission(self, request: HttpRequest) -> bool:
        return can_grant(request.user)

    @admin.action(description="Grant credits to the selected users (negative: revoke)", permissions=["grant"])
    def grant_credits(self, request: HttpRequest, queryset: QuerySet[Balance]) -> None:
        form = GrantFields(request.POST)  # the amount and reason sent with the action
        credits = form.cleaned_data.get("credits") if form.is_valid() else None
        if credits is None or credits == 0:
            problems = "; ".join(str(e) for e in form.errors.get("credits", [])) or "Must not be zero."
            self.message_user(request, f"Credits: {problems}", messages.ERROR)
            return
        reason = form.cleaned_data.get("reason", "")
        done = sum(run_grant(request, b.user, credits, reason) for b in queryset.select_related("user"))
        if done:
            verb = "Granted" if credits > 0 else "Revoked"
            self.message_user(request, f"{verb} {abs(credits)} credits: {done} users.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        grant = path("grant/", self.admin_site.admin_view(self.grant_view), name="chat_balance_grant")
        return [grant, *super().get_urls()]

    def grant_view(self, request: HttpRequest) -> HttpResponse:
        """One user's grant or revocation: username, credits, reason."""
        if not can_grant(request.user):
            raise PermissionDenied
        if request.method == "POST":
            form = GrantForm(request.POST)
            if form.is_valid():
                user, credits = form.cleaned_data["username"], form.cleaned_data["credits"]
                if run_grant(request, user, credits, form.cleaned_data["reason"]):
                    verb = "Granted" if credits > 0 else "Revoked"
                    self.message_user(request, f"{verb} {abs(credits)} credits: {user}.", messages.SUCCESS)
                    return redirect(
                        reverse("admin:chat_balance_changelist") + "?" + urlencode({"q": user.get_username()})
                    )
        else:
            form = GrantForm(initial={"username": request.GET.get("username", "")})
        context = {
            **self.admin_site.each_context(request),
            "title": "Grant or revoke credits",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/chat/balance/grant.html", context)


# --- the ledger -------------------------------------------------------------------------


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin, admin.ModelAdmin[LedgerEntry]):
    """Every movement of credits, newest first; read-only (rows are only ever added, by
    the services). Amounts in credits."""

    list_display = [
        "created_at",
        "user",
        "kind",
        "credits",
        "turn_link",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "estimated",
        "actor",
        "note",
    ]
    list_filter = ["kind", ("user", admin.RelatedOnlyFieldListFilter), "estimated"]
    search_fields = ["user__username", "model", "note"]
    list_select_related = ["user", "actor", "turn"]
    date_hierarchy = "created_at"
    readonly_fields = (
        "user",
        "kind",
        "credits",
        "hold",
        "turn_link",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "estimated",
        "actor",
        "note",
        "created_at",
    )
    fields = readonly_fields

    @admin.display(ordering="amount", description="credits")
    def credits(self, entry: LedgerEntry) -> str:
        return credits_text(entry.amount)

    @admin.display(description="turn")
    def turn_link(self, entry: LedgerEntry) -> str:
        if entry.turn_id is None:
            return "—"
        url = reverse("admin:chat_turn_change", args=[entry.turn_id])
        return format_html('<a href="{}">{}</a>', url, entry.turn_id)
