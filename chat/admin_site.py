"""The admin site of the moderation desk: admins (staff) and moderators (the group)
may enter; their permissions decide what each may do there. Named in INSTALLED_APPS
through ColloquyAdminConfig, so this module is imported before the models are: it
must not import them at load time."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest


class ColloquyAdminSite(admin.AdminSite):
    site_header = "Colloquy moderation desk"
    site_title = "Colloquy"
    index_title = "Moderation"

    @property
    def login_form(self) -> Any:  # type: ignore[override]
        """Throttled like the login page (chat.login_throttle); a property because this
        module may not import forms, and through them models, when it loads."""
        from chat.forms import AdminLoginForm

        return AdminLoginForm

    def has_permission(self, request: HttpRequest) -> bool:
        from chat.permissions import is_moderator

        return is_moderator(request.user)


class ColloquyAdminConfig(AdminConfig):
    default_site = "chat.admin_site.ColloquyAdminSite"


class ReadOnlyAdmin:
    """For the desk's records nobody edits by hand (the audit log, balances, the
    ledger): they change only through their services."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
