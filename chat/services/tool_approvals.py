"""Approving or denying a tool call that waits for a person (a tool the channel or the
agent marks ``require_approval``). The reply waiting for it may run in any process: the
decision goes through Redis (a list per call, ``approval_key``), where the reply's
generation waits for it (chat/generation/generation.py)."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

from chat import permissions
from chat.agents import steps
from chat.errors import ServiceError
from chat.models import Channel, Session, Turn
from chat.realtime import store
from chat.services.conversation import check_can_write

CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def approval_key(channel_id: int, turn_id: int, call_id: str) -> str:
    return store.key(channel_id, f"approval:{turn_id}:{call_id}")


def decide_tool_call(*, channel: Channel, user: Any, call_id: Any, approve: bool) -> dict[str, Any]:
    """Approve or deny a call of the reply being written. Allowed to the author of the
    message it answers, and to whoever configures the channel (owner, moderators),
    while they may write in it."""
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise ServiceError(
            "invalid", "call_id must be the id of a tool call.", fields={"call_id": ["Expected a call id."]}
        )
    check_can_write(user, channel)
    turn = (
        Turn.objects.filter(
            session__channel=channel,
            session__status=Session.Status.ACTIVE,
            role=Turn.Role.BOT,
            finish_reason__isnull=True,
            hidden=False,
        )
        .order_by("-id")
        .first()
    )
    waiting = turn is not None and any(
        isinstance(step, dict) and step.get("call_id") == call_id and step.get("status") == steps.AWAITING
        for step in turn.steps or []
    )
    if turn is None or not waiting:
        raise ServiceError("not_found", "No tool call of this channel waits for approval with that call_id.")
    author_id = (
        Turn.objects.filter(session_id=turn.session_id, id__lt=turn.pk, hidden=False)
        .exclude(role=Turn.Role.BOT)
        .order_by("-id")
        .values_list("author_id", flat=True)
        .first()
    )
    if user.pk != author_id and not permissions.can_configure(user, channel):
        raise ServiceError(
            "forbidden", "Only the author of the message or the channel's owner can approve this tool call."
        )
    key = approval_key(channel.pk, turn.pk, call_id)
    client = store.sync_redis()
    decision = f"{'approve' if approve else 'deny'}:{user.get_username()}"
    client.rpush(key, decision)
    client.expire(key, int(settings.TOOL_APPROVAL_TIMEOUT) + 60)
    return {"call_id": call_id, "turn_id": turn.pk, "approved": approve}
