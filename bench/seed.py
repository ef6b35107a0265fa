"""Test data written straight through the ORM, in bulk: sessions of hundreds of
thousands of turns and ten thousand channels would take minutes through the services,
one row and one event at a time. Called from the benchmark process, with Django set up,
outside its event loop (Django's ORM is synchronous)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

from django.contrib.auth import get_user_model

from chat.models import ApiToken, Channel, Membership, Session, Turn

# Words for turns' text; a turn takes them in a different order for each seed.
TEXT = "the model answers a question about tokens while watchers follow the stream of its reply"
WORDS = TEXT.split(" ")
BATCH = 2000


def sentence(seed: int, words: int) -> str:
    """``words`` words of plain English-looking text, different for each ``seed``."""
    return " ".join(WORDS[(seed + k * 7) % len(WORDS)] for k in range(words))


def prompt_chars(context_window: int, max_tokens: int = 256) -> int:
    """How much transcript a prompt holds at most: the window less the reply, at the
    four characters a token that chat/generation/prompt.py estimates."""
    return (context_window - max_tokens) * 4


def user(name: str) -> tuple[Any, str]:
    """A new user and their API token."""
    created = get_user_model().objects.create_user(name, password=secrets.token_urlsafe(12))
    return created, ApiToken.issue(created)


def exchanges(session: Session, author: Any, pairs: int, prompt_limit: int) -> Iterator[Turn]:
    """``pairs`` user/bot turns, finished. Each bot turn keeps a substrate as a real
    reply would: the transcript before it, cut to ``prompt_limit`` characters (0: none),
    since reads that load whole rows pay for it."""
    transcript = ""
    for i in range(pairs):
        question, answer = sentence(i, 30), sentence(i + 1, 60)
        yield Turn(session=session, role=Turn.Role.USER, author=author, text=question)
        prompt = ""
        if prompt_limit:
            transcript = (transcript + f"User: {question}\n\n")[-prompt_limit:]
            prompt = transcript + "Assistant: "
            transcript = (transcript + f"Assistant: {answer}\n\n")[-prompt_limit:]
        yield Turn(
            session=session,
            role=Turn.Role.BOT,
            text=answer,
            finish_reason=Turn.FinishReason.STOP,
            prompt=prompt,
            raw_completion=answer if prompt_limit else "",
            provider="stub",
            model="stub-1000-2",
            usage={"prompt_tokens": len(prompt) // 4, "completion_tokens": 60, "estimated": True},
            timings={"ttft_ms": 5, "duration_ms": 60},
        )


def conversation(channel: Channel, author: Any, turns: int, *, prompt_limit: int = 0) -> Session:
    """Fill the channel's active session with ``turns`` turns (user/bot pairs); returns it."""
    session = channel.active_session
    assert session is not None
    bulk(Turn, exchanges(session, author, turns // 2, prompt_limit))
    return session


def bulk(model: Any, rows: Iterator[Any]) -> None:
    """Insert ``rows`` in batches, so a hundred thousand stay quick and small in memory."""
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            model.objects.bulk_create(batch)
            batch = []
    if batch:
        model.objects.bulk_create(batch)


def private_channels(prefix: str, count: int, owner: Any) -> list[int]:
    """``count`` private channels of ``owner``, each as create_channel makes them (an
    active session, the owner's membership) with one exchange in it; their ids."""
    Channel.objects.bulk_create(
        Channel(name=f"{prefix}{i:05d}", title=f"{prefix} {i}", owner=owner, visibility="private")
        for i in range(count)
    )
    ids = list(Channel.objects.filter(name__startswith=prefix).order_by("name").values_list("pk", flat=True))
    bulk(Session, (Session(channel_id=pk, started_by=owner) for pk in ids))
    bulk(Membership, (Membership(user=owner, channel_id=pk, role=Membership.Role.OWNER) for pk in ids))
    sessions = Session.objects.filter(channel__name__startswith=prefix)
    bulk(Turn, (turn for session in sessions for turn in exchanges(session, owner, 1, 0)))
    return ids


def join(member: Any, channel_ids: list[int]) -> None:
    bulk(Membership, (Membership(user=member, channel_id=pk) for pk in channel_ids))


def hide_public() -> list[int]:
    """Make every public channel private, so that a user sees exactly the channels
    they belong to; returns their ids, for ``show`` to make them public again."""
    ids = list(Channel.objects.filter(visibility=Channel.Visibility.PUBLIC).values_list("pk", flat=True))
    Channel.objects.filter(pk__in=ids).update(visibility=Channel.Visibility.PRIVATE)
    return ids


def show(channel_ids: list[int]) -> None:
    Channel.objects.filter(pk__in=channel_ids).update(visibility=Channel.Visibility.PUBLIC)
