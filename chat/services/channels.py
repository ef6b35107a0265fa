"""Creating channels and changing their settings."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from chat import permissions, selectors
from chat.agents.policy import AGENT_FIELDS, check_channel_agent_settings
from chat.choices import usable_instruction, validate_member_params
from chat.errors import ServiceError
from chat.framing import (
    SettingsInvalidError,
    effective_framing,
    effective_params,
    merge_framing,
    merge_params,
)
from chat.models import Channel, Membership, Session, Upload, channel_name_validator, new_watch_key
from chat.realtime import events
from chat.realtime.events import publish_on_commit
from chat.services.audit import record


def channel_settings_event(channel: Channel) -> events.ChannelUpdatedEvent:
    return events.channel_updated_event(
        framing=effective_framing(channel.framing),
        params=effective_params(channel.params),
        member_params=channel.member_params or {},
        instruction=channel.instruction_id,
        locked=channel.locked,
        visibility=channel.visibility,
        knowledge_base_ids=selectors.attached_ids(channel),
        **selectors.agent_settings(channel),
    )


def create_channel(
    *,
    name: str,
    owner: Any,
    title: str = "",
    visibility: str = "public",
    mode: str = "chat",
    framing: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Channel:
    """Open a channel with its first session; the creator owns it."""
    try:
        channel_name_validator(name)
    except ValidationError as exc:
        raise ServiceError("invalid", exc.messages[0], fields={"name": exc.messages}) from exc
    if visibility not in Channel.Visibility.values:
        raise ServiceError(
            "invalid", "visibility must be public or private", fields={"visibility": ["Invalid."]}
        )
    if mode not in Channel.Mode.values:
        raise ServiceError("invalid", "mode must be chat or completion", fields={"mode": ["Invalid."]})
    try:
        clean_framing = merge_framing({}, framing or {})
        clean_params = merge_params({}, params or {})
    except SettingsInvalidError as exc:
        raise ServiceError("invalid", "Invalid framing or params.", fields=exc.fields) from exc
    try:
        with transaction.atomic():
            channel = Channel.objects.create(
                name=name,
                title=title or name,
                owner=owner if owner and owner.is_authenticated else None,
                visibility=visibility,
                mode=mode,
                framing=clean_framing,
                params=clean_params,
            )
            Session.objects.create(channel=channel, started_by=channel.owner)
            if channel.owner:
                Membership.objects.create(user=channel.owner, channel=channel, role=Membership.Role.OWNER)
    except IntegrityError as exc:
        raise ServiceError(
            "invalid", "A channel with this name exists.", fields={"name": ["Taken."]}
        ) from exc
    return channel


def check_channel_settings(
    *, channel: Channel, user: Any, framing: Any = None, params: Any = None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The channel's framing and params with the changes applied, or a refusal (owner
    or moderator only; invalid values). None when nothing is to change."""
    if framing is None and params is None:
        return None
    if not permissions.can_configure(user, channel):
        raise ServiceError("forbidden", "Only the channel owner or a moderator can change its settings.")
    try:
        new_framing = merge_framing(channel.framing, framing) if framing is not None else channel.framing
        new_params = merge_params(channel.params, params) if params is not None else channel.params
    except SettingsInvalidError as exc:
        raise ServiceError("invalid", "Invalid framing or params.", fields=exc.fields) from exc
    return new_framing, new_params


def update_channel_settings(
    *, channel: Channel, user: Any, framing: Any = None, params: Any = None
) -> Channel:
    """Validate and save new framing/params (owner or moderator) and tell every screen."""
    checked = check_channel_settings(channel=channel, user=user, framing=framing, params=params)
    return save_channel_settings(channel=channel, checked=checked)


def save_channel_settings(
    *, channel: Channel, checked: tuple[dict[str, Any], dict[str, Any]] | None
) -> Channel:
    """Save what check_channel_settings returned (nothing when it returned None) and tell
    every screen; for callers that check before they count or interrupt."""
    if checked is None:
        return channel
    new_framing, new_params = checked
    with transaction.atomic():
        channel.framing, channel.params = new_framing, new_params
        channel.save(update_fields=["framing", "params", "updated_at"])
        publish_on_commit(channel.pk, channel.name, channel_settings_event(channel))
    return channel


def lock_held_by_moderator(channel: Channel) -> bool:
    """Was the channel's current lock set by a moderator? Then only a moderator lifts it."""
    from chat.models import ModerationAction

    last = (
        ModerationAction.objects.filter(channel=channel, action__in=["lock_channel", "unlock_channel"])
        .select_related("actor")
        .order_by("-created_at", "-id")
        .first()
    )
    return bool(
        last and last.action == "lock_channel" and last.actor and permissions.is_moderator(last.actor)
    )


def change_lock(*, actor: User, channel: Channel, locked: bool, reason: str = "") -> None:
    """Lock or unlock, audited, whoever does it (owner or moderator); every screen is
    told. A lock set by a moderator may be lifted only by a moderator."""
    if not locked and not permissions.is_moderator(actor) and lock_held_by_moderator(channel):
        raise ServiceError("forbidden", "A moderator locked this channel; only a moderator can unlock it.")
    with transaction.atomic():
        Channel.objects.filter(pk=channel.pk).update(locked=locked)
        channel.locked = locked
        record(
            actor=actor,
            action="lock_channel" if locked else "unlock_channel",
            target=channel,
            channel=channel,
            reason=reason,
        )
        publish_on_commit(channel.pk, channel.name, channel_settings_event(channel))


