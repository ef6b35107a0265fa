"""The generation engine: one reply at a time per channel, streamed to every connection.

Entry points (all safe from any process):
- ``request_generation(channel_id)``: ask for a reply; returns at once. Requests made
  while a reply is being written are answered together, right after it.
- ``interrupt(channel_id)``: stop the reply being written, wherever it runs.
- ``recover_unfinished()``: at start-up, close turns left by a dead process as errors.

A generation runs on the process's background loop (chat.background), not on any
socket's task, and holds a Redis lock (owner token + expiry, renewed while it runs) so
that at most one runs per channel across all processes. The lock's value is the
channel-layer channel of the running generation: that is where interrupts are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from typing import Any

from channels.layers import get_channel_layer

from chat import background, limits, store
from chat.events import apublish
from chat.generation import records
from chat.generation.prompt import build_prompt, estimate_tokens
from chat.generation.providers import make_provider
from chat.generation.providers.base import Delta, Finish, GenerationRequest, ProviderError
from chat.threads import db_call

log = logging.getLogger(__name__)

LOCK_TTL_MS = 15_000
LOCK_RENEW_S = 5.0
FLUSH_TO_DB_S = 1.0


_db = db_call


def coalesce_window() -> float:
    from django.conf import settings

    return settings.TOKEN_COALESCE_MS / 1000


# --- public entry points ---------------------------------------------------------------


async def arequest_generation(channel_id: int, requester_id: int | None = None) -> None:
    """Mark the channel as wanting a reply and make sure some process writes it. The
    reply's tokens are charged to ``requester_id`` (requests answered together by one
    reply charge the last to ask)."""
    value = str(requester_id) if requester_id is not None else "-"
    await store.async_redis().set(store.key(channel_id, "pending"), value, ex=3600)
    background.submit(_drive(channel_id))


def request_generation(channel_id: int, requester_id: int | None = None) -> None:
    background.run(arequest_generation(channel_id, requester_id))


async def ainterrupt(channel_id: int, *, wait: float = 0.0, drop_pending: bool = True) -> bool:
    """Stop the running generation of the channel (if any), from any process.

    With ``wait``, return once it has ended (or the wait is over). Returns whether a
    generation was running.
    """
    redis = store.async_redis()
    if drop_pending:
        await redis.delete(store.key(channel_id, "pending"))
    owner = await redis.get(store.key(channel_id, "lock"))
    if not owner:
        return False
    turn_id = await redis.get(store.key(channel_id, "gen_turn"))
    layer = get_channel_layer()
    assert layer is not None
    await layer.send(
        owner.split("#")[0],
        {"type": "gen.interrupt", "channel_id": channel_id, "turn_id": int(turn_id) if turn_id else None},
    )
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        if not await redis.exists(store.key(channel_id, "lock")):
            break
        await asyncio.sleep(0.02)
    return True


def interrupt(channel_id: int, *, wait: float = 0.0, drop_pending: bool = True) -> bool:
    return background.run(ainterrupt(channel_id, wait=wait, drop_pending=drop_pending), timeout=wait + 10)


async def arecover_unfinished(channel_id: int | None = None) -> int:
    """Close bot turns whose generation is not running anywhere as ``error``."""
    redis = store.async_redis()
    closed = 0
    for turn_id, chan_id, chan_name in await _db(records.unfinished_turns)(channel_id):
        if await redis.exists(store.key(chan_id, "lock")):
            continue  # a live process is writing it
        turn = await _db(records.close_as_error)(turn_id)
        if turn is None:
            continue
        closed += 1
        await publish_recovered(chan_id, chan_name, turn)
    return closed


async def publish_recovered(channel_id: int, channel_name: str, turn: dict[str, Any]) -> None:
    """Tell every screen that a reply left by a dead process has ended."""
    await apublish(channel_id, channel_name, {"type": "turn", **turn})
    done = {
        "turn_id": turn["id"],
        "finish_reason": "error",
        "usage": turn["usage"],
        "timings": turn["timings"],
    }
    await apublish(channel_id, channel_name, {"type": "done", **done})


def recover_unfinished() -> int:
    return background.run(arecover_unfinished(), timeout=60)


async def watch_for_dead_replies(interval: float) -> None:
    """Every ``interval`` seconds, close the replies whose process died (their lock
    expired, LOCK_TTL_MS after the last renewal), so nobody sees "writing…" for ever,
    and answer the requests they left waiting."""
    redis = store.async_redis()
    while True:
        await asyncio.sleep(interval)
        try:
            for turn_id, chan_id, _name in await _db(records.unfinished_turns)(None):
                if await redis.exists(store.key(chan_id, "lock")):
                    continue
                if await arecover_unfinished(chan_id):
                    log.warning("closed reply %s of channel %s: its process died", turn_id, chan_id)
                if await redis.exists(store.key(chan_id, "pending")):
                    background.submit(_drive(chan_id))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the sweep for dead replies failed; trying again")


# --- the driver: lock, pending requests, one generation after another -----------------

# Generations running in this process, by channel id, and the one channel-layer inbox
# through which other processes reach them. Both live on the background loop.
_running: dict[int, Generation] = {}
_inbox: str | None = None


async def _get_inbox() -> str:
    global _inbox
    if _inbox is None:
        layer = get_channel_layer()
        assert layer is not None
        _inbox = await layer.new_channel("gen.")
        asyncio.get_running_loop().create_task(_listen(_inbox))
    return _inbox


async def _listen(inbox: str) -> None:
    layer = get_channel_layer()
    assert layer is not None
    while True:
        try:
            message = await layer.receive(inbox)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("interrupt inbox failed; listening again")
            await asyncio.sleep(0.5)
            continue
        generation = _running.get(message.get("channel_id", -1))
        if generation is not None and message.get("turn_id") in (None, generation.turn_id):
            generation.interrupted.set()


async def _drive(channel_id: int) -> None:
    redis = store.async_redis()
    lock_key = store.key(channel_id, "lock")
    pending_key = store.key(channel_id, "pending")
    owner = f"{await _get_inbox()}#{uuid.uuid4().hex}"
    while await redis.exists(pending_key):
        if not await redis.set(lock_key, owner, nx=True, px=LOCK_TTL_MS):
            return  # another process is writing; it will see the pending request
        renewer = asyncio.create_task(_renew_lock(lock_key, owner))
        try:
            while requester := await redis.getdel(pending_key):
                generation = Generation(channel_id, int(requester) if requester.isdigit() else None)
                _running[channel_id] = generation
                try:
                    await generation.run()
                finally:
                    _running.pop(channel_id, None)
        except Exception:
            log.exception("generation failed in channel %s", channel_id)
        finally:
            renewer.cancel()
            await redis.eval(store.LOCK_RELEASE_SCRIPT, 1, lock_key, owner)
        # A request may have come in after our last look and before the release; its
        # sender could not take the lock, so we go round once more.


async def _renew_lock(lock_key: str, owner: str) -> None:
    redis = store.async_redis()
    while True:
        await asyncio.sleep(LOCK_RENEW_S)
        await redis.eval(store.LOCK_EXTEND_SCRIPT, 1, lock_key, owner, LOCK_TTL_MS)


# --- one generation ----------------------------------------------------------------------


class StopCutter:
    """Cuts the reply at the first stop sequence, even one split across tokens. Only a
    tail that could be the start of a stop sequence is held back, so ordinary text goes
    out at once."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def _held_tail(self) -> int:
        """Length of the longest tail of ``pending`` that begins some stop sequence."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.pending += text
        cuts = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            out, self.pending = self.pending[: min(cuts)], ""
            return out
        safe = len(self.pending) - self._held_tail()
        out, self.pending = self.pending[:safe], self.pending[safe:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def repetition_hint(text: str, earlier_bot_texts: list[str]) -> str | None:
    """A short hint when the reply repeats an earlier turn or itself."""
    stripped = text.strip()
    if len(stripped) >= 20 and any(stripped == t.strip() for t in earlier_bot_texts):
        return "repeats an earlier turn; consider raising repeat_penalty"
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?\n])\s+", stripped) if len(s.strip()) >= 8]
    if sentences and max(sentences.count(s) for s in sentences) >= 3:
        return "repeats itself; consider raising repeat_penalty"
    return None


class Generation:
    def __init__(self, channel_id: int, requester_id: int | None = None):
        self.channel_id = channel_id
        self.requester_id = requester_id  # who is charged for the reply's tokens
        self.turn_id: int | None = None
        self.interrupted = asyncio.Event()
        self.text = ""
        self.reasoning = ""
        self.raw = ""
        self._out_text = ""
        self._out_reasoning = ""
        self._wake = asyncio.Event()
        self._closing = False
        self._last_flush = float("-inf")

    async def _publish(self, event: dict[str, Any]) -> None:
        await apublish(self.channel_id, self.plan.channel_name, event)

    async def run(self) -> None:
        plan = await _db(records.start_generation)(self.channel_id)
        if plan is None:
            return
        self.plan = plan
        self.turn_id = plan.turn_id
        for turn in plan.recovered:
            await publish_recovered(plan.channel_id, plan.channel_name, turn)
        provider_label = plan.providers[0].model_label or plan.providers[0].name
        await self._publish(
            {"type": "thinking", "label": f"{provider_label} is writing…", "turn_id": plan.turn_id}
        )
        started = time.monotonic()
        self.first_token_at: float | None = None
        flusher = asyncio.create_task(self._flush_tokens())
        saver = asyncio.create_task(self._save_partial())
        streamer = asyncio.create_task(self._stream())
        listener = asyncio.create_task(self.interrupted.wait())
        outcome: dict[str, Any] = {}
        try:
            await asyncio.wait({streamer, listener}, return_when=asyncio.FIRST_COMPLETED)
            if not streamer.done():
                streamer.cancel()
                outcome = {"finish_reason": "interrupted"}
            with contextlib.suppress(asyncio.CancelledError):
                result = await streamer
                outcome = outcome or result
        finally:
            listener.cancel()
            saver.cancel()
            self._closing = True
            self._wake.set()
            await flusher
        await self._finish(outcome, started)

    async def _stream(self) -> dict[str, Any]:
        """Try the providers in order; returns how the reply ended."""
        plan = self.plan
        error: ProviderError | None = None
        for config in plan.providers:
            built = build_prompt(
                mode=plan.mode,
                framing=plan.framing,
                turns=plan.turns,
                context_window=config.context_window,
                max_tokens=int(plan.params["max_tokens"]),
            )
            self.built, self.config = built, config
            request = GenerationRequest(
                built=built, model=config.model, params=plan.params, last_user_text=plan.last_user_text
            )
            for attempt in (1, 2):
                try:
                    return await self._consume(make_provider(config), request, StopCutter(built.stop))
                except ProviderError as exc:
                    error = exc
                    if self.first_token_at is not None:
                        return {"finish_reason": "error", "error": str(exc)}
                    log.warning("provider %s failed (attempt %s): %s", config.name, attempt, exc)
                    if not exc.retryable:
                        break
        return {"finish_reason": "error", "error": str(error) if error else "no provider"}

    async def _consume(self, provider: Any, request: GenerationRequest, cutter: StopCutter) -> dict[str, Any]:
        finish = Finish()
        cut_by_us = False
        stream = provider.stream(request)
        try:
            async for item in stream:
                if isinstance(item, Finish):
                    finish = item
                    continue
                assert isinstance(item, Delta)
                if self.first_token_at is None:
                    self.first_token_at = time.monotonic()
                if item.reasoning:
                    self.reasoning += item.reasoning
                    self._out_reasoning += item.reasoning
                    self._wake.set()
                if item.text:
                    self.raw += item.text
                    visible = cutter.feed(item.text)
                    self._emit(visible)
                    if cutter.stopped:
                        cut_by_us = True
                        break  # the provider ignored a stop sequence; we end it here
        finally:
            # Text held back while checking for a stop sequence belongs to the reply
            # however it ends (error, interrupt).
            self._emit(cutter.flush())
            await stream.aclose()
        return {
            "finish_reason": finish.reason,
            "truncated": cut_by_us or finish.reason == "length",
            "prompt_tokens": finish.prompt_tokens,
            "completion_tokens": finish.completion_tokens,
        }

    def _emit(self, text: str) -> None:
        if text:
            self.text += text
            self._out_text += text
            self._wake.set()

    async def _flush_tokens(self) -> None:
        """Send buffered text: the first piece at once, then at most every window."""
        window = coalesce_window()
        while True:
            await self._wake.wait()
            wait = self._last_flush + window - time.monotonic()
            if wait > 0 and not self._closing:
                await asyncio.sleep(wait)
            self._wake.clear()
            reasoning, self._out_reasoning = self._out_reasoning, ""
            text, self._out_text = self._out_text, ""
            if reasoning:
                await self._publish({"type": "reasoning", "data": reasoning, "turn_id": self.plan.turn_id})
            if text:
                await self._publish({"type": "token", "data": text, "turn_id": self.plan.turn_id})
            self._last_flush = time.monotonic()
            if self._closing and not self._out_text and not self._out_reasoning:
                return

    async def _save_partial(self) -> None:
        saved = ("", "")
        while True:
            await asyncio.sleep(FLUSH_TO_DB_S)
            if (self.text, self.reasoning) != saved:
                saved = (self.text, self.reasoning)
                await _db(records.flush_partial)(self.plan.turn_id, *saved)

    async def _finish(self, outcome: dict[str, Any], started: float) -> None:
        plan = self.plan
        reason = outcome.get("finish_reason") or "stop"
        built = getattr(self, "built", None)
        prompt_text = built.as_text() if built else ""
        reported = outcome.get("prompt_tokens") is not None and outcome.get("completion_tokens") is not None
        usage = {
            "prompt_tokens": outcome["prompt_tokens"] if reported else estimate_tokens(prompt_text),
            "completion_tokens": outcome["completion_tokens"] if reported else estimate_tokens(self.raw),
            "estimated": not reported,
        }
        now = time.monotonic()
        timings = {
            "ttft_ms": round((self.first_token_at - started) * 1000) if self.first_token_at else None,
            "duration_ms": round((now - started) * 1000),
        }
        config = getattr(self, "config", plan.providers[0])
        earlier = [t.text for t in plan.turns if t.role == "bot"]
        turn = await _db(records.finish_turn)(
            plan.turn_id,
            text=self.text,
            reasoning=self.reasoning,
            raw_completion=self.raw,
            prompt=prompt_text,
            finish_reason=reason,
            truncated=bool(outcome.get("truncated")),
            rep_hint=repetition_hint(self.text, earlier) if self.text else None,
            usage=usage,
            timings=timings,
            provider=config.name,
            model=config.model_label,
            dropped_turns=built.dropped_turns if built else 0,
        )
        # Charged to whoever asked for this reply, and only when a model answered: a
        # request that never reached one (connection refused, every provider down) is free.
        if self.requester_id is not None and (self.first_token_at is not None or reported):
            await db_call(limits.count_tokens)(
                self.requester_id, usage["prompt_tokens"] + usage["completion_tokens"]
            )
        if turn is not None and not turn["hidden"]:
            await self._publish({"type": "turn", **turn})
        if reason == "interrupted":
            await self._publish({"type": "interrupted", "turn_id": plan.turn_id})
        if reason == "error":
            await self._publish(
                {
                    "type": "error",
                    "code": "provider_error",
                    "text": f"The model failed: {outcome.get('error', 'unknown error')}",
                }
            )
        await self._publish(
            {
                "type": "done",
                "turn_id": plan.turn_id,
                "finish_reason": reason,
                "usage": usage,
                "timings": timings,
            }
        )
