"""Message size, rate and quota limits, the same for every transport. Counted
atomically in Redis so that parallel requests cannot slip past a limit."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from chat.errors import ServiceError
from chat.realtime.store import sync_redis


def _seconds_to_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(int((tomorrow - now).total_seconds()), 1)


# Check every limit first and count only when all pass, in one step: a refused
# request uses up nothing, and parallel requests cannot slip past a limit.
CHECK_AND_COUNT_SCRIPT = """
local per_minute, per_day, tokens_a_day = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if per_minute > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= per_minute then return 1 end
if per_day > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= per_day then return 2 end
if tokens_a_day > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= tokens_a_day then return 3 end
if per_minute > 0 then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], 120)
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 172800)
return 0
"""


def check_and_count_message(user: Any) -> None:
    """Count one message (a post, an inject, a regenerate) for the user, or refuse it
    with a retry hint, counting nothing."""
    prefix = f"{settings.REDIS_PREFIX}:limits:{user.pk}"
    now = datetime.now(UTC)
    refused = int(
        sync_redis().eval(
            CHECK_AND_COUNT_SCRIPT,
            3,
            f"{prefix}:minute:{int(time.time() // 60)}",
            f"{prefix}:day:{now:%Y%m%d}",
            f"{prefix}:tokens:{now:%Y%m%d}",
            settings.MESSAGES_PER_MINUTE,
            settings.DAILY_MESSAGES,
            settings.DAILY_TOKENS,
        )
    )
    if refused == 1:
        retry = 60 - int(time.time() % 60)
        raise ServiceError(
            "rate_limited",
            f"At most {settings.MESSAGES_PER_MINUTE} messages a minute; try again in {retry} s.",
            retry_after=retry,
        )
    if refused == 2:
        raise ServiceError(
            "quota_exceeded",
            f"The daily limit of {settings.DAILY_MESSAGES} messages is reached.",
            retry_after=_seconds_to_midnight(now),
        )
    if refused == 3:
        raise ServiceError(
            "quota_exceeded",
            f"The daily limit of {settings.DAILY_TOKENS} tokens is reached.",
            retry_after=_seconds_to_midnight(now),
        )


def count_tokens(user_id: int, tokens: int) -> None:
    """Charge a reply's tokens to the user who asked for it."""
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