# What update_channel writes as given (checked first); locked, framing and params have
# paths of their own.
CHANGEABLE = ("title", "visibility", "mode", "member_params", "instruction")


def check_channel_instruction(channel: Channel, instruction_id: Any) -> None:
    """A channel's instruction must be shared or its owner's own (members see it applied
    to every reply: it may not be a stranger's)."""
    if instruction_id is None:
        return
    if not isinstance(instruction_id, int) or isinstance(instruction_id, bool):
        raise ServiceError(
            "invalid", "instruction must be an id or null.", fields={"instruction": ["Expected an integer."]}
        )
    if usable_instruction(channel.owner, instruction_id) is None:
        raise ServiceError(
            "invalid",
            "No such instruction: a channel takes a shared one or its owner's own.",
            fields={"instruction": ["No such instruction."]},
        )


def update_channel(*, channel: Channel, user: User, changes: dict[str, Any], reason: str = "") -> Channel:
    """Change title, visibility, mode, lock, framing, params, member_params,
    instruction, the knowledge bases its replies search (``knowledge_base_ids``:
    chat.knowledge.services.check_channel_bases), or its tools and agent (AGENT_FIELDS:
    chat.agents.policy.check_channel_agent_settings) (owner or moderator), from the API
    and the admin alike, with one ``channel_updated``. A lock change is audited
    (change_lock)."""
    if not permissions.can_configure(user, channel):
        raise ServiceError("forbidden", "Only the channel owner or a moderator can change it.")
    known = {*CHANGEABLE, *AGENT_FIELDS, "locked", "framing", "params", "knowledge_base_ids"}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ServiceError("invalid", "Unknown fields.", fields={k: ["Unknown field."] for k in unknown})
    if "visibility" in changes and changes["visibility"] not in Channel.Visibility.values:
        raise ServiceError(
            "invalid", "visibility must be public or private", fields={"visibility": ["Invalid."]}
        )
    if "locked" in changes and not isinstance(changes["locked"], bool):
        raise ServiceError(
            "invalid", "locked must be true or false", fields={"locked": ["Expected a boolean."]}
        )
    if "title" in changes and (not isinstance(changes["title"], str) or len(changes["title"]) > 200):
        raise ServiceError(
            "invalid", "title must be a string of at most 200 characters", fields={"title": ["Invalid."]}
        )
    if "mode" in changes and changes["mode"] not in Channel.Mode.values:
        raise ServiceError("invalid", "mode must be chat or completion", fields={"mode": ["Invalid."]})
    member_params = validate_member_params(changes["member_params"]) if "member_params" in changes else None
    if "instruction" in changes:
        check_channel_instruction(channel, changes["instruction"])
    bases = None
    if "knowledge_base_ids" in changes:
        # late: the knowledge services build on this module (channel_settings_event)
        from chat.knowledge.services import check_channel_bases

        bases = check_channel_bases(user=user, channel=channel, ids=changes["knowledge_base_ids"])
    agent_fields = check_channel_agent_settings(channel=channel, changes=changes)
    checked = check_channel_settings(
        channel=channel, user=user, framing=changes.get("framing"), params=changes.get("params")
    )
    framing, params = checked or (channel.framing, channel.params)
    lock = changes.get("locked")
    with transaction.atomic():
        if lock is not None and lock != channel.locked:
            change_lock(actor=user, channel=channel, locked=lock, reason=reason)
        visibility_changed = changes.get("visibility", channel.visibility) != channel.visibility
        channel.framing, channel.params = framing, params
        if member_params is not None:
            channel.member_params = member_params
        if "instruction" in changes:
            channel.instruction_id = changes["instruction"]
        for name in ("title", "visibility", "mode"):
            if name in changes:
                setattr(channel, name, changes[name])
        for name, value in agent_fields.items():
            setattr(channel, name, value)
        channel.save(update_fields=["framing", "params", *CHANGEABLE, *AGENT_FIELDS, "updated_at"])
        if bases is not None:
            channel.knowledge_bases.set(bases)
        publish_on_commit(channel.pk, channel.name, channel_settings_event(channel))
        if visibility_changed:
            events.access_changed_on_commit(channel.pk)
    return channel


def delete_channel(*, channel: Channel, user: User) -> None:
    """Delete a channel with its sessions and turns, and its uploads (sent or not) with
    their stored files (owner or admin)."""
    # late: the uploads service builds on the conversation service, which builds on this module
    from chat.uploads.services import delete_uploads

    if not (user and user.is_authenticated and (permissions.is_admin(user) or channel.owner_id == user.pk)):
        raise ServiceError("forbidden", "Only the owner or an admin can delete a channel.")
    with transaction.atomic():
        # Upload.channel is CASCADE: the rows would go, and their files stay behind.
        delete_uploads(Upload.objects.filter(channel=channel))
        channel.delete()


def rotate_watch_key(*, channel: Channel, user: User, reason: str = "") -> str:
    """Issue a new watch key; links and watch sockets using the old one stop working.
    Audited like a moderation action, whether the owner or a moderator rotates it."""
    if not permissions.can_configure(user, channel):
        raise ServiceError("forbidden", "Only the channel owner or a moderator can rotate the watch key.")
    with transaction.atomic():
        channel.watch_key = new_watch_key()
        channel.save(update_fields=["watch_key", "updated_at"])
        record(actor=user, action="rotate_watch_key", target=channel, channel=channel, reason=reason)
        # Watch connections let in with the old key close (4003) in every process.
        events.access_changed_on_commit(channel.pk)
    return channel.watch_key
