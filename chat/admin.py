"""The moderation desk. Model and user text is shown escaped (Django's default)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from chat.models import ApiToken, Channel, Membership, ModerationAction, Provider, Session, Turn


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "base_url", "default_model", "context_window", "enabled", "priority"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "base_url", "default_model"]
    list_editable = ["enabled", "priority"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "title",
        "owner",
        "visibility",
        "mode",
        "provider",
        "locked",
        "turns",
        "created_at",
    ]
    list_filter = ["visibility", "mode", "locked", "provider"]
    search_fields = ["name", "title", "owner__username"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Channel]:
        return super().get_queryset(request).annotate(turn_total=Count("sessions__turns"))

    @admin.display(ordering="turn_total", description="turns")
    def turns(self, channel: Channel) -> int:
        return getattr(channel, "turn_total", 0)


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "channel",
        "status",
        "started_by",
        "prompt_tokens",
        "completion_tokens",
        "created_at",
    ]
    list_filter = ["status", "channel"]
    search_fields = ["id", "title", "channel__name", "started_by__username"]
    readonly_fields = ["id", "created_at", "updated_at", "archived_at"]
    list_select_related = ["channel", "started_by"]


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    list_display = ["id", "session", "role", "author", "short_text", "hidden", "finish_reason", "created_at"]
    list_filter = ["role", "hidden", "finish_reason", "session__channel"]
    search_fields = ["text", "author__username"]
    list_select_related = ["session__channel", "author"]
    readonly_fields = ["created_at", "prompt", "raw_completion", "usage", "timings", "framing", "params"]

    @admin.display(description="text")
    def short_text(self, turn: Turn) -> str:
        return turn.text[:80]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "channel", "role", "muted", "created_at"]
    list_filter = ["role", "muted"]
    search_fields = ["user__username", "channel__name"]
    autocomplete_fields = ["user", "channel"]


@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin):
    """The audit log: read-only."""

    list_display = ["created_at", "actor", "action", "target_type", "target_id", "channel", "reason"]
    list_filter = ["action", "target_type"]
    search_fields = ["reason", "target_id", "actor__username"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "created_at", "last_used_at"]
    search_fields = ["user__username"]
    fields = ["user", "created_at", "last_used_at"]
    readonly_fields = ["user", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
