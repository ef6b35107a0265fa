"""The database side of a generation: what it reads before it starts, and the bot turn
it creates, flushes and finishes. Synchronous; the engine calls these in a thread and
holds no connection in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat.agents import checkpoints
from chat.agents.memory import memory_block, memory_scope
from chat.agents.steps import closed as closed_steps
from chat.framing import effective_framing, effective_params
from chat.generation.prompt import PromptTurn, estimate_tokens
from chat.generation.providers.base import ProviderConfig
from chat.knowledge.retrieval import LongFiles, bases_for_reply, search_bases
from chat.knowledge.selectors import readable_bases
from chat.models import Agent, Channel, Instruction, Provider, Session, Turn
from chat.uploads.prompting import TurnFiles, files_of_turns


@dataclass
class Plan:
    """Everything one generation needs, read in one go."""

    channel_id: int
    channel_name: str
    turn_id: int
    mode: str
    framing: dict[str, Any]
    params: dict[str, Any]
    providers: list[ProviderConfig]
    session_id: Any = None  # the active session (a UUID)
    newest_turn_id: int = 0  # its newest visible turn when the plan was read
    # The newest turns, as many as the largest context window of the providers can hold.
    turns: list[PromptTurn] = field(default_factory=list)
    # Older visible turns were left unread: the id of the oldest one read (else None).
    unread_before: int | None = None
    last_user_text: str = ""
    # The instruction applied (chat/generation/prompt.py puts its text first), if any.
    instruction_name: str = ""
    instruction_text: str = ""
    # Replies of this channel that a dead process left unfinished, closed as errors
    # (the caller holds the channel's lock, so nothing else is writing them).
    recovered: list[dict[str, Any]] = field(default_factory=list)
    # The passages the prompt was given, numbered as there (the protocol's Source
    # objects): stored on the bot turn, announced by the ``sources`` event.
    sources: list[dict[str, Any]] = field(default_factory=list)
    # Knowledge bases were searched, or a long file gave passages: the reply announces
    # its sources (an empty list says the search found nothing).
    retrieved: bool = False
    retrieval_ms: int | None = None
    # Agents (issue 17): the tools the reply may call (chat mode only), those that wait
    # for approval, what they act on, and the agent writing it.
    tools: list[str] = field(default_factory=list)
    tools_requiring_approval: list[str] = field(default_factory=list)
    knowledge_base_ids: tuple[str, ...] = ()
    memory_user_ids: tuple[int, ...] = ()
    memory_text: str = ""  # their memories as the prompt gives them (kept out of the stored prompt)
    author_id: int | None = None
    agent_name: str = ""
    # Credits (chat/credits/holds.py), when CREDITS_ENABLED: the hold that will fund
    # the reply as read with the plan (``funding``: checked before the model request,
    # which need not wait for the bot turn), and as claimed once the bot turn exists
    # (``credit``: settled at the end; Generation.run claims it beside the stream).
    # None when there is none: the reply ends as insufficient_credits before reaching
    # the model.
    funding: Any = None
    credit: Any = None


def provider_config(provider: Provider, model: str = "") -> ProviderConfig:
    return ProviderConfig(
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        api_key_env=provider.api_key_env,
        model=model or provider.model_name,
        context_window=provider.context_window,
        extended_sampling=provider.extended_sampling,
        reasoning_effort=provider.reasoning_effort,
        vision=provider.sees_images(model),
    )


# The demo "reads" images (Provider.sees_images): a fresh install shows every feature offline.
DEMO_CONFIG = ProviderConfig(name="demo", kind="demo", model="demo", context_window=8192, vision=True)


def ensure_default_providers() -> None:
    """The demo provider always exists; LLM_BASE_URL adds (or updates) ``default``."""
    Provider.objects.get_or_create(
        name="demo",
        defaults={"kind": Provider.Kind.DEMO, "priority": 1000, "context_window": 8192, "vision": True},
    )
    if settings.LLM_BASE_URL:
        Provider.objects.update_or_create(
            name="default",
            defaults={
                "kind": Provider.Kind.OPENAI_COMPAT,
                "base_url": settings.LLM_BASE_URL,
                "api_key_env": settings.LLM_API_KEY_ENV,
                "default_model": settings.LLM_MODEL,
                "enabled": True,
                "priority": 0,
            },
        )


def provider_chain(channel: Channel, params: dict[str, Any]) -> list[ProviderConfig]:
    """The channel's provider first, then the other enabled ones that serve its mode, in
    priority order. The demo is never a failover target for a real model."""
    if settings.LLM_BASE_URL and not Provider.objects.filter(name="default").exists():
        ensure_default_providers()
    enabled = [p for p in Provider.objects.filter(enabled=True) if channel.mode in p.modes]
    by_name = {p.name: p for p in enabled}
    primary = by_name.get(params.get("provider") or "")
    if primary is None and channel.provider_id:
        primary = next((p for p in enabled if p.pk == channel.provider_id), None)
    if primary is None:
        primary = by_name.get("default") if settings.LLM_BASE_URL else None
    if primary is None:
        primary = by_name.get("demo") or next((p for p in enabled if p.kind == "demo"), None)
    if primary is None:
        return [DEMO_CONFIG]
    chain = [provider_config(primary, params.get("model") or "")]
    if primary.kind != Provider.Kind.DEMO:
        chain += [provider_config(p) for p in enabled if p.pk != primary.pk and p.kind != Provider.Kind.DEMO]
    return chain


def seeing_chain(chain: list[ProviderConfig], turns: list[PromptTurn]) -> list[ProviderConfig]:
    """The chain for a reply to turns with images: only the members whose model reads
    images. A failover model that cannot see the picture it is asked about would answer
    as if it had (the message was accepted for the first model, which does see it:
    chat/uploads/vision.py). When none of them does (the channel's model was changed
    since), the first stays, and receives each image named in the text instead."""
    answered = []
    for turn in reversed(turns):
        if turn.role == Turn.Role.BOT:
            break
        answered.append(turn)
    if not any(turn.images for turn in answered):
        return chain
    return [config for config in chain if config.vision] or chain[:1]


# Turns read per query when collecting the newest turns of a session: the first page
# covers a short session in one query, the next ones a full context window in few.
_FIRST_PAGE, _PAGE = 100, 500


def recent_turns(
    session_id: Any, token_budget: int, after: int | None = None
) -> tuple[list[tuple[int, str, str]], bool]:
    """The newest visible turns of a session as (id, role, text), oldest first: enough
    to fill ``token_budget`` (a prompt can hold no more), and at least one. Read
    newest-first a page at a time, so a reply in a session of 100,000 turns reads what
    its context window holds, not the whole session. Also says whether older turns were
    left unread. ``after``: only the turns after that one (a checkpoint's)."""
    picked: list[tuple[int, str, str]] = []
    total = 0
    rows = Turn.objects.filter(session_id=session_id, hidden=False, id__gt=after or 0).order_by("-id")
    while True:
        size = _PAGE if picked else _FIRST_PAGE
        before = {"id__lt": picked[-1][0]} if picked else {}
        page = list(rows.filter(**before).values_list("id", "role", "text")[:size])
        for row in page:
            picked.append(row)
            # The text alone costs no more than the rendered turn (prefixes, suffix), so
            # once it exceeds the budget, the turns read hold all that can fit.
            total += estimate_tokens(row[2])
            if total > token_budget:
                return picked[::-1], True
        if len(page) < size:
            return picked[::-1], False


def older_turn_count(session_id: Any, before_id: int) -> int:
    """How many visible turns of a session come before ``before_id`` (the ones a reply's
    prompt left out without reading them)."""
    covered = checkpoints.for_prompt(session_id).through_turn_id or 0  # summarised, not left out
    return Turn.objects.filter(session_id=session_id, hidden=False, id__gt=covered, id__lt=before_id).count()


def read_plan(channel_id: int) -> Plan | None:
    """What the channel's next reply needs, read without writing anything (the model
    request starts from it while ``open_turn`` writes the bot turn); None when there
    is nothing to answer."""
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None:
        return None
    session = channel.active_session
    if session is None:
        return None
    framing = effective_framing(channel.framing)
    answered_id, request, author_id = answered_turn(session.pk)
    agent = agent_of_reply(channel, request)
    # The message's own choices (chat/choices.py) over the agent's defaults over the
    # channel's, for this reply only.
    params = {**effective_params(channel.params), **agent_params(agent, channel), **request.get("params", {})}
    if "thinking" in request:
        params["thinking"] = request["thinking"]
    instruction_id = request.get("instruction", channel.instruction_id)
    instruction = Instruction.objects.filter(pk=instruction_id).first() if instruction_id else None
    chain = provider_chain(channel, params)
    budget = max(c.context_window for c in chain) - int(params["max_tokens"])
    # The newest checkpoint's summary stands for every turn up to its own (issue 17).
    checkpoint = checkpoints.for_prompt(session.pk)
    rows, unread = recent_turns(session.pk, max(budget - checkpoint.tokens, 1), checkpoint.through_turn_id)
    if not rows:
        return None
    last_user = next((text for _, role, text in reversed(rows) if role != Turn.Role.BOT), "")
    # Retrieval for the message answered (its typed text is the query): the bases'
    # passages first in its text, then its files, a long one by its best passages.
    answering = rows[-1][1] != Turn.Role.BOT and rows[-1][0] == answered_id
    bases = bases_for_reply(channel, request, author_id)
    if agent is not None:
        # Only those of its bases the author may read (GET /api/agents shows no other):
        # naming an agent must not open another room's base or another person's.
        author = get_user_model().objects.filter(pk=author_id).first() if author_id is not None else None
        readable = readable_bases(author or AnonymousUser())
        bases += [
            base for base in agent.knowledge_bases.filter(pk__in=readable.values("pk")) if base not in bases
        ]
    retrieved = search_bases(bases, last_user) if answering else None
    long_files = LongFiles(
        query=last_user,
        turn_ids=frozenset({answered_id} if answering and answered_id is not None else ()),
        first_n=len(retrieved.sources) + 1 if retrieved else 1,
    )
    files = files_of_turns(session.pk, (turn_id for turn_id, _, _ in rows), long_files)
    if retrieved is not None and retrieved.block and answered_id is not None:
        files.setdefault(answered_id, TurnFiles()).blocks.insert(0, retrieved.block)
    turns = [files.get(turn_id, TurnFiles()).apply(role, text) for turn_id, role, text in rows]
    sources = (retrieved.sources if retrieved else []) + long_files.sources
    searched = bool(retrieved and retrieved.searched) or bool(long_files.sources)
    spent = (retrieved.elapsed_ms if retrieved else 0.0) + long_files.elapsed_ms
    chain = seeing_chain(chain, turns)
    tools, approval = (
        (agent.tools, agent.tools_requiring_approval)
        if agent
        else (channel.tools, channel.tools_requiring_approval)
    )
    tools = [name for name in tools or [] if isinstance(name, str)]
    # The message's own web_search (checked when it was sent): on or off for this reply.
    if request.get("web_search") is True and "web_search" not in tools:
        tools.append("web_search")
    elif request.get("web_search") is False:
        tools = [name for name in tools if name != "web_search"]
    # Whose memories the reply may use (the author's, with consent in shared rooms).
    memory_ids = memory_scope(channel, author_id)
    memory_text = memory_block(memory_ids)
    approval = [name for name in approval or [] if isinstance(name, str)]
    if agent is not None:
        # The room's rules hold for every tool run in it: a tool its owner wants approved
        # waits for approval under any agent too (a member naming an agent that has it
        # must not slip past them).
        approval += [
            name
            for name in channel.tools_requiring_approval or []
            if isinstance(name, str) and name not in approval
        ]
    funding = None
    if settings.CREDITS_ENABLED:
        from chat.credits import holds  # late: the credits import the services

        funding = holds.funding(channel.pk)
    return Plan(
        funding=funding,
        channel_id=channel.pk,
        channel_name=channel.name,
        turn_id=0,
        mode=channel.mode,
        framing=framing,
        params=params,
        providers=chain,
        session_id=session.pk,
        newest_turn_id=rows[-1][0],
        turns=turns,
        unread_before=rows[0][0] if unread else None,
        last_user_text=last_user,
        instruction_name=instruction.name if instruction else "",
        instruction_text=checkpoint.instruction(
            "\n\n".join(
                text
                for text in (
                    agent.instructions if agent else "",
                    instruction.text if instruction else "",
                    memory_text,
                )
                if text
            )
        ),
        sources=sources,
        retrieved=searched,
        retrieval_ms=round(spent) if searched else None,
        tools=list(tools) if channel.mode == Channel.Mode.CHAT else [],
        tools_requiring_approval=[name for name in approval if name in tools],
        knowledge_base_ids=tuple(str(base.pk) for base in bases),
        author_id=author_id,
        memory_user_ids=memory_ids,
        memory_text=memory_text,
        agent_name=agent.name if agent else "",
    )


def agent_of_reply(channel: Channel, request: dict[str, Any]) -> Agent | None:
    """The agent writing the reply: the one the message named (checked against the
    channel's policy when it was sent), else the channel's; None when it is gone or
    disabled since."""
    name = request.get("agent")
    rows = Agent.objects.filter(enabled=True).select_related("provider")
    if isinstance(name, str) and name:
        return rows.filter(name=name).first()
    return rows.filter(pk=channel.agent_id).first() if channel.agent_id else None


def agent_params(agent: Agent | None, channel: Channel) -> dict[str, Any]:
    """The agent's defaults: its provider and model, and those of its parameters the
    channel's parameters also have, of the same type (admin-written JSON is not trusted
    to be well formed)."""
    if agent is None:
        return {}
    base = effective_params(channel.params)
    chosen: dict[str, Any] = {
        key: value
        for key, value in (agent.params if isinstance(agent.params, dict) else {}).items()
        if key in base and type(value) is type(base[key])
    }
    if agent.provider is not None:
        chosen["provider"] = agent.provider.name
        chosen["model"] = agent.model
    return chosen


def answered_turn(session_id: Any) -> tuple[int | None, dict[str, Any], int | None]:
    """The newest turn the reply answers (a user's, or an injected one): its id, the
    choices recorded on it (when several messages are answered together, the last
    one's) and its author's id."""
    newest = (
        Turn.objects.filter(session_id=session_id, hidden=False)
        .exclude(role=Turn.Role.BOT)
        .order_by("-id")
        .values_list("id", "request", "author_id")
        .first()
    )
    if newest is None:
        return None, {}, None
    turn_id, request, author_id = newest
    return turn_id, request if isinstance(request, dict) else {}, author_id


def open_turn(plan: Plan) -> Plan | None:
    """Create the plan's bot turn, first closing the replies a dead process left
    unfinished (``plan.recovered``). None, writing nothing, when the conversation moved
    on since the plan was read (a new turn, a reset): the caller reads it again."""
    with transaction.atomic():
        channel = Channel.objects.select_for_update().filter(pk=plan.channel_id).first()
        if channel is None:
            return None
        newest = (
            Turn.objects.filter(session__channel=channel, session__status=Session.Status.ACTIVE, hidden=False)
            .order_by("-id")
            .values_list("session_id", "id")
            .first()
        )
        if newest != (plan.session_id, plan.newest_turn_id):
            return None
        plan.recovered = [
            turn
            for stale in Turn.objects.filter(
                session__channel=channel, role=Turn.Role.BOT, finish_reason__isnull=True
            )
            if (turn := close_as_error(stale.pk)) is not None
        ]
        first = plan.providers[0]
        plan.turn_id = Turn.objects.create(
            session_id=plan.session_id,
            role=Turn.Role.BOT,
            framing=plan.framing,
            params=plan.params,
            instruction=plan.instruction_name,
            provider=first.name,
            model=first.model_label,
            sources=plan.sources,
            agent=plan.agent_name,
        ).pk
        Session.touch(plan.session_id)
        return plan


def start_generation(channel_id: int) -> Plan | None:
    """``read_plan`` then ``open_turn``, one after the other."""
    plan = read_plan(channel_id)
    return open_turn(plan) if plan is not None else None


def save_steps(turn_id: int, steps: list[dict[str, Any]]) -> None:
    """Save the reply's tool calls as they are now (before their event is sent), so a
    screen that joins mid-reply gets them with the history."""
    Turn.objects.filter(pk=turn_id, finish_reason__isnull=True).update(steps=steps)


def username(user_id: int) -> str:
    from django.contrib.auth import get_user_model

    name = get_user_model().objects.filter(pk=user_id).values_list("username", flat=True).first()
    return str(name or "someone")


def flush_partial(turn_id: int, text: str, reasoning: str) -> None:
    """Save the text so far, so a crash loses at most a second of it."""
    Turn.objects.filter(pk=turn_id, finish_reason__isnull=True).update(text=text, reasoning=reasoning)


def in_active_session(turn_id: int) -> bool:
    """Whether the turn belongs to its channel's active session."""
    return Turn.objects.filter(pk=turn_id, session__status=Session.Status.ACTIVE).exists()


class AlreadyClosedError(Exception):
    """Recovery closed the turn while its generation had lost its lock (the lock
    expired, or Redis lost it): the generation must neither rewrite nor announce it."""


def finish_turn(turn_id: int, *, charge: Any = None, **fields: Any) -> dict[str, Any] | None:
    """Write the final state of a bot turn and add its usage to the session's totals.
    ``charge``: (the hold's id, holds.Usage), settled in the same transaction."""
    with transaction.atomic():
        # Locked (the turn's row only) against recovery closing it at the same moment.
        rows = Turn.objects.select_for_update(of=("self",)).select_related("session")
        turn = rows.filter(pk=turn_id).first()
        if turn is None:  # deleted meanwhile (purge, truncate): what it used is still paid
            if charge is not None:
                from chat.credits import holds

                holds.settle(charge[0], charge[1], turn_id=None)
            return None
        if turn.finish_reason is not None:
            raise AlreadyClosedError(turn_id)
        for name, value in fields.items():
            setattr(turn, name, value)
        turn.save()
        usage = turn.usage or {}
        Session.objects.filter(pk=turn.session_id).update(
            prompt_tokens=F("prompt_tokens") + int(usage.get("prompt_tokens") or 0),
            completion_tokens=F("completion_tokens") + int(usage.get("completion_tokens") or 0),
            updated_at=timezone.now(),  # a finished reply is activity in the session
        )
        if charge is not None:
            from chat.credits import holds

            holds.settle(charge[0], charge[1], turn_id=turn_id)
        return turn.to_dict()


def unfinished_turns(channel_id: int | None = None) -> list[tuple[int, int, str]]:
    """(turn id, channel id, channel name) of bot turns still marked as generating."""
    rows = Turn.objects.filter(role=Turn.Role.BOT, finish_reason__isnull=True)
    if channel_id is not None:
        rows = rows.filter(session__channel_id=channel_id)
    return [
        (t.pk, t.session.channel_id, t.session.channel.name) for t in rows.select_related("session__channel")
    ]


def close_as_error(turn_id: int) -> dict[str, Any] | None:
    """Close a turn whose generation died with its process; it keeps the text it had."""
    with transaction.atomic():  # against its generation finishing it at the same moment
        turn = Turn.objects.select_for_update().filter(pk=turn_id, finish_reason__isnull=True).first()
        if turn is None:
            return None
        turn.finish_reason = Turn.FinishReason.ERROR
        turn.raw_completion = turn.raw_completion or turn.text
        turn.timings = {**(turn.timings or {}), "recovered": True}
        turn.steps = closed_steps(turn.steps or [])
        turn.save(update_fields=["finish_reason", "raw_completion", "timings", "steps"])
        Session.touch(turn.session_id)
        if settings.CREDITS_ENABLED:
            from chat.credits import holds

            holds.settle_dead_reply(turn)
        return turn.to_dict()
