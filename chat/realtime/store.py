"""The Redis side of a channel: sequence numbers, the replay buffer, the text of the
generation in progress, the generation lock. Keys carry a hash tag per channel so they
stay together on a Redis cluster.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import redis
import redis.asyncio as aredis
from django.conf import settings

_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()
_async_clients: dict[asyncio.AbstractEventLoop, aredis.Redis] = {}


def sync_redis() -> Any:  # redis-py types every reply as "value or awaitable"
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            _sync_client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        return _sync_client


def async_redis() -> Any:
    """A client bound to the running loop (redis.asyncio clients cannot cross loops)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = aredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        _async_clients[loop] = client
    return client


def key(channel_id: int, name: str) -> str:
    return f"{settings.REDIS_PREFIX}:{{ch{channel_id}}}:{name}"


def channel_keys(channel_id: int) -> list[str]:
    """seq, log, gen_turn, gen_text, gen_reasoning: the keys the scripts below use."""
    return [key(channel_id, k) for k in ("seq", "log", "gen_turn", "gen_text", "gen_reasoning")]


def global_keys() -> list[str]:
    """access, epoch: the two keys every publish also reads.

    ``access`` grows whenever who may see a channel changes (visibility, members, watch
    keys, bans); each event carries it, so a process rechecks its connections before it
    delivers the first event numbered after such a change. ``epoch`` is a random id set
    once: when Redis comes back empty, numbering starts again at 1 under a new epoch,
    and every connection is given a fresh ``history`` instead of having its events
    dropped as already seen. (Two keys outside the channel's hash tag: Colloquy assumes
    one Redis, not a cluster.)"""
    return [f"{settings.REDIS_PREFIX}:access", f"{settings.REDIS_PREFIX}:epoch"]


# Every server process listens here for orders such as "close this user's sockets".
CONTROL_GROUP = "colloquy.control"


def group_name(channel_id: int) -> str:
    """The channel-layer group every connection of the channel listens on."""
    return f"chan.{channel_id}"


# Numbering, logging and the generation snapshot happen in one script, so that the
# seq order is the log order and a history snapshot matches its seq exactly. KEYS[8] is
# the channel's generation lock: a reply's own events (ARGV[7], its lock owner) are
# numbered only while it holds the lock, so a reply whose lock expired or was lost with
# Redis's data, and which recovery may already have closed, adds nothing more.
PUBLISH_SCRIPT = """
if ARGV[7] ~= '' and redis.call('GET', KEYS[8]) ~= ARGV[7] then
  return false
end
local seq = redis.call('INCR', KEYS[1])
local frame = ARGV[1] .. ',"seq":' .. seq .. '}'
if ARGV[5] == '1' then
  -- A redaction: no replay may reach back past this event to what it took away.
  redis.call('DEL', KEYS[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-1', 'f', frame)
local op = ARGV[3]
if op == 'start' then
  redis.call('SET', KEYS[3], ARGV[4], 'EX', 86400)
  redis.call('SET', KEYS[4], '', 'EX', 86400)
  redis.call('SET', KEYS[5], '', 'EX', 86400)
elseif op == 'text' then
  redis.call('APPEND', KEYS[4], ARGV[4])
elseif op == 'reasoning' then
  redis.call('APPEND', KEYS[5], ARGV[4])
elseif op == 'end' then
  -- Only the snapshot of the reply that ended: a late `done` of a reply closed by
  -- recovery must not wipe that of the reply written since.
  local current = redis.call('GET', KEYS[3])
  if not current or current == ARGV[4] then
    redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  end
end
local epoch = redis.call('GET', KEYS[7])
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', KEYS[7], epoch)
end
return {seq, frame, tonumber(redis.call('GET', KEYS[6]) or '0'), epoch}
"""

SNAPSHOT_SCRIPT = """
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[3]),
        redis.call('GET', KEYS[4]), redis.call('GET', KEYS[5]), redis.call('GET', KEYS[7])}
"""

# Release or extend a lock only while we still own it.
LOCK_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
LOCK_EXTEND_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def parse_snapshot(raw: list[Any]) -> tuple[int, dict[str, Any] | None]:
    seq = int(raw[0] or 0)
    generating = None
    if raw[1]:
        generating = {"turn_id": int(raw[1]), "text": raw[2] or "", "reasoning": raw[3] or ""}
    return seq, generating


async def replay_since(channel_id: int, since: int) -> list[str] | None:
    """The frames after ``since``, or None when they are no longer all kept."""
    client = async_redis()
    current = int(await client.get(key(channel_id, "seq")) or 0)
    if since == current:
        return []
    if since > current or since < 0:
        return None
    entries = await client.xrange(key(channel_id, "log"), min=f"{since + 1}-0", max="+")
    if not entries or entries[0][0] != f"{since + 1}-1":
        return None
    return [fields["f"] for _id, fields in entries]


async def forget_log(channel_id: int) -> None:
    """Drop a channel's replay log: every ``since`` before now gets a full history."""
    await async_redis().delete(key(channel_id, "log"))


def forget_log_sync(channel_id: int) -> None:
    sync_redis().delete(key(channel_id, "log"))


async def snapshot(channel_id: int) -> tuple[int, dict[str, Any] | None, str]:
    """The channel's last seq, the generation in progress at that seq and the epoch of
    the numbering, read atomically."""
    raw = await async_redis().eval(SNAPSHOT_SCRIPT, 7, *channel_keys(channel_id), *global_keys())
    seq, generating = parse_snapshot(raw)
    return seq, generating, raw[4] or ""


async def bump_access() -> None:
    await async_redis().incr(global_keys()[0])
