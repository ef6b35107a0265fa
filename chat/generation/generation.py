"""One reply: create its turn, stream it from the first provider that answers, send its
text and reasoning as they come, save it as it grows, then record, charge and announce
how it ended. The driver (chat.generation.driver) decides when one runs and holds the
channel's lock meanwhile; this module assumes it is the only writer of the channel, and
its events are numbered only while that holds (chat.realtime.store.PUBLISH_SCRIPT).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings

from chat import limits
from chat.errors import UNAVAILABLE
from chat.generation import records
from chat.generation.prompt import BuiltPrompt, build_prompt, estimate_tokens
from chat.generation.providers import make_provider
from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ModelProvider,
    ProviderConfig,
    ProviderError,
)
from chat.generation.records import Plan
from chat.generation.text import Coalescer, StopCutter, coalesce_window, repetition_hint
from chat.realtime import events
from chat.realtime.async_db import db_call
from chat.realtime.events import LockLostError, apublish

log = logging.getLogger(__name__)

# How often the text so far is saved: a process that dies loses at most this much.
FLUSH_TO_DB_S = 1.0
# How long a reply cut off from Redis keeps trying to announce its end (turn, done);
# after that, every process gives its connections a fresh history once Redis is back.
ANNOUNCE_END_FOR_S = 30.0


@dataclass
class Outcome:
    """How a reply ended."""

    finish_reason: str  # stop | length | interrupted | error
    # Cut short: by a stop sequence the provider ignored, or by max_tokens.
    truncated: bool = False
    # As the provider reported them; None when it did not (they are then estimated).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None  # what failed, when finish_reason is "error"


async def publish_recovered(channel_id: int, channel_name: str, turn: dict[str, Any]) -> None:
    """Tell every screen that a reply left by a dead process has ended."""
    await apublish(channel_id, channel_name, events.turn_event(turn))
    await apublish(
        channel_id, channel_name, events.done_event(turn["id"], "error", turn["usage"], turn["timings"])
    )


class Generation:
    """One reply in one channel, from the request to ``done``."""

    def __init__(self, channel_id: int, requester_id: int | None, owner: str | None = None) -> None:
        self.channel_id = channel_id
        self.requester_id = requester_id  # who is charged for the reply's tokens
        self.owner = owner  # of the channel's lock, which the reply's events need
        # Set by the driver when an interrupt for this reply arrives.
        self.interrupted = asyncio.Event()
        # Set when the reply cannot go on: Redis could not take its events, or its lock
        # is gone (and recovery may close its turn any moment). It ends at once, as
        # ``error`` with the text it has.
        self.lost = asyncio.Event()
        self.lost_because = ""
        # Read from the database when run() creates the bot turn; None until then.
        self.plan: Plan | None = None
        self._forget_reply()

    def _forget_reply(self) -> None:
        """The reply's state, empty: at the start, and when a cancelled model request is
        made again."""
        # The provider being (or last) tried, and the prompt built for its context window.
        self.config: ProviderConfig | None = None
        self.built: BuiltPrompt | None = None
        self.first_token_at: float | None = None  # time.monotonic() of the first delta
        self.text = ""  # the visible reply, cut at a stop sequence
        self.reasoning = ""
        self.raw = ""  # the text as the model sent it, stop sequence included
        self.outbox = Coalescer(coalesce_window())

    @property
    def turn_id(self) -> int | None:
        """The bot turn being written; None before it exists."""
        return self.plan.turn_id if self.plan else None

    def lose(self, because: str) -> None:
        """The reply cannot go on (see ``lost``)."""
        if not self.lost.is_set():
            log.warning("reply %s in channel %s is cut off: %s", self.turn_id, self.channel_id, because)
            self.lost_because = because
            self.lost.set()

    async def _publish(self, plan: Plan, event: Mapping[str, Any]) -> None:
        """Publish one of the reply's own events, while it holds the lock; a failure
        cuts the reply off (its final turn carries all the text)."""
        if self.lost.is_set():
            return
        try:
            await apublish(plan.channel_id, plan.channel_name, event, owner=self.owner)
        except LockLostError:
            self.lose("its lock is gone")
        except UNAVAILABLE as exc:
            self.lose(f"Redis failed: {exc}")

    async def _announce(self, plan: Plan, event: Mapping[str, Any]) -> None:
        """Publish an event of the reply's end, lock or no lock (only whoever closed the
        turn gets here), trying again while Redis is out of reach."""
        deadline = time.monotonic() + ANNOUNCE_END_FOR_S
        while True:
            try:
                await apublish(plan.channel_id, plan.channel_name, event)
                return
            except UNAVAILABLE as exc:
                if time.monotonic() > deadline:
                    log.warning("gave up announcing the end of reply %s: %s", plan.turn_id, exc)
                    return
                await asyncio.sleep(0.5)

    async def run(self) -> None:
        """Write the reply. Returns at once when there is nothing to answer.

        The model request starts as soon as the plan is read; the bot turn is written
        and ``thinking`` published while it is in flight (its first tokens wait in the
        outbox meanwhile), which takes the turn's insert off the time to first token."""
        while True:
            plan = await db_call(records.read_plan)(self.channel_id)
            if plan is None:
                return
            started = time.monotonic()
            streamer = asyncio.create_task(self._stream(plan))
            try:
                opened = await db_call(records.open_turn)(plan)
            except BaseException:
                streamer.cancel()
                raise
            if opened is not None:
                break
            # The conversation moved on while the plan was read: start over from it.
            streamer.cancel()
            await asyncio.wait({streamer})  # unlike awaiting it, never raises its end
            self._forget_reply()
        self.plan = plan
        try:
            for turn in plan.recovered:
                await publish_recovered(plan.channel_id, plan.channel_name, turn)
        except UNAVAILABLE as exc:
            self.lose(f"Redis failed: {exc}")
        first = plan.providers[0]
        label = f"{first.model_label or first.name} is writing…"
        await self._publish(plan, events.thinking_event(plan.turn_id, label))
        if plan.retrieved:
            # Before any token: the first tokens wait in the outbox until _write drains it.
            await self._publish(plan, events.sources_event(plan.turn_id, plan.sources))
        if self.lost.is_set():
            streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streamer
            outcome = self._cut_off()
        else:
            outcome = await self._write(plan, streamer)
        await self._finish(plan, outcome, started)

    def _cut_off(self) -> Outcome:
        return Outcome("error", error=f"the reply was cut off: {self.lost_because}")

    async def _write(self, plan: Plan, streamer: asyncio.Task[Outcome]) -> Outcome:
        """Follow the model's stream (already started) until it ends, is interrupted or
        is cut off."""
        sender = asyncio.create_task(self.outbox.drain(functools.partial(self._send, plan)))
        saver = asyncio.create_task(self._save_partial(plan.turn_id))
        listener = asyncio.create_task(self.interrupted.wait())
        losing = asyncio.create_task(self.lost.wait())
        try:
            await asyncio.wait({streamer, listener, losing}, return_when=asyncio.FIRST_COMPLETED)
            if streamer.done():
                outcome = streamer.result()
            else:
                streamer.cancel()  # closes the provider's stream, and so its connection
                with contextlib.suppress(asyncio.CancelledError):
                    await streamer
                outcome = Outcome("interrupted") if self.interrupted.is_set() else self._cut_off()
        finally:
            listener.cancel()
            losing.cancel()
            saver.cancel()
            self.outbox.close()
            await sender  # every piece of text is sent before the turn and done events
        return outcome

    async def _stream(self, plan: Plan) -> Outcome:
        """Try the providers in order, each twice when its failure may pass (a timeout,
        429, 5xx), until one answers. Once the model has begun answering, a failure ends
        the reply: another model would start it over, after what is already shown."""
        error: ProviderError | None = None
        for config in plan.providers:
            built = build_prompt(
                mode=plan.mode,
                framing=plan.framing,
                turns=plan.turns,
                context_window=config.context_window,
                max_tokens=int(plan.params["max_tokens"]),
                instruction=plan.instruction_text,
                vision=config.vision,
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
                        return Outcome("error", error=str(exc))
                    log.warning("provider %s failed (attempt %s): %s", config.name, attempt, exc)
                    if not exc.retryable:
                        break
                except Exception as exc:  # a provider's bug still ends the reply properly
                    log.exception("provider %s failed unexpectedly", config.name)
                    return Outcome("error", error=f"{config.name}: {type(exc).__name__}")
        return Outcome("error", error=str(error) if error else "no provider")

    async def _consume(
        self, provider: ModelProvider, request: GenerationRequest, cutter: StopCutter
    ) -> Outcome:
        """Read one provider's stream to its end, or to a stop sequence."""
        finish = Finish()
        cut_by_us = False
        # Every provider's stream is an async generator: closing it closes the connection.
        stream = cast(AsyncGenerator[Delta | Finish, None], provider.stream(request))
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
                    self.outbox.add(reasoning=item.reasoning)
                if item.text:
                    self.raw += item.text
                    self._emit(cutter.feed(item.text))
                    if cutter.stopped:
                        cut_by_us = True
                        break  # the provider ignored a stop sequence; we end it here
        finally:
            # Text held back while checking for a stop sequence belongs to the reply
            # however it ends (error, interrupt).
            self._emit(cutter.flush())
            await stream.aclose()
        return Outcome(
            finish_reason=finish.reason,
            truncated=cut_by_us or finish.reason == "length",
            prompt_tokens=finish.prompt_tokens,
            completion_tokens=finish.completion_tokens,
        )

    def _emit(self, text: str) -> None:
        if text:
            self.text += text
            self.outbox.add(text=text)

    async def _send(self, plan: Plan, reasoning: str, text: str) -> None:
        if reasoning:
            await self._publish(plan, events.reasoning_event(plan.turn_id, reasoning))
        if text:
            await self._publish(plan, events.token_event(plan.turn_id, text))

    async def _save_partial(self, turn_id: int) -> None:
        """Every second: save the text so far, and stop the reply when its session is no
        longer the channel's active one. A status change or reset stops the running
        reply before it switches sessions, but a message arriving in between may start
        one in the session that then leaves; it must not stream on into the next."""
        saved = ("", "")
        while True:
            await asyncio.sleep(FLUSH_TO_DB_S)
            if (self.text, self.reasoning) != saved:
                saved = (self.text, self.reasoning)
                await db_call(records.flush_partial)(turn_id, *saved)
            if not await db_call(records.in_active_session)(turn_id):
                self.interrupted.set()
                return

    async def _finish(self, plan: Plan, outcome: Outcome, started: float) -> None:
        """Save the turn, charge its tokens, and announce how it ended."""
        reason = outcome.finish_reason or "stop"
        prompt_text = self.built.as_text() if self.built else ""
        if outcome.prompt_tokens is not None and outcome.completion_tokens is not None:
            reported = True
            prompt_tokens, completion_tokens = outcome.prompt_tokens, outcome.completion_tokens
        else:
            reported = False
            prompt_tokens = self.built.estimated_tokens() if self.built else 0
            completion_tokens = estimate_tokens(self.raw)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "estimated": not reported,
        }
        now = time.monotonic()
        timings = {
            "ttft_ms": round((self.first_token_at - started) * 1000) if self.first_token_at else None,
            "duration_ms": round((now - started) * 1000),
        }
        if plan.retrieval_ms is not None:  # spent before ``started``, reading the plan
            timings["retrieval_ms"] = plan.retrieval_ms
        config = self.config or plan.providers[0]
        earlier = [t.text for t in plan.turns if t.role == "bot"]
        dropped = self.built.dropped_turns if self.built else 0
        if plan.unread_before is not None:  # counted now, off the path to the first token
            dropped += await db_call(records.older_turn_count)(plan.session_id, plan.unread_before)
        closed_by_recovery = False
        try:
            turn = await db_call(records.finish_turn)(
                plan.turn_id,
                text=self.text,
                reasoning=self.reasoning,
                raw_completion=self.raw,
                prompt=prompt_text,
                finish_reason=reason,
                truncated=outcome.truncated,
                rep_hint=repetition_hint(self.text, earlier) if self.text else None,
                usage=usage,
                timings=timings,
                provider=config.name,
                model=config.model_label,
                dropped_turns=dropped,
            )
        except records.AlreadyClosedError:
            turn, closed_by_recovery = None, True
        # Charged to whoever asked for this reply, and only when a model answered: a
        # request that never reached one (connection refused, every provider down) is
        # free. The counter is in Redis only, so no database connection is involved; the
        # thread keeps the loop free while the synchronous client waits.
        if self.requester_id is not None and (self.first_token_at is not None or reported):
            try:
                await asyncio.to_thread(
                    limits.count_tokens, self.requester_id, prompt_tokens + completion_tokens
                )
            except UNAVAILABLE as exc:  # the reply's end matters more than its count
                log.warning("could not count the tokens of reply %s: %s", plan.turn_id, exc)
        if closed_by_recovery:
            return  # closed and announced by recovery while this reply had lost its lock
        if turn is not None and not turn["hidden"]:
            await self._announce(plan, events.turn_event(turn))
        if reason == "interrupted":
            await self._announce(plan, events.interrupted_event(plan.turn_id))
        if reason == "error":
            failure = outcome.error if outcome.error is not None else "unknown error"
            await self._announce(plan, events.error_event("provider_error", f"The model failed: {failure}"))
        await self._announce(plan, events.done_event(plan.turn_id, reason, usage, timings))
        if (
            settings.SESSION_TITLES
            and turn is not None
            and not turn["hidden"]
            and reason in ("stop", "length")
        ):
            # Late: titles reach the services, which import the engine.
            from chat.generation import titles

            titles.start(plan.session_id)  # in the background: nothing waits for it
