"""Named, reusable system prompts: each user manages their own here; shared ones (no
owner) are the admins', through the admin."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from chat.errors import ServiceError
from chat.models import Channel, Instruction
from chat.realtime.events import publish_on_commit

# Enough for any person's set of moods and roles; a script cannot fill the table.
MAX_INSTRUCTIONS_PER_USER = 100


def _check(name: Any = None, text: Any = None) -> None:
    for field, value in (("name", name), ("text", text)):
        if value is not None and not value.strip():
            raise ServiceError(
                "invalid", f"{field} must not be blank.", fields={field: ["This field may not be blank."]}
            )


def _taken() -> ServiceError:
    return ServiceError("invalid", "You have an instruction with this name.", fields={"name": ["Taken."]})


def create_instruction(*, user: User, name: str, text: str) -> Instruction:
    """A new instruction of the user's own."""
    _check(name, text)
    if Instruction.objects.filter(owner=user).count() >= MAX_INSTRUCTIONS_PER_USER:
        raise ServiceError(
            "invalid",
            f"You may keep at most {MAX_INSTRUCTIONS_PER_USER} instructions.",
            fields={"name": ["Too many instructions."]},
        )
    try:
        with transaction.atomic():
            return Instruction.objects.create(owner=user, name=name.strip(), text=text)
    except IntegrityError as exc:
        raise _taken() from exc


def check_own(user: User, instruction: Instruction) -> None:
    """Only its owner changes an instruction through the API; shared ones in the admin."""
    if instruction.owner_id != user.pk:
        raise ServiceError("forbidden", "Shared instructions are managed by the admins.")


def update_instruction(*, user: User, instruction: Instruction, changes: dict[str, Any]) -> Instruction:
    """Rename or rewrite one of the user's instructions."""
    check_own(user, instruction)
    _check(changes.get("name"), changes.get("text"))
    if "name" in changes:
        instruction.name = changes["name"].strip()
    if "text" in changes:
        instruction.text = changes["text"]
    try:
        with transaction.atomic():
            instruction.save()
    except IntegrityError as exc:
        raise _taken() from exc
    return instruction


def delete_instruction(*, user: User, instruction: Instruction) -> None:
    """Delete one of the user's instructions; channels and preferences using it fall
    back to none (replies already written keep its name), and the channels' screens are
    told."""
    from chat.services.channels import channel_settings_event  # channels imports choices

    check_own(user, instruction)
    with transaction.atomic():
        using = list(Channel.objects.select_for_update().filter(instruction=instruction))
        instruction.delete()
        for channel in using:
            channel.instruction_id = None
            publish_on_commit(channel.pk, channel.name, channel_settings_event(channel))
