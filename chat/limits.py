"""Message size, rate and quota limits, the same for every transport. Counted
atomically in Redis so that parallel requests cannot slip past a limit."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from chat.errors import ServiceError
from chat.store import sync_redis


def _seconds_to_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(int((tomorrow - now).total_seconds()), 1)


def _count(key: str, ttl: int) -> int:
    pipe = sync_redis().pipeline()
    pipe.incr(key)
    pipe.expire(key, ttl)
    return int(pipe.execute()[0])


def check_and_count_message(user: Any) -> None:
    """Count one message for the user, or refuse it with a retry hint."""
    prefix = f"{settings.REDIS_PREFIX}:limits:{user.pk}"
    if settings.MESSAGES_PER_MINUTE:
        window = int(time.time() // 60)
        if _count(f"{prefix}:minute:{window}", 120) > settings.MESSAGES_PER_MINUTE:
            retry = 60 - int(time.time() % 60)
            raise ServiceError(
                "rate_limited",
                f"At most {settings.MESSAGES_PER_MINUTE} messages a minute; try again in {retry} s.",
                retry_after=retry,
            )
    now = datetime.now(UTC)
    sent_today = _count(f"{prefix}:day:{now:%Y%m%d}", 2 * 86400)
    if settings.DAILY_MESSAGES and sent_today > settings.DAILY_MESSAGES:
        raise ServiceError(
            "quota_exceeded",
            f"The daily limit of {settings.DAILY_MESSAGES} messages is reached.",
            retry_after=_seconds_to_midnight(now),
        )
    if settings.DAILY_TOKENS:
        used = int(sync_redis().get(f"{prefix}:tokens:{now:%Y%m%d}") or 0)
        if used >= settings.DAILY_TOKENS:
            raise ServiceError(
                "quota_exceeded",
                f"The daily limit of {settings.DAILY_TOKENS} tokens is reached.",
                retry_after=_seconds_to_midnight(now),
            )


def count_tokens(user_id: int, tokens: int) -> None:
    """Charge a reply's tokens to the user whose message it answered."""
    now = datetime.now(UTC)
    key = f"{settings.REDIS_PREFIX}:limits:{user_id}:tokens:{now:%Y%m%d}"
    pipe = sync_redis().pipeline()
    pipe.incrby(key, tokens)
    pipe.expire(key, 2 * 86400)
    pipe.execute()


def usage_today(user: Any) -> dict[str, int]:
    now = datetime.now(UTC)
    prefix = f"{settings.REDIS_PREFIX}:limits:{user.pk}"
    client = sync_redis()
    return {
        "messages": int(client.get(f"{prefix}:day:{now:%Y%m%d}") or 0),
        "tokens": int(client.get(f"{prefix}:tokens:{now:%Y%m%d}") or 0),
    }
