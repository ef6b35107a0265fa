"""Compaction (issue 17): when a reply's prompt passed COMPACT_AT of its context
window, the task model (chat/generation/tasks.py) summarises the session's older turns
into a Checkpoint, in the background after the reply (like chat/generation/titles.py),
and every screen hears ``compacted``. Later prompts are the checkpoint's summary and the
turns after it (chat/agents/checkpoints.py); drop-oldest stays the fallback.

What is summarised: the visible, finished turns after the previous checkpoint, except
the newest ones kept word for word (those within a third of the token budget of the
channel's model, and at least the last exchange). The previous checkpoint's summary is given to the
model as the start of what it summarises, so the newest checkpoint alone covers every
turn before it. Whole turns only: a tool call and its result live in one bot turn, so
they are never split. Only a turn's text is read (not its tool results, which may be
someone's personal data, nor its files). The offline demo writes the previous summary
and then the first sentence of each turn, so compaction works with no model at all.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from chat.agents.checkpoints import latest
from chat.errors import UNAVAILABLE
from chat.framing import effective_params
from chat.generation.prompt import estimate_tokens
from chat.generation.providers.base import ProviderConfig, ProviderError
from chat.generation.records import provider_chain
from chat.generation.tasks import complete, task_config
from chat.models import Checkpoint, Session, Turn
from chat.realtime import events, store
from chat.realtime.async_db import db_call

__all__ = ["compact", "latest", "needs_compaction", "start"]

log = logging.getLogger(__name__)

# Kept word for word: the newest turns within this share of the reply's token budget...
KEPT_SHARE = 1 / 3
# ...and never fewer than the last exchange, however long it is.
MIN_KEPT = 2
# Turns looked at, newest first: a prompt never held more (drop-oldest and the page
# size of records.recent_turns), and a summary of what no prompt held would be news.
MAX_READ = 1000
# The summary's length: at most this, and at most a quarter of the task model's window.
SUMMARY_TOKENS = 1024
# The task model's answer, and room for its instruction, beside what it reads.
MARGIN_TOKENS = 64
# One compaction per session at a time, in every process; a crashed one frees it then.
LOCK_SECONDS = 300
DEMO_SENTENCE_CHARS = 200
INSTRUCTION = (
    "Summarise the conversation below for whoever continues it: they will not see these "
    "turns again. Keep what will matter later: facts, names, numbers, decisions, requests, "
    "open questions, and each person's preferences. When a summary so far is given, begin "
    "from it, so that yours covers everything. Write in the language of the conversation, "
    "in at most about 300 words. Answer with the summary alone."
)
SENTENCE = re.compile(r"(.+?[.!?…。！？])(?:\s|$)", re.DOTALL)
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

# A model or a store that failed: the next long prompt tries again.
OUTAGES: tuple[type[Exception], ...] = (ProviderError, *UNAVAILABLE)

# Compactions running, so that the loop keeps a reference to each task until it ends.
_running: set[asyncio.Task[Any]] = set()


@dataclass
class Job:
    session_id: Any
    channel_id: int
    channel_name: str
    config: ProviderConfig
    previous_id: int | None
    previous_summary: str
    previous_turns: int
    summary_tokens: int = SUMMARY_TOKENS
    # (turn id, who spoke, text), oldest first: what the new checkpoint summarises.
    turns: list[tuple[int, str, str]] = field(default_factory=list)


def needs_compaction(built_prompt_tokens: int, context_window: int) -> bool:
    """Whether a prompt of that size passed COMPACT_AT of the window it was built for
    (COMPACT_AT 0: never)."""
    share = float(settings.COMPACT_AT)
    return share > 0 and context_window > 0 and built_prompt_tokens > share * context_window


def start(session_id: Any, channel_id: int, channel_name: str, upto_turn_id: int) -> None:
    """Compact the session in the background, from the turn ``upto_turn_id`` back (on
    the running loop; returns at once)."""
    coro = compact(session_id, channel_id, channel_name, upto_turn_id)
    task = asyncio.get_running_loop().create_task(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)


async def compact(
    session_id: Any, channel_id: int, channel_name: str, upto_turn_id: int
) -> dict[str, Any] | None:
    """Write the session's next checkpoint and announce it; returns it (a protocol
    Checkpoint object), or None when there was nothing to summarise, another compaction
    of the session was running, or a failure left it for the next long prompt."""
    lock = f"{settings.REDIS_PREFIX}:compaction:{session_id}"
    token = uuid.uuid4().hex
    try:
        redis = store.async_redis()
        if not await redis.set(lock, token, nx=True, ex=LOCK_SECONDS):
            return None  # another process (or task) is summarising this session
        try:
            job = await db_call(compaction_job)(session_id, channel_id, channel_name, upto_turn_id)
            if job is None:
                return None
            summary = await summarise(job)
            if not summary:
                return None
            return await db_call(save)(job, summary)
        finally:
            await redis.eval(RELEASE, 1, lock, token)
    except OUTAGES as exc:
        log.warning("no compaction of session %s this time: %s", session_id, exc)
    except Exception:
        log.exception("compacting session %s failed", session_id)
    return None


def speaker(role: str, username: str | None) -> str:
    if role == Turn.Role.BOT:
        return "assistant"
    if role == Turn.Role.AGENT:
        return f"agent {username}" if username else "agent"
    return username or "user"


def compaction_job(session_id: Any, channel_id: int, channel_name: str, upto_turn_id: int) -> Job | None:
    """What the next checkpoint summarises, or None when nothing is left to (every
    older turn is covered already, or kept word for word) or the session is no longer
    its channel's active one (no prompt will read it)."""
    session = Session.objects.select_related("channel").filter(pk=session_id).first()
    if session is None or session.status != Session.Status.ACTIVE:
        return None
    channel = session.channel
    params = effective_params(channel.params)
    # The channel's own model's window: the prompt that grew long was built for it.
    budget = provider_chain(channel, params)[0].context_window - int(params["max_tokens"])
    previous = latest(session.pk)
    rows = list(
        Turn.objects.filter(session=session, hidden=False, id__lte=upto_turn_id)
        .filter(id__gt=previous.through_turn_id if previous else 0)
        .exclude(role=Turn.Role.BOT, finish_reason__isnull=True)  # a reply still being written
        .order_by("-id")
        .values_list("id", "role", "text", "author__username")[:MAX_READ]
    )
    # Newest first: the kept ones, then the older ones a prompt could hold.
    read: list[tuple[int, str, str]] = []
    kept, total = 0, 0
    for turn_id, role, text, username in rows:
        total += estimate_tokens(text)
        if total > max(budget, 1) and read:
            break
        if kept < MIN_KEPT or (total <= budget * KEPT_SHARE and kept == len(read)):
            kept += 1
        read.append((turn_id, speaker(role, username), text))
    older = read[kept:][::-1]
    if not older:
        return None
    config = task_config(channel)
    summary = previous.summary if previous else ""
    answer = min(SUMMARY_TOKENS, config.context_window // 4)
    room = config.context_window - answer - MARGIN_TOKENS - estimate_tokens(INSTRUCTION + summary)
    if config.kind == "demo":  # reads nothing: every turn fits
        room = sum(estimate_tokens(line(who, text)) + 1 for _, who, text in older)
    return Job(
        session_id=session.pk,
        channel_id=channel_id,
        channel_name=channel_name,
        config=config,
        previous_id=previous.pk if previous else None,
        previous_summary=summary,
        previous_turns=previous.turns if previous else 0,
        summary_tokens=answer,
        turns=fitting(older, room),
    )


def fitting(turns: list[tuple[int, str, str]], room: int) -> list[tuple[int, str, str]]:
    """The oldest turns whose lines fit in ``room`` tokens of the task model's window
    (the others wait for the next compaction); the first one cut to fit if it alone
    does not."""
    taken: list[tuple[int, str, str]] = []
    for turn_id, who, text in turns:
        room -= estimate_tokens(line(who, text)) + 1
        if room < 0:
            if not taken:
                cut = max(0, len(text) + room * 4)
                taken.append((turn_id, who, text[:cut]))
            break
        taken.append((turn_id, who, text))
    return taken


def line(who: str, text: str) -> str:
    return f"{who}: {text}"


def demo_summary(job: Job) -> str:
    """The offline demo's summary: the previous one, then the first sentence of each
    turn, one line each."""
    lines = [job.previous_summary] if job.previous_summary else []
    for _, who, text in job.turns:
        flat = " ".join(text.split())
        found = SENTENCE.match(flat)
        sentence = (found.group(1) if found else flat)[:DEMO_SENTENCE_CHARS]
        lines.append(f"- {who}: {sentence}")
    return "\n".join(lines)


async def summarise(job: Job) -> str:
    if job.config.kind == "demo":
        return demo_summary(job)
    parts = [f"Summary so far:\n{job.previous_summary}"] if job.previous_summary else []
    parts.append("Conversation:\n" + "\n\n".join(line(who, text) for _, who, text in job.turns))
    pieces = [
        piece
        async for piece in complete(
            job.config, system=INSTRUCTION, user="\n\n".join(parts), max_tokens=job.summary_tokens
        )
    ]
    return "".join(pieces).strip()


def save(job: Job, summary: str) -> dict[str, Any] | None:
    """Store the checkpoint and announce it, unless the session moved on meanwhile:
    another checkpoint was written or dropped, one of its turns was hidden or deleted,
    or the session left. Announced before the commit, with the session's row locked:
    a turn hidden meanwhile drops the checkpoint only after it (checkpoints.drop_covering
    waits for the lock), so its ``turn_removed`` always follows ``compacted`` and every
    screen drops the summary again."""
    ids = [turn_id for turn_id, _, _ in job.turns]
    with transaction.atomic():
        session = Session.objects.select_for_update().filter(pk=job.session_id).first()
        if session is None or session.status != Session.Status.ACTIVE:
            return None
        newest = latest(session.pk)
        if (newest.pk if newest else None) != job.previous_id:
            return None
        if Turn.objects.filter(pk__in=ids, hidden=False).count() != len(ids):
            return None
        checkpoint = Checkpoint.objects.create(
            session=session,
            through_turn_id=ids[-1],
            summary=summary,
            turns=job.previous_turns + len(ids),
            provider=job.config.name,
            model=job.config.model_label,
        )
        events.publish(job.channel_id, job.channel_name, events.compacted_event(checkpoint))
        return checkpoint.to_dict()
