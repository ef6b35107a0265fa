"""Failed logins are throttled per username and per client address.

Every password check goes through ``ThrottledModelBackend`` (the login page, the admin's
login page, HTTP basic on ``POST /api/me/token``). An attempt first takes a place in both
counters, in one Redis script, and is refused without looking at the password once a
counter is full: so parallel attempts, on any number of processes, get exactly the
allowed number of tries. A success gives its place back: the address keeps its failures,
the username's count starts again. A counter expires LOGIN_FAILURE_WINDOW seconds after
its last counted failure.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from chat.errors import ServiceError
from chat.realtime.store import sync_redis

# KEYS: the counters; ARGV: the window, then each counter's limit (0 = unlimited).
# Returns 0 when the attempt may go on (and is counted), else the seconds to wait.
RESERVE_SCRIPT = """
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  if limit > 0 and tonumber(redis.call('GET', key) or '0') >= limit then
    wait = math.max(wait, redis.call('TTL', key), 1)
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[1])
end
return 0
"""

# KEYS[1]: the username's counter, dropped; KEYS[2]: the address's, less this attempt
# (unless it expired meanwhile: a DECR would bring it back without an expiry).
SUCCESS_SCRIPT = """
redis.call('DEL', KEYS[1])
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DECR', KEYS[2]) end
"""


def _counters(username: str, request: Any) -> tuple[list[str], list[int]]:
    prefix = f"{settings.REDIS_PREFIX}:login"
    # Hashed: a username is whatever a client sends, of any length.
    keys = [f"{prefix}:user:{hashlib.sha256(username.encode()).hexdigest()}"]
    limits = [settings.LOGIN_FAILURES_PER_USER]
    address = request.META.get("REMOTE_ADDR") if request is not None else None
    if address:
        keys.append(f"{prefix}:address:{address}")
        limits.append(settings.LOGIN_FAILURES_PER_ADDRESS)
    return keys, limits


def reserve(username: str, request: Any) -> list[str]:
    """Count an attempt, or refuse it with ``rate_limited``; returns the counters."""
    keys, limits = _counters(username, request)
    wait = int(sync_redis().eval(RESERVE_SCRIPT, len(keys), *keys, settings.LOGIN_FAILURE_WINDOW, *limits))
    if wait:
        raise ServiceError(
            "rate_limited", f"Too many failed logins; try again in {wait} s.", retry_after=wait
        )
    return keys


class ThrottledModelBackend(ModelBackend):
    """Django's username and password check, throttled. Raises ServiceError
    (``rate_limited``) for a throttled attempt, whatever the password: the login forms
    show it as their error, the API answers 429."""

    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if username is None or password is None:
            return None  # not a password login
        keys = reserve(username, request)
        # No username holds a NUL, and PostgreSQL refuses one in a query (a 500).
        user = None if "\x00" in username else super().authenticate(request, username, password, **kwargs)
        if user is None:
            # Counted already; stop here rather than have the next backend check the
            # same password again.
            raise PermissionDenied
        sync_redis().eval(SUCCESS_SCRIPT, len(keys), *keys)
        return user
