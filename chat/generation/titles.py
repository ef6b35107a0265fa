"""Session titles: after a reply finishes in a session with no title, the task model
(chat/generation/tasks.py) writes one of 2–6 words in the conversation's language, in
the background; the offline demo takes the first words of the first message. A title a
person set, or one that appeared meanwhile, is never replaced."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from chat import services
from chat.errors import UNAVAILABLE
from chat.generation.providers.base import ProviderConfig, ProviderError
from chat.generation.tasks import complete, task_config
from chat.models import Session, Turn
from chat.realtime.async_db import db_call

log = logging.getLogger(__name__)

MAX_WORDS = 6
# What the task model reads of the conversation: its start says what it is about.
EXCERPT_CHARS = 1500
TITLE_TOKENS = 24
INSTRUCTION = (
    "Write a title of 2 to 6 words for the conversation below, in the language of the "
    "conversation. Answer with the title alone: no quotes, no final full stop."
)
WORD = re.compile(r"\w[\w'’-]*")

# A model or a store that failed: the next reply tries again.
OUTAGES: tuple[type[Exception], ...] = (ProviderError, *UNAVAILABLE)

# Titles being written, so that the loop keeps a reference to each task until it ends.
_writing: set[asyncio.Task[None]] = set()


@dataclass
class TitleJob:
    session_id: Any
    config: ProviderConfig
    first_message: str
    first_reply: str


def start(session_id: Any) -> None:
    """Write the session's title in the background if it has none (on the running
    loop; returns at once)."""
    task = asyncio.get_running_loop().create_task(write_title(session_id))
    _writing.add(task)
    task.add_done_callback(_writing.discard)


def title_job(session_id: Any) -> TitleJob | None:
    """What the title needs, or None when the session has one, is deleted, or has
    nothing to name."""
    session = Session.objects.select_related("channel").filter(pk=session_id).first()
    if session is None or session.title or session.title_by_person:
        return None
    if session.status == Session.Status.DELETED:  # no one but its managers reads it now
        return None
    turns = Turn.objects.filter(session=session, hidden=False).order_by("id")
    first = turns.exclude(role=Turn.Role.BOT).values_list("text", flat=True).first()
    reply = (
        turns.filter(role=Turn.Role.BOT, finish_reason__isnull=False).values_list("text", flat=True).first()
    )
    if not first:
        return None
    return TitleJob(session.pk, task_config(session.channel), first, reply or "")


def clean_title(text: str) -> str:
    """The model's answer as a title: its first line, without quotes, a "Title:" label
    or a final full stop, at most MAX_WORDS words."""
    line = next((part for part in text.strip().splitlines() if part.strip()), "")
    line = re.sub(r"^\s*(title|titre|titel|título)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = line.strip().strip("\"'“”‘’«»*#`").strip()
    words = line.split()[:MAX_WORDS]
    return " ".join(words).rstrip(".。!！:;,")[:200].strip()


def demo_title(first_message: str) -> str:
    """The offline demo's title: the first words of the first message."""
    words = WORD.findall(first_message)[:MAX_WORDS]
    title = " ".join(words)
    return title[:1].upper() + title[1:200]


async def model_title(job: TitleJob) -> str:
    if job.config.kind == "demo":
        return demo_title(job.first_message)
    conversation = f"User: {job.first_message[:EXCERPT_CHARS]}"
    if job.first_reply:
        conversation += f"\n\nAssistant: {job.first_reply[:EXCERPT_CHARS]}"
    pieces = [
        piece
        async for piece in complete(
            job.config, system=INSTRUCTION, user=conversation, max_tokens=TITLE_TOKENS
        )
    ]
    return clean_title("".join(pieces))


async def write_title(session_id: Any) -> None:
    """Title the session if it still has none; a failure leaves it for the next reply."""
    try:
        job = await db_call(title_job)(session_id)
        if job is None:
            return
        title = await model_title(job)
        if title:
            await db_call(services.save_generated_title)(session_id=session_id, title=title)
    except OUTAGES as exc:
        log.warning("no title for session %s this time: %s", session_id, exc)
    except Exception:
        log.exception("writing the title of session %s failed", session_id)
