"""The moderation desk. Every moderation action here calls a service, so it writes the
audit record and has its live effect on open screens, exactly as over the API. Fields
whose change must reach open screens (a turn's visibility, a channel's lock, a mute)
are read-only in the forms: they change through the actions. Model and user text is
always shown escaped (Django's default; links are built with format_html)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet, URLField
from django.forms import CharField
from django.http import HttpRequest
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from chat import permissions, selectors, services
from chat.admin_site import ReadOnlyAdmin
from chat.agents import agent_admin as agent_admin  # registers the Agent admin
from chat.agents.policy import AGENT_FIELDS, check_channel_agent_settings
from chat.choices import validate_member_params
from chat.credits import admin as credits_admin  # noqa: F401 (registers the credits admin)
from chat.errors import ServiceError
from chat.framing import SettingsInvalidError, merge_framing, merge_params
from chat.knowledge import services as knowledge
from chat.models import (
    ApiToken,
    Channel,
    Instruction,
    KnowledgeBase,
    KnowledgeChunk,
    KnowledgeDocument,
    McpServer,
    Membership,
    Memory,
    ModerationAction,
    Provider,
    Session,
    SiteSettings,
    Turn,
)
from chat.services.audit import record
from chat.services.channels import check_channel_instruction


def desk_user(request: HttpRequest) -> User:
    """Who acts at the desk: always a logged-in user (the admin site lets no one else in)."""
    assert isinstance(request.user, User)
    return request.user


class ReasonActionForm(ActionForm):
    reason = CharField(required=False, label="Reason (for the audit log)")


class ModerationMixin:
    """Admin actions that run a service per selected object and report the outcome."""

    action_form = ReasonActionForm

    def has_moderate_permission(self, request: HttpRequest) -> bool:
        return permissions.is_moderator(request.user)

    def run_each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        verb: str,
        act: Callable[[Any, str], Any],
    ) -> None:
        reason = request.POST.get("reason", "")
        done = 0
        for obj in queryset:
            try:
                act(obj, reason)
                done += 1
            except ServiceError as error:
                self.message_user(request, f"{obj}: {error.text}", messages.ERROR)  # type: ignore[attr-defined]
        if done:
            self.message_user(request, f"{verb}: {done}.", messages.SUCCESS)  # type: ignore[attr-defined]


def moderation_action(
    description: str, verb: str, act: Callable[[Any, Any, str], Any], permission: str = "moderate"
) -> Any:
    """An admin action that runs ``act(actor, obj, reason)`` (a service) on each selected
    object and reports how many went through."""

    @admin.action(description=description, permissions=[permission])
    def action(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        modeladmin.run_each(request, queryset, verb, lambda obj, why: act(desk_user(request), obj, why))

    return action


def admin_link(obj: Any, text: Any = None) -> str:
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else obj)


def changelist_link(model: Any, text: str, **filters: Any) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return format_html('<a href="{}?{}">{}</a>', url, query, text)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin[Provider]):
    list_display = [
        "name",
        "kind",
        "base_url",
        "default_model",
        "context_window",
        "vision",
        "transcription",
        "enabled",
        "priority",
    ]
    list_filter = ["kind", "enabled", "vision", "transcription"]
    search_fields = ["name", "base_url", "default_model"]
    list_editable = ["enabled", "priority"]


@admin.register(SiteSettings)
class SiteSettingsAdmin(admin.ModelAdmin[SiteSettings]):
    """One row (SiteSettings.load): the list goes straight to it; nothing to add or delete."""

    fields = ["task_provider", "task_model"]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        site = SiteSettings.load()
        return redirect(reverse("admin:chat_sitesettings_change", args=[site.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SiteSettings | None = None) -> bool:
        return False


class MembershipInline(admin.TabularInline[Membership, Channel]):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "muted", "created_at"]
    readonly_fields = ["muted", "created_at"]


@admin.register(Instruction)
class InstructionAdmin(admin.ModelAdmin[Instruction]):
    """Shared instructions (no owner) are made here; users' own are shown for support."""

    list_display = ["name", "owner", "updated_at"]
    list_filter = [("owner", admin.EmptyFieldListFilter)]
    search_fields = ["name", "text", "owner__username"]
    autocomplete_fields = ["owner"]


