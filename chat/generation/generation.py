"""One reply: create its turn, stream it from the first provider that answers, send its
text and reasoning as they come, save it as it grows, then record, charge and announce
how it ended. The driver (chat.generation.driver) decides when one runs and holds the
channel's lock meanwhile; this module assumes it is the only writer of the channel, and
its events are numbered only while that holds (chat.realtime.store.PUBLISH_SCRIPT).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
from django.conf import settings

from chat import limits
from chat.agents import compaction, registry, steps
from chat.agents.tools import Tool, ToolContext, ToolError, ToolSpec
from chat.errors import UNAVAILABLE
from chat.generation import records
from chat.generation.prompt import BuiltPrompt, build_prompt, estimate_tokens
from chat.generation.providers import make_provider, max_output_tokens
from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ModelProvider,
    ProviderConfig,
    ProviderError,
    ToolCall,
    ToolRound,
)
from chat.generation.records import Plan
from chat.generation.text import Coalescer, StopCutter, coalesce_window, repetition_hint
from chat.realtime import events, store
from chat.realtime.async_db import db_call
from chat.realtime.events import LockLostError, apublish

log = logging.getLogger(__name__)

# How often the text so far is saved: a process that dies loses at most this much.
FLUSH_TO_DB_S = 1.0
# How long a reply cut off from Redis keeps trying to announce its end (turn, done);
# after that, every process gives its connections a fresh history once Redis is back.
ANNOUNCE_END_FOR_S = 30.0


# A tool call's arguments longer than this are not arguments: the server is misbehaving.
MAX_ARGUMENTS_CHARS = 200_000
# How long the credit claim waits for the reply's first piece before it goes ahead.
CLAIM_WAIT_S = 0.5
# What an older round's results become when the rounds outgrow the context window.
RESULT_LEFT_OUT = "[result left out: the tool results no longer fit the model's context window]"
_WIRE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _wire_name(name: str, taken: Mapping[str, str]) -> str:
    """A tool's name as the APIs accept it (letters, digits, _ and -, at most 64):
    "mcp:files/read" -> "mcp_files_read", made unique."""
    wire = _WIRE_UNSAFE.sub("_", name)[:60] or "tool"
    candidate, n = wire, 2
    while candidate in taken:
        candidate, n = f"{wire[:56]}_{n}", n + 1
    return candidate


def _call_id(given: str, done: list[dict[str, Any]], streaming: Mapping[int, Any], fallback: int) -> str:
    """The model's id for a call when it is a safe, unused one (it is sent back with
    the result, and is a Redis key's part for approvals); else one of ours."""
    used = {step["call_id"] for step in done} | {c.get("call_id") for c in streaming.values()}
    if _CALL_ID.fullmatch(given) and given not in used:
        return given
    candidate = f"call_{fallback}"
    while candidate in used:
        fallback += 1
        candidate = f"call_{fallback}"
    return candidate


