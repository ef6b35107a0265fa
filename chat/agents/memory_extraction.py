"""Memories extracted after a session: when a session stops being active (a reset, or
archived or replaced through the sessions API; a deleted one is not read), a Celery
task asks the task model (chat/generation/tasks.py) for up to MAX_FACTS durable facts
about each person who wrote in it, and keeps the new ones (origin "extracted"; one the
person has already, in any case, is skipped).

Only people the session's replies could have remembered are read: memory on for them,
and the room personal to them or (owner's switch) shared with their consent
(memory.memory_scope). So nothing is extracted from a room its readers did not agree
to, and no task is queued for the many sessions that have no such writer.

The offline demo model has no understanding to lend: it keeps, deterministically, the
person's own sentences that say who they are ("My name is …", "I am …", "I'm …",
"I live in …"), rewritten about them ("bob's name is …", "bob is …").

Failures (no model, a model that answers no JSON list, the cap reached) are logged;
nothing reaches the person, whose reset went through long before."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from chat.agents import memory
from chat.errors import UNAVAILABLE, ServiceError
from chat.generation.providers.base import ProviderConfig, ProviderError
from chat.generation.tasks import complete, task_config
from chat.models import Channel, Session, Turn

log = logging.getLogger(__name__)

MAX_FACTS = 5
# What the model reads of the session: its end, where it stands now.
TRANSCRIPT_CHARS = 8000
FACTS_TOKENS = 400
INSTRUCTION = (
    "You keep a long-term memory about {name}. From the conversation below, list at most "
    "{count} durable facts about {name} that would help in later conversations (who they "
    "are, lasting preferences, circumstances, goals), each one short sentence naming them "
    "in the third person. Only facts {name} stated about themselves; nothing about others, "
    "nothing passing, nothing already obvious. Answer with a JSON list of strings only; "
    "[] when there is nothing worth keeping."
)
DEMO_PATTERNS = [
    (re.compile(r"^my name is\s+(.+)$", re.IGNORECASE), "{name}'s name is {rest}"),
    (re.compile(r"^i live in\s+(.+)$", re.IGNORECASE), "{name} lives in {rest}"),
    (re.compile(r"^(?:i am|i'm|i’m)\s+(.+)$", re.IGNORECASE), "{name} is {rest}"),
]
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# A model or a store that failed, or an answer with no list in it: no memories this time.
FAILURES: tuple[type[Exception], ...] = (ProviderError, ValueError, *UNAVAILABLE)


def enabled() -> bool:
    return bool(settings.MEMORY_EXTRACTION)


# --- when a session ends ----------------------------------------------------------------


def writers(session_id: Any) -> list[int]:
    """Who wrote (visible user turns) in the session, by id."""
    return sorted(
        set(
            Turn.objects.filter(
                session_id=session_id, role=Turn.Role.USER, hidden=False, author__isnull=False
            ).values_list("author_id", flat=True)
        )
    )


def rememberers(channel: Channel, session_id: Any) -> list[int]:
    """The session's writers whose memories its replies could use."""
    return [user_id for user_id in writers(session_id) if memory.memory_scope(channel, user_id)]


def sessions_ended(channel: Channel, session_ids: Iterable[Any]) -> None:
    """Called by the services that archive an active session, inside their transaction:
    queue the extraction of those with someone to remember, once the archive commits."""
    if not enabled():
        return
    wanted = [str(session_id) for session_id in session_ids if rememberers(channel, session_id)]
    if wanted:
        transaction.on_commit(lambda: enqueue(wanted))


def enqueue(session_ids: list[str]) -> None:
    for session_id in session_ids:
        try:
            extract_memories.delay(session_id)
        except Exception:  # the broker out of reach: these memories are not extracted
            log.exception("could not queue the memory extraction of session %s", session_id)


@shared_task(name="chat.agents.extract_memories")  # type: ignore[untyped-decorator]  # Celery is untyped
def extract_memories(session_id: str) -> None:
    """The worker's side; never raises."""
    try:
        extract(session_id)
    except Exception:
        log.exception("extracting memories from session %s failed", session_id)


# --- the work ------------------------------------------------------------------------------


@dataclass
class Job:
    user: Any
    transcript: str
    own_text: str  # what the user wrote, for the offline demo
    last_turn_id: int | None


def jobs(session: Session) -> list[Job]:
    users = get_user_model().objects.in_bulk(rememberers(session.channel, session.pk))
    turns = list(Turn.objects.filter(session=session, hidden=False).select_related("author").order_by("id"))
    lines = []
    for turn in turns:
        who = turn.author.get_username() if turn.role == Turn.Role.USER and turn.author else "Assistant"
        lines.append(f"{who}: {turn.text}")
    transcript = "\n\n".join(lines)[-TRANSCRIPT_CHARS:]
    found = []
    for user_id, user in users.items():
        if not user.is_active:
            continue
        own = [t for t in turns if t.role == Turn.Role.USER and t.author_id == user_id]
        found.append(Job(user, transcript, "\n".join(t.text for t in own), own[-1].pk if own else None))
    return found


def demo_facts(name: str, text: str) -> list[str]:
    """The offline demo's facts: the sentences that say who the person is."""
    facts = []
    for sentence in SENTENCE_END.split(text):
        sentence = sentence.strip().rstrip(".!?").strip()
        for pattern, template in DEMO_PATTERNS:
            matched = pattern.match(sentence)
            if matched:
                facts.append(template.format(name=name, rest=matched.group(1).strip()) + ".")
                break
    return facts[:MAX_FACTS]


def parse_facts(answer: str) -> list[str]:
    """The model's JSON list of strings (inside a code fence or prose too); ValueError
    when there is none."""
    start, end = answer.find("["), answer.rfind("]")
    if start < 0 or end < start:
        raise ValueError("no JSON list in the answer")
    found = json.loads(answer[start : end + 1])
    if not isinstance(found, list):
        raise ValueError("not a list")
    facts = [item.strip() for item in found if isinstance(item, str) and item.strip()]
    return [fact for fact in facts if len(fact) <= memory.TEXT_MAX][:MAX_FACTS]


async def model_facts(config: ProviderConfig, job: Job) -> list[str]:
    name = job.user.get_username()
    if config.kind == "demo":
        return demo_facts(name, job.own_text)
    system = INSTRUCTION.format(name=name, count=MAX_FACTS)
    pieces = [
        piece async for piece in complete(config, system=system, user=job.transcript, max_tokens=FACTS_TOKENS)
    ]
    return parse_facts("".join(pieces))


def extract(session_id: str) -> int:
    """Extract and keep the facts of one ended session; returns how many were new."""
    session = Session.objects.select_related("channel").filter(pk=session_id).first()
    if session is None or session.status == Session.Status.DELETED:
        return 0
    config = task_config(session.channel)
    saved = 0
    for job in jobs(session):
        try:
            facts = asyncio.run(model_facts(config, job))
        except FAILURES as exc:
            log.warning("no memories of user %s from session %s: %s", job.user.pk, session_id, exc)
            continue
        for fact in facts:
            try:
                _, new = memory.remember(
                    user=job.user, text=fact, origin="extracted", source_turn_id=job.last_turn_id
                )
            except ServiceError as error:  # the cap, mostly: the rest would fail alike
                log.info("memories of user %s not all kept: %s", job.user.pk, error.text)
                break
            saved += new
    return saved
