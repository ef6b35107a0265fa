"""The audit log: one record per moderation action (who, what, target, why, when)."""

from __future__ import annotations

from typing import Any

from chat.models import Channel, ModerationAction


def record(
    *,
    actor: Any,
    action: str,
    target: Any,
    channel: Channel | None,
    reason: str = "",
    **details: Any,
) -> ModerationAction:
    """Write the audit record of one action."""
    return ModerationAction.objects.create(
        actor=actor if actor and actor.is_authenticated else None,
        action=action,
        target_type=type(target).__name__.lower(),
        target_id=str(target.pk),
        channel=channel,
        reason=reason or "",
        details=details,
    )