@admin.register(Channel)
class ChannelAdmin(ModerationMixin, admin.ModelAdmin[Channel]):
    list_display = [
        "name",
        "title",
        "owner",
        "visibility",
        "mode",
        "locked",
        "turns",
        "generating",
        "sessions_link",
        "created_at",
    ]
    list_filter = ["visibility", "mode", "locked", "provider"]
    search_fields = ["name", "title", "owner__username"]
    autocomplete_fields = ["owner"]
    list_select_related = ["owner"]
    readonly_fields = [
        "locked",
        "watch_key",
        "sessions_link",
        "turns_link",
        "knowledge_bases_link",
        "created_at",
        "updated_at",
    ]
    # Which bases its replies search changes through services.update_channel (the API's
    # PATCH knowledge_base_ids), which checks whose they are and tells every screen.
    exclude = ["knowledge_bases"]
    inlines = [MembershipInline]
    actions = ["lock", "unlock", "interrupt", "rotate_key"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Channel]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                turn_total=Count(
                    "sessions__turns",
                    filter=Q(sessions__status=Session.Status.ACTIVE, sessions__turns__hidden=False),
                )
            )
        )

    @admin.display(ordering="turn_total", description="turns (active session)")
    def turns(self, channel: Channel) -> int:
        return getattr(channel, "turn_total", 0)

    @admin.display(boolean=True, description="bot writing")
    def generating(self, channel: Channel) -> bool:
        return selectors.generating_flags([channel])[0]

    @admin.display(description="sessions")
    def sessions_link(self, channel: Channel) -> str:
        return changelist_link(Session, "sessions", channel__id__exact=channel.pk)

    @admin.display(description="turns")
    def turns_link(self, channel: Channel) -> str:
        return changelist_link(Turn, "all turns", session__channel__id__exact=channel.pk)

    @admin.display(description="knowledge bases")
    def knowledge_bases_link(self, channel: Channel) -> str:
        return changelist_link(KnowledgeBase, "bases it searches", attached_to__id__exact=channel.pk)

    # What the change form may change, and only through services.update_channel (which
    # validates, audits a lock, publishes channel_updated and rechecks access).
    SERVICE_FIELDS = (
        "title",
        "visibility",
        "mode",
        "framing",
        "params",
        "member_params",
        "instruction",
        *AGENT_FIELDS,
    )

    @staticmethod
    def agent_changes(cleaned: dict[str, Any], changed: list[str]) -> dict[str, Any]:
        """The tool and agent fields changed in the form, as the service takes them (the
        agent by name, an emptied list as [])."""
        changes = {name: cleaned[name] for name in AGENT_FIELDS if name in changed and name in cleaned}
        if "agent" in changes:
            changes["agent"] = changes["agent"].name if changes["agent"] else None
        for name in ("tools", "tools_requiring_approval"):
            if name in changes and changes[name] is None:
                changes[name] = []
        return changes

    def get_readonly_fields(self, request: HttpRequest, obj: Channel | None = None) -> list[str]:
        fixed = list(self.readonly_fields)
        # A new name or owner would change who may see it without any service: not here.
        return [*fixed, "name", "owner"] if obj is not None else fixed

    def get_form(self, request: HttpRequest, obj: Channel | None = None, change: bool = False, **kwargs: Any):  # type: ignore[no-untyped-def]
        form_class = super().get_form(request, obj, change=change, **kwargs)
        editing = obj

        class ChannelForm(form_class):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                cleaned: dict[str, Any] = super().clean()
                if editing is None:
                    return cleaned
                # The same validation as the API's, with the protocol's field errors.
                try:
                    if "framing" in cleaned:
                        merge_framing(editing.framing, cleaned["framing"] or {})
                    if "params" in cleaned:
                        merge_params(editing.params, cleaned["params"] or {})
                except SettingsInvalidError as exc:
                    for name, errors in exc.fields.items():
                        self.add_error(name if name in self.fields else None, str(errors))
                try:
                    if "member_params" in cleaned:
                        validate_member_params(cleaned["member_params"] or {})
                    if cleaned.get("instruction") is not None:
                        check_channel_instruction(editing, cleaned["instruction"].pk)
                    agent_changes = ChannelAdmin.agent_changes(cleaned, self.changed_data)
                    if agent_changes:
                        mode = {"mode": cleaned["mode"]} if "mode" in cleaned else {}
                        check_channel_agent_settings(channel=editing, changes={**agent_changes, **mode})
                except ServiceError as exc:
                    for name, errors in (exc.fields or {}).items():
                        self.add_error(name if name in self.fields else None, str(errors))
                return cleaned

        return ChannelForm

    def save_model(self, request: HttpRequest, obj: Channel, form: Any, change: bool) -> None:
        if not change:
            return super().save_model(request, obj, form, change)
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in self.SERVICE_FIELDS}
        if "instruction" in changes:  # the service takes the id, as the API sends it
            changes["instruction"] = changes["instruction"].pk if changes["instruction"] else None
        if "member_params" in changes:
            changes["member_params"] = changes["member_params"] or {}
        changes.update(self.agent_changes(form.cleaned_data, form.changed_data))
        others = [name for name in form.changed_data if name not in self.SERVICE_FIELDS]
        current = Channel.objects.get(pk=obj.pk)
        if changes:
            services.update_channel(channel=current, user=desk_user(request), changes=changes)
        if others:  # e.g. the provider: nothing on open screens depends on it
            for name in others:
                setattr(current, name, form.cleaned_data[name])
            current.save(update_fields=[*others, "updated_at"])

    def delete_model(self, request: HttpRequest, obj: Channel) -> None:
        self.delete_queryset(request, Channel.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        self.run_each(
            request,
            queryset,
            "Deleted",
            lambda c, _: services.delete_channel(channel=c, user=desk_user(request)),
        )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        # Members come and go through the services: a removed member of a private
        # channel loses their open sockets there at once.
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        channel = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for member_form in formset.forms:
            if not member_form.has_changed() and member_form.instance.pk is None:
                continue
            user = member_form.cleaned_data.get("user")
            if user is None:
                continue
            try:
                if member_form in formset.deleted_forms:
                    services.remove_member(actor=desk_user(request), channel=channel, user=user)
                    formset.deleted_objects.append(member_form.instance)
                elif member_form.instance.pk is None:
                    membership = services.add_member(actor=desk_user(request), channel=channel, user=user)
                    membership.role = member_form.cleaned_data.get("role") or membership.role
                    membership.save(update_fields=["role"])
                    formset.new_objects.append(membership)
                elif "user" in member_form.changed_data:
                    # Swapping the user of a membership would move access without the
                    # services: remove one member and add the other instead.
                    self.message_user(
                        request,
                        f"{member_form.instance.user}: remove the member and add the new one instead.",
                        messages.ERROR,
                    )
                elif member_form.has_changed():
                    formset.changed_objects.append((member_form.save(), member_form.changed_data))
            except ServiceError as error:
                self.message_user(request, f"{user}: {error.text}", messages.ERROR)

    lock = moderation_action(
        "Lock the selected channels",
        "Locked",
        lambda actor, c, why: services.set_locked(actor=actor, channel=c, locked=True, reason=why),
    )

    unlock = moderation_action(
        "Unlock the selected channels",
        "Unlocked",
        lambda actor, c, why: services.set_locked(actor=actor, channel=c, locked=False, reason=why),
    )

    interrupt = moderation_action(
        "Interrupt the reply being written",
        "Interrupt sent",
        lambda actor, c, why: services.interrupt_generation(actor=actor, channel=c, reason=why),
    )

    rotate_key = moderation_action(
        "Rotate the watch key (old links stop working)",
        "Watch keys rotated",
        lambda actor, c, why: services.rotate_watch_key(user=actor, channel=c, reason=why),
    )

    def has_delete_permission(self, request: HttpRequest, obj: Channel | None = None) -> bool:
        # Deleting a channel is for admins, or its owner (who may use the API).
        return bool(request.user.is_staff and super().has_delete_permission(request, obj))


@admin.register(Session)
class SessionAdmin(ModerationMixin, admin.ModelAdmin[Session]):
    list_display = [
        "id",
        "channel_link",
        "status",
        "started_by",
        "turn_count",
        "prompt_tokens",
        "completion_tokens",
        "created_at",
    ]
    list_filter = ["status", "channel"]
    search_fields = ["id", "title", "channel__name", "started_by__username"]
    readonly_fields = ["id", "channel_link", "turns_link", "created_at", "updated_at", "archived_at"]
    list_select_related = ["channel", "started_by"]
    actions = ["purge"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Session]:
        return super().get_queryset(request).annotate(turn_total=Count("turns"))

    @admin.display(ordering="turn_total", description="turns")
    def turn_count(self, session: Session) -> str:
        return changelist_link(Turn, str(getattr(session, "turn_total", 0)), session__id__exact=session.pk)

    @admin.display(ordering="channel__name", description="channel")
    def channel_link(self, session: Session) -> str:
        return admin_link(session.channel)

    @admin.display(description="turns")
    def turns_link(self, session: Session) -> str:
        return changelist_link(Turn, "turns of this session", session__id__exact=session.pk)

    def delete_model(self, request: HttpRequest, obj: Session) -> None:
        self.delete_queryset(request, Session.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        # The stock "Delete selected sessions" comes here: each goes through the service
        # (a fresh session for an active one, screens told, replay log dropped, audited).
        self.run_each(
            request,
            queryset.select_related("channel"),
            "Deleted",
            lambda session, _: services.delete_session(session=session, user=desk_user(request)),
        )

    purge = moderation_action(
        "Purge: delete every turn of the selected sessions",
        "Purged",
        lambda actor, s, why: services.purge_session(actor=actor, session=s, reason=why),
    )


@admin.register(Turn)
class TurnAdmin(ModerationMixin, admin.ModelAdmin[Turn]):
    list_display = [
        "id",
        "channel_link",
        "session_link",
        "role",
        "author",
        "short_text",
        "hidden",
        "finish_reason",
        "created_at",
    ]
    list_filter = ["role", "hidden", "finish_reason", "session__channel"]
    search_fields = ["text", "author__username"]
    list_select_related = ["session__channel", "author"]
    actions = ["hide", "unhide", "delete_for_good"]

    def get_readonly_fields(self, request: HttpRequest, obj: Turn | None = None) -> list[str]:
        # A turn is part of the record: it changes only through the actions.
        return [field.name for field in Turn._meta.fields] + ["channel_link", "session_link"]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced by delete_for_good (audited, live)
        return actions

    def delete_model(self, request: HttpRequest, obj: Turn) -> None:
        services.delete_turn(actor=desk_user(request), turn=obj)

    @admin.display(description="text")
    def short_text(self, turn: Turn) -> str:
        return turn.text[:80]

    @admin.display(ordering="session__channel__name", description="channel")
    def channel_link(self, turn: Turn) -> str:
        return admin_link(turn.session.channel)

    @admin.display(description="session")
    def session_link(self, turn: Turn) -> str:
        return admin_link(turn.session, str(turn.session_id)[:8])

    hide = moderation_action(
        "Hide the selected turns",
        "Hidden",
        lambda actor, t, why: services.hide_turn(actor=actor, turn=t, reason=why),
    )

    unhide = moderation_action(
        "Unhide the selected turns",
        "Shown again",
        lambda actor, t, why: services.unhide_turn(actor=actor, turn=t, reason=why),
    )

    delete_for_good = moderation_action(
        "Delete the selected turns for good",
        "Deleted",
        lambda actor, t, why: services.delete_turn(actor=actor, turn=t, reason=why),
        permission="delete",
    )


@admin.register(Membership)
class MembershipAdmin(ModerationMixin, admin.ModelAdmin[Membership]):
    list_display = ["user", "channel", "role", "muted", "created_at"]
    list_filter = ["role", "muted", "channel"]
    search_fields = ["user__username", "channel__name"]
    autocomplete_fields = ["user", "channel"]
    readonly_fields = ["muted", "created_at"]
    list_select_related = ["user", "channel"]
    actions = ["mute", "unmute"]

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> list[str]:
        # Whose membership, of which channel, is fixed: changing either would move
        # access without the services.
        return [*self.readonly_fields, "user", "channel"] if obj is not None else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)  # the role only
        membership = services.add_member(actor=desk_user(request), channel=obj.channel, user=obj.user)
        membership.role = obj.role
        membership.save(update_fields=["role"])
        obj.pk = membership.pk

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        self.delete_queryset(request, Membership.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        # The stock "Delete selected" comes here: removals go through the service.
        self.run_each(
            request,
            queryset.select_related("channel", "user"),
            "Removed",
            lambda m, _: services.remove_member(actor=desk_user(request), channel=m.channel, user=m.user),
        )

    mute = moderation_action(
        "Mute the selected users in their channel",
        "Muted",
        lambda actor, m, why: services.set_muted(
            actor=actor, channel=m.channel, user=m.user, muted=True, reason=why
        ),
    )

    unmute = moderation_action(
        "Unmute the selected users in their channel",
        "Unmuted",
        lambda actor, m, why: services.set_muted(
            actor=actor, channel=m.channel, user=m.user, muted=False, reason=why
        ),
    )


@admin.register(ModerationAction)
class ModerationActionAdmin(ReadOnlyAdmin, admin.ModelAdmin[ModerationAction]):
    """The audit log: read-only."""

    list_display = ["created_at", "actor", "action", "target_type", "target_id", "channel", "reason"]
    list_filter = ["action", "target_type", "channel"]
    search_fields = ["reason", "target_id", "actor__username"]
    list_select_related = ["actor", "channel"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    """Users' API tokens: seen (never their secrets, of which only a hash is kept) and
    revoked by deleting; made only by their users (the account page, /api/me/tokens)."""

    list_display = ["name", "user", "scope_list", "created_at", "last_used_at", "expires_at"]
    list_filter = ["created_at", "last_used_at", "expires_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "name"]
    fields = ["name", "user", "scope_list", "created_at", "last_used_at", "expires_at"]
    readonly_fields = ["name", "user", "scope_list", "created_at", "last_used_at", "expires_at"]

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiToken) -> str:
        return ", ".join(obj.scopes)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class KnowledgeDeskMixin:
    """Knowledge bases at the desk: read, and delete through the services (documents and
    passages go with them, channels using a base are told, a moderator's deletion is
    audited). Nothing is added or edited here: the API does that, with its checks."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(KnowledgeDeskMixin, ModerationMixin, admin.ModelAdmin[KnowledgeBase]):
    list_display = ["name", "owner", "channel", "embedder", "dims", "document_count", "created_at"]
    list_filter = ["embedder", "channel"]
    search_fields = ["name", "description", "owner__username", "channel__name"]
    list_select_related = ["owner", "channel"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeBase]:
        return super().get_queryset(request).annotate(document_total=Count("documents"))

    @admin.display(ordering="document_total", description="documents")
    def document_count(self, base: KnowledgeBase) -> str:
        return changelist_link(
            KnowledgeDocument, str(getattr(base, "document_total", 0)), knowledge_base__id__exact=base.pk
        )

    def delete_model(self, request: HttpRequest, obj: KnowledgeBase) -> None:
        self.delete_queryset(request, KnowledgeBase.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[KnowledgeBase]) -> None:
        self.run_each(
            request,
            queryset.select_related("owner", "channel"),
            "Deleted",
            lambda base, _: knowledge.delete_base(user=desk_user(request), base=base),
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A room's base: its owner or a moderator (the service decides per base); a
        # person's: only admins, at the desk.
        return permissions.is_moderator(request.user)


@admin.register(KnowledgeDocument)
class KnowledgeDocumentAdmin(KnowledgeDeskMixin, ModerationMixin, admin.ModelAdmin[KnowledgeDocument]):
    list_display = ["name", "knowledge_base", "status", "progress", "chunk_count", "error", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "knowledge_base__name"]
    list_select_related = ["knowledge_base"]
    exclude = ["text"]  # up to KB_MAX_TEXT_CHARS: not for a form

    def delete_model(self, request: HttpRequest, obj: KnowledgeDocument) -> None:
        self.delete_queryset(request, KnowledgeDocument.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[KnowledgeDocument]) -> None:
        self.run_each(
            request,
            queryset.select_related("knowledge_base__channel", "knowledge_base__owner"),
            "Deleted",
            lambda document, _: knowledge.delete_document(
                user=desk_user(request), base=document.knowledge_base, document=document
            ),
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return permissions.is_moderator(request.user)


@admin.register(KnowledgeChunk)
class KnowledgeChunkAdmin(KnowledgeDeskMixin, admin.ModelAdmin[KnowledgeChunk]):
    """Passages, to see what a citation pointed at; they go with their document."""

    list_display = ["id", "document", "knowledge_base", "generation", "ordinal", "page", "section"]
    list_filter = ["generation"]
    search_fields = ["text", "document__name"]
    list_select_related = ["document", "knowledge_base"]
    exclude = ["embedding"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Memory)
class MemoryAdmin(admin.ModelAdmin[Memory]):
    """Users' memories are their personal data and belong to no room: moderators, who
    look after rooms, neither see nor delete them; admins may read them and delete one
    (a person's request, unlawful content), audited without its text. Nothing is added
    or edited here: the owner does that on the account page."""

    list_display = ["user", "text", "origin", "created_at", "expires_at"]
    list_filter = ["origin"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    readonly_fields = ["user", "text", "origin", "source_turn", "created_at", "updated_at", "expires_at"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_staff)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_staff)

    def delete_model(self, request: HttpRequest, obj: Memory) -> None:
        self.delete_queryset(request, Memory.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Memory]) -> None:
        for found in queryset.select_related("user"):
            record(
                actor=desk_user(request),
                action="delete_memory",
                target=found,
                channel=None,
                user=found.user.get_username(),
                origin=found.origin,
            )
            found.delete()


admin.site.unregister(User)


@admin.register(User)
class ColloquyUserAdmin(ModerationMixin, UserAdmin[Any]):
    actions = ["ban", "unban"]
    list_display = ["username", "email", "is_active", "is_staff", "last_login", "date_joined"]

    def has_moderate_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("chat.ban_user") or request.user.is_staff)

    ban = moderation_action(
        "Ban the selected users (deactivate, end their logins and sockets)",
        "Banned",
        lambda actor, u, why: services.ban_user(actor=actor, user=u, reason=why),
    )

    unban = moderation_action(
        "Unban the selected users",
        "Unbanned",
        lambda actor, u, why: services.unban_user(actor=actor, user=u, reason=why),
    )


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def mcp_server_errors(
    cleaned: dict[str, Any], original: McpServer | None, superuser: bool
) -> list[tuple[str, str]]:
    """(field, error) of an MCP server's admin form (``original``: the row as it was, None
    when adding); ``cleaned`` is normalised in place."""
    errors: list[tuple[str, str]] = []
    transport = cleaned.get("transport")
    if transport == McpServer.Transport.STDIO:
        if not superuser:
            errors.append(
                ("transport", "Only a superuser may configure a stdio server: it runs a command here.")
            )
        command = cleaned.get("command")
        if not (isinstance(command, list) and command and all(isinstance(p, str) and p for p in command)):
            errors.append(
                ("command", 'A stdio server needs its command: a JSON list of strings, e.g. ["npx", "x"].')
            )
    elif transport == McpServer.Transport.HTTP:
        url = cleaned.get("url") or ""
        if not url:
            errors.append(("url", "An HTTP server needs its URL."))
        elif urlsplit(url).scheme not in ("http", "https"):
            errors.append(("url", "Only http and https URLs."))
    if cleaned.get("env_names") in (None, ""):
        cleaned["env_names"] = []
    env_names = cleaned["env_names"]
    if not (isinstance(env_names, list) and all(isinstance(n, str) and ENV_NAME.match(n) for n in env_names)):
        errors.append(("env_names", 'A JSON list of environment variable names, e.g. ["GITHUB_TOKEN"].'))
    token_env = cleaned.get("token_env") or ""
    if token_env and not ENV_NAME.match(token_env):
        errors.append(("token_env", "The name of an environment variable, e.g. MCP_TOKEN."))
    # Secrets follow the URL and the command: only a superuser may name them, or point a
    # server that has them somewhere else.
    before = original or McpServer()
    secrets_changed = (token_env, env_names) != (before.token_env, before.env_names)
    moved = (cleaned.get("url"), cleaned.get("command")) != (before.url, before.command)
    if not superuser and (secrets_changed or (moved and (token_env or env_names))):
        errors.append(
            (
                "token_env",
                "Only a superuser may name environment variables (secrets) for an MCP server, "
                "or change where a server that has them connects.",
            )
        )
    timeout = cleaned.get("timeout")
    if timeout is not None and not 0 < timeout <= 600:
        errors.append(("timeout", "Between 0 and 600 seconds."))
    return errors


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin[McpServer]):
    """MCP servers whose tools replies may call (chat/agents/mcp.py). A stdio server runs a
    command on this machine, so only a superuser may add or change one; and secrets are
    the process's environment variables, so only a superuser may name them (anyone
    else could send one to a URL of theirs)."""

    list_display = ["name", "transport", "url", "enabled", "timeout", "created_by"]
    list_filter = ["transport", "enabled"]
    search_fields = ["name", "url"]
    readonly_fields = ["created_by", "created_at", "tools"]
    formfield_overrides = {URLField: {"assume_scheme": "https"}}
    EDITABLE = ["name", "transport", "url", "command", "token_env", "env_names", "enabled", "timeout"]

    def get_fields(self, request: HttpRequest, obj: McpServer | None = None) -> Any:
        return [*self.EDITABLE, "created_by", "created_at", "tools"] if obj is not None else self.EDITABLE

    def has_change_permission(self, request: HttpRequest, obj: McpServer | None = None) -> bool:
        if obj is not None and obj.transport == McpServer.Transport.STDIO and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change=change, **kwargs)
        superuser = bool(request.user.is_superuser)

        class McpServerForm(form_class):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                cleaned: dict[str, Any] = super().clean()
                original = McpServer.objects.filter(pk=obj.pk).first() if obj is not None else None
                for name, error in mcp_server_errors(cleaned, original, superuser):
                    self.add_error(name, error)
                return cleaned

        return McpServerForm

    def save_model(self, request: HttpRequest, obj: McpServer, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = desk_user(request)
        super().save_model(request, obj, form, change)

    @admin.display(description="Tools (a fresh connection test)")
    def tools(self, obj: McpServer) -> str:
        # Imported here: the SDK is large, and the desk loads with every process.
        from chat.agents.mcp import LIST_TIMEOUT, McpConfig, McpUnavailableError, list_tools
        from chat.realtime import background

        if obj.pk is None:
            return "—"
        config = McpConfig.of(obj)  # here, not on the loop: the ORM is synchronous
        try:
            specs = background.run(list_tools(config, fresh=True), timeout=LIST_TIMEOUT + 5)
        except McpUnavailableError as exc:
            return format_html("<strong>{}</strong>", str(exc))
        except TimeoutError:
            return format_html("<strong>{}</strong>", f"unavailable: no answer within {LIST_TIMEOUT:g} s")
        if not specs:
            return "Connected; the server offers no tools."
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", "<li><code>{}</code> — {}</li>", ((s.name, s.description) for s in specs)),
        )