def _parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """A call's arguments as the object the model meant, or why they are not one."""
    if not raw.strip():
        return {}, None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, "the arguments are not valid JSON"
    if not isinstance(value, dict):
        return None, "the arguments must be a JSON object"
    return value, None


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
    error_code: str = "provider_error"  # the error event's code (insufficient_credits)


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
        # Set once the bot turn exists: tools act for it, so none runs before.
        self.opened = asyncio.Event()
        # Set once the reply's first piece (text, reasoning or a step) is published: the
        # credit claim waits for it, so that its write never competes with that piece.
        self.first_sent = asyncio.Event()
        # The tools the reply may call, by the name the model knows them by (wire-safe).
        self.tools: dict[str, Tool] = {}
        self.tool_names: dict[str, str] = {}  # wire name -> our name ("mcp:srv/tool")
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
        # The tool loop: the calls made (the turn's steps), the calls of the round being
        # streamed (by the model's index), rounds done and time spent in tools.
        self.steps: list[dict[str, Any]] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._calls_dropped = False  # this round asked for more calls than are run
        self.rounds = 0
        self.tool_ms = 0.0
        # Our estimate of each request's prompt (the first, then each round's, which
        # repeats the rounds before it) and of the calls the model wrote: what a reply
        # whose provider reports no counts is charged (and its hold kept covering).
        self.request_prompts: list[int] = []
        self.call_tokens = 0
        self._steps_saved = asyncio.Lock()

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
        self.opened.set()
        claiming: asyncio.Task[Any] | None = None
        if plan.funding is not None:
            # Beside the stream, once its first piece is out (or it has ended): the first
            # token need not wait for it (the request was checked against
            # ``plan.funding``, the same hold).
            claiming = asyncio.create_task(self._claim(plan, streamer))
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
        if claiming is not None:
            try:
                plan.credit = await claiming
            except Exception:  # settled by recovery once the turn is closed, or swept
                log.exception("reply %s could not claim its credit hold", plan.turn_id)
        await self._finish(plan, outcome, started)

    async def _claim(self, plan: Plan, streamer: asyncio.Task[Outcome]) -> Any:
        from chat.credits import holds  # late: the credits import the services

        sent = asyncio.create_task(self.first_sent.wait())
        try:
            # At most CLAIM_WAIT_S: a reply whose process dies before its first piece
            # (a long hidden reasoning) is settled by recovery only once claimed.
            await asyncio.wait({sent, streamer}, timeout=CLAIM_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sent.cancel()
        return await db_call(holds.claim)(plan.channel_id, plan.turn_id, plan.funding)

    def _cut_off(self) -> Outcome:
        return Outcome("error", error=f"the reply was cut off: {self.lost_because}")

    async def _write(self, plan: Plan, streamer: asyncio.Task[Outcome]) -> Outcome:
        """Follow the model's stream (already started) until it ends, is interrupted or
        is cut off."""
        sender = asyncio.create_task(
            self.outbox.drain(functools.partial(self._send, plan), functools.partial(self._send_event, plan))
        )
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
        await self._load_tools(plan)
        for config in plan.providers:
            built = self._build(plan, config, config.context_window)
            self.built, self.config = built, config
            max_output = max_output_tokens(config.kind, plan.params)
            if settings.CREDITS_ENABLED and not await self._funded(
                plan, config, built.estimated_tokens(), max_output
            ):
                from chat.credits.holds import INSUFFICIENT_TEXT

                return Outcome("error", error=INSUFFICIENT_TEXT, error_code="insufficient_credits")
            for attempt in (1, 2):
                request = GenerationRequest(
                    built=built,
                    model=config.model,
                    params=plan.params,
                    last_user_text=plan.last_user_text,
                    tools=[
                        ToolSpec(wire, tool.spec.description, tool.spec.parameters)
                        for wire, tool in self.tools.items()
                    ],
                )
                try:
                    return await self._rounds(plan, make_provider(config), request)
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

    def _build(self, plan: Plan, config: ProviderConfig, window: int) -> BuiltPrompt:
        """The prompt for ``config``'s model, its oldest turns dropped until it fits in
        ``window`` tokens beside the reply."""
        return build_prompt(
            mode=plan.mode,
            framing=plan.framing,
            turns=plan.turns,
            context_window=window,
            max_tokens=int(plan.params["max_tokens"]),
            instruction=plan.instruction_text,
            vision=config.vision,
        )

    def _fit_rounds(self, plan: Plan, request: GenerationRequest) -> bool:
        """Fit the next request, its rounds included, in the model's context window: the
        conversation's oldest turns go first (drop-oldest, as for any prompt), then the
        results of the oldest rounds are left out (the model is told so). False when even
        the newest round's results do not fit beside the newest turn."""
        assert self.config is not None and self.built is not None
        window = self.config.context_window
        budget = window - int(plan.params["max_tokens"])
        if self.built.estimated_tokens() + _rounds_tokens(request.rounds) <= budget:
            return True
        built = self._fitted(plan, budget, _rounds_tokens(request.rounds))
        for index, done in enumerate(request.rounds[:-1]):
            if built.estimated_tokens() + _rounds_tokens(request.rounds) <= budget:
                break
            request.rounds[index] = dataclasses.replace(
                done, results=tuple((ok, RESULT_LEFT_OUT) for ok, _content in done.results)
            )
            built = self._fitted(plan, budget, _rounds_tokens(request.rounds))
        if built.estimated_tokens() + _rounds_tokens(request.rounds) > budget:
            return False
        self.built = request.built = built
        return True

    def _fitted(self, plan: Plan, budget: int, rounds: int) -> BuiltPrompt:
        """The prompt with as few of its oldest turns dropped as lets it fit in ``budget``
        beside ``rounds`` tokens of tool rounds, by the prompt's whole estimate (which
        counts what rendering adds to each message: drop-oldest counts the turns alone,
        so a first build may still be a little over). The newest turn always stays."""
        assert self.config is not None
        window = self.config.context_window - rounds
        built = self._build(plan, self.config, window)
        for _ in plan.turns:
            over = built.estimated_tokens() + rounds - budget
            if over <= 0 or built.dropped_turns >= len(plan.turns) - 1:
                break
            window -= over
            built = self._build(plan, self.config, window)
        return built

    async def _funded(
        self, plan: Plan, config: ProviderConfig, input_tokens: int, output_tokens: int
    ) -> bool:
        """Whether the reply's hold covers these tokens at this model's price (topped up
        if it does not): nothing reaches a model otherwise. Asked before the first request
        (its prompt and max output) and before each tool round's (what the rounds so far
        cost, plus that request). The hold as read with the plan: the bot turn that
        claims it is being written meanwhile (records.open_turn), and the request does not
        wait for it."""
        from chat.credits import holds
        from chat.credits.prices import cost, price_for

        claimed = plan.funding
        if claimed is None:
            return False
        price = claimed.price
        if (config.name, config.model_label) != (claimed.provider, claimed.model):
            price = await db_call(price_for)(config.name, config.model_label)
        needed = cost(price, input_tokens, output_tokens)
        if needed <= claimed.amount:
            return True
        return bool(await db_call(holds.top_up)(claimed, needed))

    def _estimated_completion(self) -> int:
        """The tokens the model wrote, by our count: text, reasoning (the providers count
        it as output too: an interrupted thinking model pays for what it streamed) and the
        calls it made."""
        return estimate_tokens(self.raw) + estimate_tokens(self.reasoning) + self.call_tokens

    # --- the tool loop ----------------------------------------------------------------

    async def _load_tools(self, plan: Plan) -> None:
        """The tools the plan names, made once per reply. A tool that cannot be had
        (an MCP server down, a built-in this instance does not offer) is left out and
        said so in a ``status``: the reply goes on without it rather than hang."""
        found: dict[str, Tool] = {}
        missing: list[str] = []
        offered = set(registry.builtin_names())
        remote: list[str] = []
        for name in plan.tools:
            if name in offered:
                try:
                    found[name] = registry.make_builtin(name)
                except Exception:
                    log.exception("built-in tool %s could not be made", name)
                    missing.append(name)
            elif registry.split_mcp_name(name):
                remote.append(name)
            else:
                missing.append(name)
        if remote:
            try:
                # The SDK loads only where a channel uses it.
                from chat.agents import mcp

                tools, unavailable = await mcp.tools_for(remote)
                found.update({tool.spec.name: tool for tool in tools})
                missing += unavailable
            except Exception:
                log.exception("MCP tools could not be listed")
                missing += remote
        self.tools, self.tool_names = {}, {}
        for name, tool in found.items():
            wire = _wire_name(name, self.tool_names)
            self.tools[wire], self.tool_names[wire] = tool, name
        if missing:
            self.outbox.add_event(events.status_event(0, f"unavailable tools: {', '.join(sorted(missing))}"))

    async def _rounds(self, plan: Plan, provider: ModelProvider, request: GenerationRequest) -> Outcome:
        """Model, then the calls it made, then the model again with their results, until
        it answers without calling (or MAX_TOOL_ROUNDS rounds of calls were run: calls
        beyond are answered as refused and the reply ends, flagged truncated)."""
        assert self.built is not None and self.config is not None
        prompt_tokens = completion_tokens = 0
        reported = True
        self.request_prompts = [self.built.estimated_tokens()]
        while True:
            round_start = len(self.text)
            self._calls, self._calls_dropped = {}, False
            outcome = await self._consume(provider, request, StopCutter(self.built.stop))
            if outcome.prompt_tokens is None or outcome.completion_tokens is None:
                reported = False
            else:
                prompt_tokens += outcome.prompt_tokens
                completion_tokens += outcome.completion_tokens
            calls = [self._calls[index] for index in sorted(self._calls)]
            # Written by the model, so paid for, whether they run or not.
            self.call_tokens += sum(estimate_tokens(c["wire"] + c["arguments"]) for c in calls)
            if not calls or outcome.truncated:
                break  # an answer (or one cut short: its calls may be half-written)
            self.rounds += 1
            if self.rounds > int(settings.MAX_TOOL_ROUNDS):
                await self._refuse(
                    plan, calls, f"the limit of {settings.MAX_TOOL_ROUNDS} tool rounds was reached"
                )
                outcome.truncated = True
                break
            results = await self._run_round(plan, calls)
            request.rounds.append(
                ToolRound(
                    text=self.text[round_start:],
                    # A call streamed without a name goes back under one the APIs accept.
                    calls=tuple(
                        ToolCall(c["call_id"], c["wire"] or "unnamed", c["parsed"] or {}) for c in calls
                    ),
                    results=tuple(results),
                )
            )
            if not self._fit_rounds(plan, request):
                # A provider would refuse the request (or cut it): the reply ends here.
                text = "the tool results no longer fit the model's context window: the reply ends here"
                self.outbox.add_event(events.status_event(0, text))
                outcome.finish_reason, outcome.truncated = "length", True
                break
            self.request_prompts.append(self.built.estimated_tokens() + _rounds_tokens(request.rounds))
            if settings.CREDITS_ENABLED and not await self._funded(
                plan,
                self.config,
                (prompt_tokens if reported else sum(self.request_prompts[:-1])) + self.request_prompts[-1],
                (completion_tokens if reported else self._estimated_completion())
                + max_output_tokens(self.config.kind, plan.params),
            ):
                # The rounds so far are paid (by the counts, if every one came with them).
                from chat.credits.holds import INSUFFICIENT_TEXT

                self.request_prompts.pop()  # never sent
                return Outcome(
                    "error",
                    prompt_tokens=prompt_tokens if reported else None,
                    completion_tokens=completion_tokens if reported else None,
                    error=INSUFFICIENT_TEXT,
                    error_code="insufficient_credits",
                )
        outcome.finish_reason = "length" if outcome.finish_reason == "length" else "stop"
        outcome.prompt_tokens = prompt_tokens if reported else None
        outcome.completion_tokens = completion_tokens if reported else None
        return outcome

    def _take_call_delta(self, index: int, call_id: str, name: str, arguments: str) -> None:
        """A piece of a tool call as streamed: gathered by the model's index, its
        argument pieces sent on as they come."""
        call = self._calls.get(index)
        if call is None and len(self._calls) >= int(settings.MAX_TOOL_CALLS_PER_ROUND):
            # A model (or a hostile provider) may ask for thousands of calls at once, each
            # a step stored, streamed and run: those beyond the cap are dropped, unseen.
            if not self._calls_dropped:
                self._calls_dropped = True
                cap = settings.MAX_TOOL_CALLS_PER_ROUND
                text = f"at most {cap} tool calls a round: the rest were dropped"
                self.outbox.add_event(events.status_event(0, text))
            return
        if call is None:
            call = self._calls[index] = {
                "index": index,
                "call_id": "",
                "wire": "",
                "arguments": "",
                "text_offset": len(self.text),
            }
        if call_id and not call["call_id"]:
            call["call_id"] = _call_id(call_id, self.steps, self._calls, len(self.steps) + index)
        if name and not call["wire"]:
            call["wire"] = name
        if len(call["arguments"]) + len(arguments) > MAX_ARGUMENTS_CHARS:
            raise ProviderError(f"tool call arguments over {MAX_ARGUMENTS_CHARS} characters", retryable=False)
        call["arguments"] += arguments
        if not call["call_id"]:
            call["call_id"] = _call_id("", self.steps, self._calls, len(self.steps) + index)
        # Shown only once the tool is known (a server could send pieces before the
        # name), and never for a tool whose arguments are personal.
        tool = self.tools.get(call["wire"])
        if arguments and tool is not None and not getattr(tool, "private_arguments", False):
            shown = self.tool_names.get(call["wire"], call["wire"])
            self.outbox.add_event(events.tool_call_delta_event(0, call["call_id"], shown, arguments))

    async def _run_round(self, plan: Plan, calls: list[dict[str, Any]]) -> list[tuple[bool, str]]:
        """Run a round's calls, at once (they were asked for together, so none waits
        for another's result); results in the calls' order."""
        await self.opened.wait()  # the turn exists: steps are saved on it
        round_steps = []
        for call in calls:
            arguments, problem = _parse_arguments(call["arguments"])
            call["parsed"] = arguments
            name = self.tool_names.get(call["wire"], call["wire"] or "?")
            step = steps.new_step(
                call_id=call["call_id"],
                round_no=self.rounds,
                name=name,
                arguments=arguments if arguments is not None else {"_raw": call["arguments"][:2000]},
                text_offset=call["text_offset"],
            )
            if call["wire"] not in self.tools:
                problem = problem or f"there is no tool named {name!r}"
            elif getattr(self.tools[call["wire"]], "private_arguments", False):
                # The call runs with them (call["parsed"]); the step shows none.
                step["arguments"] = {}
                step["private_arguments"] = True
            if problem is None and name in plan.tools_requiring_approval:
                step["status"] = steps.AWAITING
            call["problem"] = problem
            round_steps.append(step)
            self.steps.append(step)
        await self._save_steps()
        for step in round_steps:
            self.outbox.add_event(events.tool_call_event(0, step))
        return list(
            await asyncio.gather(
                *(self._run_call(plan, call, step) for call, step in zip(calls, round_steps, strict=True))
            )
        )

    async def _run_call(self, plan: Plan, call: dict[str, Any], step: dict[str, Any]) -> tuple[bool, str]:
        """One call, from approval to result. Whatever happens, the model gets an
        answer: the result, or an error saying what went wrong (never a success)."""
        if call["problem"] is not None:
            return await self._close_step(step, ok=False, content=f"Error: {call['problem']}")
        tool = self.tools[call["wire"]]
        if step["status"] == steps.AWAITING:
            self.outbox.add_event(events.tool_approval_event(0, step))
            self.outbox.add_event(events.status_event(0, f"waiting for approval of {step['name']}…"))
            approved, who = await self._await_approval(plan, step)
            step["approved_by"] = who
            if not approved:
                because = f"denied by {who}" if who else "not approved in time"
                return await self._close_step(
                    step, ok=False, content=f"Error: the call was {because}", status=steps.DENIED
                )
            step["status"] = steps.RUNNING
            await self._save_steps()
            self.outbox.add_event(events.tool_call_event(0, step))
        self.outbox.add_event(events.status_event(0, tool.status or f"running {step['name']}…"))
        assert self.plan is not None
        context = ToolContext(
            channel_id=plan.channel_id,
            channel_name=plan.channel_name,
            session_id=plan.session_id,
            turn_id=self.plan.turn_id,
            requester_id=self.requester_id,
            author_id=plan.author_id,
            knowledge_base_ids=plan.knowledge_base_ids,
            memory_user_ids=plan.memory_user_ids,
        )
        limit = min(float(tool.timeout or settings.TOOL_TIMEOUT), float(settings.TOOL_TIMEOUT))
        started = time.monotonic()
        private_to: int | None = None
        try:
            output = await asyncio.wait_for(tool.run(call["parsed"] or {}, context), timeout=limit)
            ok, content, private_to = output.ok, output.content, output.private_to
        except TimeoutError:
            ok, content = False, f"Error: timed out after {limit:g} s"
        except ToolError as exc:
            ok, content = False, f"Error: {exc}"
        except Exception as exc:  # a tool's bug: the model is told it failed, the log says why
            log.exception("tool %s failed", step["name"])
            ok, content = False, f"Error: the tool failed ({type(exc).__name__})"
        finally:
            self.tool_ms += (time.monotonic() - started) * 1000
        step["duration_ms"] = round((time.monotonic() - started) * 1000)
        return await self._close_step(step, ok=ok, content=str(content), private_to=private_to)

    async def _close_step(
        self,
        step: dict[str, Any],
        *,
        ok: bool,
        content: str,
        status: str | None = None,
        private_to: int | None = None,
    ) -> tuple[bool, str]:
        """Record a call's result, tell the room, and give the model its (capped) text."""
        cap = int(settings.TOOL_OUTPUT_CHARS)
        truncated = len(content) > cap
        content = content[:cap]
        step.update(
            status=status or (steps.OK if ok else steps.ERROR), ok=ok, content=content, truncated=truncated
        )
        if private_to is not None:
            # One person's data: the model and that person get it, the room a redaction.
            step["private"] = {"user_id": private_to, "content": content}
            step["content"] = ""
            step["redacted"] = {"owner": await db_call(records.username)(private_to)}
        await self._save_steps()
        self.outbox.add_event(events.tool_result_event(0, steps.public(step)))
        return ok, content

    async def _refuse(self, plan: Plan, calls: list[dict[str, Any]], because: str) -> None:
        """Calls the loop will not run: recorded and shown as errors."""
        await self.opened.wait()
        for call in calls:
            arguments, _ = _parse_arguments(call["arguments"])
            step = steps.new_step(
                call_id=call["call_id"],
                round_no=self.rounds,
                name=self.tool_names.get(call["wire"], call["wire"] or "?"),
                arguments=arguments or {},
                text_offset=call["text_offset"],
            )
            if getattr(self.tools.get(call["wire"]), "private_arguments", False):
                step["arguments"], step["private_arguments"] = {}, True  # as _run_round hides them
            self.steps.append(step)
            self.outbox.add_event(events.tool_call_event(0, step))
            await self._close_step(step, ok=False, content=f"Error: {because}")
        self.outbox.add_event(events.status_event(0, f"stopped: {because}"))

    async def _await_approval(self, plan: Plan, step: dict[str, Any]) -> tuple[bool, str | None]:
        """Wait for approve_tool / deny_tool (chat/services/tool_approvals.py), from
        any process, through Redis; denied when none comes in TOOL_APPROVAL_TIMEOUT."""
        from chat.services.tool_approvals import approval_key  # services import the engine

        assert self.plan is not None
        key = approval_key(plan.channel_id, self.plan.turn_id, step["call_id"])
        client = store.async_redis()
        deadline = time.monotonic() + float(settings.TOOL_APPROVAL_TIMEOUT)
        while (left := deadline - time.monotonic()) > 0:
            got = await client.blpop([key], timeout=max(0.1, min(1.0, left)))
            if got:
                decision, _, who = str(got[1]).partition(":")
                return decision == "approve", who or None
        return False, None

    async def _save_steps(self) -> None:
        """Write the steps as they are now; one write at a time, so a later state is
        never overwritten by an earlier one."""
        assert self.plan is not None
        async with self._steps_saved:
            await db_call(records.save_steps)(self.plan.turn_id, [dict(step) for step in self.steps])

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
                for piece in item.tool_calls:
                    self._take_call_delta(piece.index, piece.id, piece.name, piece.arguments)
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

    async def _send_event(self, plan: Plan, event: dict[str, Any]) -> None:
        """An event of the reply queued in the outbox (built before the turn existed,
        so its turn_id is set here)."""
        await self._publish(plan, {**event, "turn_id": plan.turn_id})
        self.first_sent.set()

    async def _send(self, plan: Plan, reasoning: str, text: str) -> None:
        if reasoning:
            await self._publish(plan, events.reasoning_event(plan.turn_id, reasoning))
        if text:
            await self._publish(plan, events.token_event(plan.turn_id, text))
        self.first_sent.set()

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
        if plan.memory_text:
            # The substrate is readable by whoever may watch the room (and the watch
            # link of a personal room): the memories the model got stay out of it.
            prompt_text = prompt_text.replace(plan.memory_text, "[memories of the author: not shown]")
        if outcome.prompt_tokens is not None and outcome.completion_tokens is not None:
            reported = True
            prompt_tokens, completion_tokens = outcome.prompt_tokens, outcome.completion_tokens
        else:
            reported = False
            # Every request the tool loop sent, each repeating the prompt.
            prompt_tokens = sum(self.request_prompts) or (self.built.estimated_tokens() if self.built else 0)
            completion_tokens = self._estimated_completion()
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
        if self.steps:
            timings["tool_rounds"] = self.rounds
            timings["tool_ms"] = round(self.tool_ms)
        config = self.config or plan.providers[0]
        earlier = [t.text for t in plan.turns if t.role == "bot"]
        dropped = self.built.dropped_turns if self.built else 0
        if plan.unread_before is not None:  # counted now, off the path to the first token
            dropped += await db_call(records.older_turn_count)(plan.session_id, plan.unread_before)
        closed_by_recovery = False
        charge = None
        # The hold the bot turn claimed; else (a race: none was left to claim) the one
        # the request was checked against, still open and unclaimed.
        credit = plan.credit or plan.funding
        if credit is not None:
            from chat.credits import holds

            # Paid only when a model answered (as the daily tokens below): what it
            # used, by its counts or else our estimate, at the price of the one that
            # served (after a failover, not the first).
            answered = self.first_token_at is not None or reported
            spent = (
                holds.Usage(config.name, config.model_label, prompt_tokens, completion_tokens, not reported)
                if answered
                else holds.Usage.nothing()
            )
            charge = (credit.hold_id, spent)
        try:
            turn = await db_call(records.finish_turn)(
                plan.turn_id,
                charge=charge,
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
                steps=steps.closed(self.steps),
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
            if outcome.error_code == "provider_error":
                failure = f"The model failed: {failure}"
            await self._announce(plan, events.error_event(outcome.error_code, failure))
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
        # The larger of the model's count and ours: drop-oldest fits the prompt by ours.
        # With tool rounds the model's count sums every request: a round's share is
        # what one prompt held.
        size = max(prompt_tokens // (self.rounds + 1), self.built.estimated_tokens() if self.built else 0)
        if turn is not None and compaction.needs_compaction(size, config.context_window):
            compaction.start(plan.session_id, plan.channel_id, plan.channel_name, plan.turn_id)


def _rounds_tokens(rounds: list[ToolRound]) -> int:
    """Our estimate of what the tool rounds add to a request's prompt: what the model
    said and called in each, and what every call returned."""
    return sum(
        estimate_tokens(done.text)
        + sum(estimate_tokens(call.name + orjson.dumps(call.arguments).decode()) for call in done.calls)
        + sum(estimate_tokens(content) for _ok, content in done.results)
        for done in rounds
    )
