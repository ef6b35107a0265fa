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


# Daily upload bytes: refused when what was used today plus this file would pass the
# limit; counted only when it passes, in one step (parallel uploads cannot both slip in).
UPLOAD_BYTES_SCRIPT = """
local size, per_day = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if per_day > 0 and used + size > per_day then return -1 end
redis.call('INCRBY', KEYS[1], size)
redis.call('EXPIRE', KEYS[1], 172800)
return used + size
"""


def _upload_bytes_key(user: Any, now: datetime) -> str:
    return f"{settings.REDIS_PREFIX}:limits:{user.pk}:upload-bytes:{now:%Y%m%d}"


def check_and_count_upload(user: Any, size: int) -> None:
    """Count ``size`` bytes of uploads for the user today, or refuse (counting nothing)
    when DAILY_UPLOAD_BYTES would be passed."""
    now = datetime.now(UTC)
    used = int(
        sync_redis().eval(
            UPLOAD_BYTES_SCRIPT, 1, _upload_bytes_key(user, now), size, settings.DAILY_UPLOAD_BYTES
        )
    )
    if used < 0:
        raise ServiceError(
            "quota_exceeded",
            f"The daily upload limit DAILY_UPLOAD_BYTES ({settings.DAILY_UPLOAD_BYTES} bytes) would be "
            f"passed by this file ({size} bytes).",
            retry_after=_seconds_to_midnight(now),
        )


def refund_upload(user: Any, size: int) -> None:
    """Give back bytes counted for an upload that was not kept after all (a seed image
    whose message was then refused by the message limits)."""
    sync_redis().decrby(_upload_bytes_key(user, datetime.now(UTC)), size)


def upload_bytes_today(user: Any) -> int:
    return int(sync_redis().get(_upload_bytes_key(user, datetime.now(UTC))) or 0)
