"""Checkpoints as the rest of the site reads them (issue 17): the newest one for a
reply's prompt, the ones shown folded beside a transcript, and dropping those that
summarised a turn which has since left the transcript. Writing one (the task model's
summary) is chat/agents/compaction.py; this module needs no model, so the prompt's
reader (chat/generation/records.py) and the services import it freely."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chat.generation.prompt import estimate_tokens
from chat.models import Checkpoint, Session, Turn

HEADING = "Summary of the earlier conversation:"


@dataclass(frozen=True)
class PromptCheckpoint:
    """What a prompt takes from the newest checkpoint: the turns after
    ``through_turn_id``, and the summary of everything up to it. None: no checkpoint."""

    through_turn_id: int | None = None
    summary: str = ""

    @property
    def block(self) -> str:
        return f"{HEADING}\n{self.summary}" if self.summary else ""

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.block) + 1 if self.summary else 0

    def instruction(self, text: str) -> str:
        """The reply's instruction with the summary after it: the prompt puts the
        instruction first and never drops it (chat/generation/prompt.py), so the
        summary outlives any turn that drop-oldest must still leave out."""
        if not self.summary:
            return text
        return f"{text.strip()}\n\n{self.block}" if text.strip() else self.block


NO_CHECKPOINT = PromptCheckpoint()


def latest(session_id: Any) -> Checkpoint | None:
    """The session's newest checkpoint (it covers every turn up to its own)."""
    return Checkpoint.objects.filter(session_id=session_id).order_by("-through_turn_id", "-id").first()


def for_prompt(session_id: Any) -> PromptCheckpoint:
    """The checkpoint a reply's prompt starts from. None when no visible turn follows it
    (a moderator hid them all): the prompt is then built from the turns as before."""
    checkpoint = latest(session_id)
    if checkpoint is None:
        return NO_CHECKPOINT
    after = Turn.objects.filter(session_id=session_id, hidden=False, id__gt=checkpoint.through_turn_id)
    if not after.exists():
        return NO_CHECKPOINT
    return PromptCheckpoint(checkpoint.through_turn_id, checkpoint.summary)


def for_transcript(
    session_id: Any, *, from_turn_id: int | None = None, before_turn_id: int | None = None
) -> list[dict[str, Any]]:
    """The protocol's Checkpoint objects placed among a stretch of turns (each after its
    ``through_turn_id``): from the turn ``from_turn_id`` on, before ``before_turn_id``;
    None leaves that side open. Oldest first."""
    rows = Checkpoint.objects.filter(session_id=session_id)
    if from_turn_id is not None:
        rows = rows.filter(through_turn_id__gte=from_turn_id)
    if before_turn_id is not None:
        rows = rows.filter(through_turn_id__lt=before_turn_id)
    return [checkpoint.to_dict() for checkpoint in rows.order_by("through_turn_id", "id")]


def drop_covering(session_id: Any, turn_id: int) -> int:
    """Delete the checkpoints that summarise the turn ``turn_id`` (each covers every turn
    up to its ``through_turn_id``), because it is being hidden or deleted: no prompt and
    no transcript may serve its text through a summary. Call it in the transaction that
    takes the turn away. The session's row is locked first: a checkpoint being saved
    locks it too and checks its turns are still visible (compaction.save), so one of the
    two always sees the other. Returns how many went."""
    list(Session.objects.select_for_update().filter(pk=session_id).values_list("pk"))
    deleted, _ = Checkpoint.objects.filter(session_id=session_id, through_turn_id__gte=turn_id).delete()
    return deleted
