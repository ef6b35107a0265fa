"""The verbs of knowledge bases. (H3 wrote ``check_message_bases`` only, per the shared
contract, for messages that name bases; the rest is H2's.)"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Q

from chat.errors import ServiceError
from chat.models import Channel, KnowledgeBase

# How many bases one message may name (chat/schemas.py refuses more).
MAX_MESSAGE_BASES = 20


def _refused(base_id: Any, why: str) -> ServiceError:
    text = f"Knowledge base {base_id} {why}"
    return ServiceError("invalid", text, fields={"knowledge_base_ids": [text]})


def check_message_bases(*, user: Any, channel: Channel, ids: Any) -> list[KnowledgeBase]:
    """The bases a message names in ``knowledge_base_ids``, in its order, each checked:
    the caller's own, or the channel's own or attached to it. Anything else (another
    person's base, another room's, none at all) is refused naming the id, in the same
    words whether it exists or not: a private room's base stays invisible. Reads only."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ServiceError(
            "invalid",
            "knowledge_base_ids must be a list of knowledge base ids.",
            fields={"knowledge_base_ids": ["Expected a list of strings."]},
        )
    if len(ids) > MAX_MESSAGE_BASES:
        text = f"At most {MAX_MESSAGE_BASES} knowledge bases a message."
        raise ServiceError("invalid", text, fields={"knowledge_base_ids": [text]})
    parsed: list[uuid.UUID] = []
    for raw in ids:
        try:
            parsed.append(uuid.UUID(raw))
        except ValueError:
            raise _refused(raw[:40], "is not a knowledge base id.") from None
        if parsed.count(parsed[-1]) > 1:
            raise _refused(raw, "is listed twice.")
    usable = Q(owner_id=user.pk) | Q(channel_id=channel.pk) | Q(attached_to=channel)
    found = {b.pk: b for b in KnowledgeBase.objects.filter(usable, pk__in=parsed).distinct()}
    for base_id in parsed:
        if base_id not in found:
            raise _refused(base_id, "does not exist or may not be used here.")
    return [found[base_id] for base_id in parsed]
