"""Holds and debits (issue 18; docs/credits.md "Holds and debits").

A message (or a regenerate) sets credits aside before it is saved: a hold, taken in one
conditional UPDATE of the sender's Balance, so parallel requests can never spend the same
credits twice. The reply that answers it claims the channel's open holds when its bot
turn is created (the newest one funds it, the others are released at once), tops it up
if the real prompt turned out larger, and settles it exactly once when it ends: a debit
of what was used, the rest released. Every step writes the ledger row that explains it,
in the same transaction as the balance change, so per user
sum(grant) - sum(debit) + sum(refund) == available + held, always.

Nothing here runs unless settings.CREDITS_ENABLED: callers check it first, so an
instance without credits makes no extra query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from chat.credits import hotpath
from chat.credits.balances import ensure_balance
from chat.credits.prices import Price, cost, price_for
from chat.errors import ServiceError
from chat.framing import effective_framing, effective_params
from chat.generation.prompt import estimate_tokens
from chat.generation.providers import max_output_tokens
from chat.models import Balance, Channel, CreditHold, LedgerEntry, ModelPrice, Provider, Turn

INSUFFICIENT_TEXT = "Insufficient credits to use this model."

# Added to a hold's prompt estimate (and 5 %): the turns' prefixes and suffixes.
PROMPT_ROOM_TOKENS = 32

# Unclaimed holds older than this, in a channel where nothing is running or waiting, are
# released by the recovery sweep (requests an interrupt dropped, replies never written).
ABANDONED_AFTER = timedelta(minutes=1)


# Prices (and which provider a channel's reply starts with) as this process last read
# them: two queries fewer on the path to the first token. A change in the admin is seen
# at once here (the signals below) and within PRICE_TTL_S by the other processes.
PRICE_TTL_S = 5.0
_prices: dict[tuple[str, str], tuple[float, Price]] = {}
_firsts: dict[tuple[Any, ...], tuple[float, Any]] = {}


def current_price(provider: str, model: str) -> Price:
    now = time.monotonic()
    cached = _prices.get((provider, model))
    if cached is not None and cached[0] > now:
        return cached[1]
    price = price_for(provider, model)
    _prices[(provider, model)] = (now + PRICE_TTL_S, price)
    return price


def forget_prices(**kwargs: Any) -> None:
    _prices.clear()
    _firsts.clear()


post_save.connect(forget_prices, sender=ModelPrice, dispatch_uid="holds.forget_prices.save")
post_delete.connect(forget_prices, sender=ModelPrice, dispatch_uid="holds.forget_prices.delete")
post_save.connect(forget_prices, sender=Provider, dispatch_uid="holds.forget_providers.save")
post_delete.connect(forget_prices, sender=Provider, dispatch_uid="holds.forget_providers.delete")


def insufficient_credits() -> ServiceError:
    return ServiceError("insufficient_credits", INSUFFICIENT_TEXT)


@dataclass(frozen=True)
class Basis:
    """What a reply would cost at most, as estimated when it is asked for."""

    provider: str
    model: str
    amount: int  # micro-credits


def estimate(channel: Channel, request: dict[str, Any], new_text: str) -> Basis:
    """The hold for a reply to ``new_text`` in the channel: estimated prompt tokens at the
    input price plus max_tokens at the output price, of the model the reply would start
    with (the message's own choice, else its agent's, else the channel's: as
    records.read_plan chooses it). Cheap on purpose (it is on the path to the first
    token): the prompt is the previous reply's whole usage (its prompt and its answer,
    which the next prompt repeats) plus the new text, capped by the context window. A
    prompt that turns out larger is topped up by the reply (``top_up``)."""
    from chat.generation.records import agent_of_reply, agent_params, provider_chain

    agent = agent_of_reply(channel, request) if request.get("agent") or channel.agent_id else None
    params = {**effective_params(channel.params), **agent_params(agent, channel), **request.get("params", {})}
    # The first provider, as this process last worked it out (for PRICE_TTL_S): only the
    # estimate uses it; the reply prices its real provider itself.
    chosen = (channel.pk, channel.mode, channel.provider_id, params.get("provider"), params.get("model"))
    now = time.monotonic()
    cached = _firsts.get(chosen)
    if cached is not None and cached[0] > now:
        first = cached[1]
    else:
        first = provider_chain(channel, params)[0]
        _firsts[chosen] = (now + PRICE_TTL_S, first)
    max_tokens = int(params["max_tokens"])
    usage = hotpath.last_reply_usage(channel.pk)
    framing = effective_framing(channel.framing)
    before = estimate_tokens(str(framing.get("preamble") or ""))  # a first reply's prompt
    if isinstance(usage, dict):
        before = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    new_turn = f"{framing.get('user_prefix', '')}{new_text}{framing.get('turn_suffix', '')}"
    # Room for what rendering adds (prefixes, the answer's own), so that an ordinary
    # reply needs no top-up (one more write on the path to the first token).
    estimated = (before + estimate_tokens(new_turn) + PROMPT_ROOM_TOKENS) * 21 // 20
    prompt_tokens = min(estimated, max(first.context_window - max_tokens, 0))
    price = current_price(first.name, first.model_label)
    return Basis(
        first.name, first.model_label, cost(price, prompt_tokens, max_output_tokens(first.kind, params))
    )


def reserve(user: Any, amount: int) -> None:
    """Move ``amount`` from the user's available credits to held ones, in one conditional
    UPDATE, or refuse with ``insufficient_credits``. Must run in the transaction that
    records the hold (``record_hold``)."""
    taken = hotpath.move_to_held(user.pk, amount)
    if not taken and not Balance.objects.filter(user_id=user.pk).exists():
        ensure_balance(user)  # a user older than the feature: CREDITS_INITIAL first
        taken = hotpath.move_to_held(user.pk, amount)
    if not taken:
        raise insufficient_credits()


def require_some_credit(user: Any) -> None:
    """For model work that is not billed (prompt suggestions, docs/credits.md) but is
    still model output: refused with ``insufficient_credits`` to whoever has nothing left,
    so spent credits do not leave a free way to the model."""
    if enabled() and ensure_balance(user).available <= 0:
        raise insufficient_credits()


def record_hold(*, user: Any, channel: Channel, basis: Basis, turn: Turn | None) -> Any:
    """The hold row and its ledger entry, once ``reserve`` has moved the credits (same
    transaction); returns the hold's id. ``turn``: the message that asked for the reply.
    (Plain SQL: chat/credits/hotpath.py says why.)"""
    hold_id = hotpath.insert(
        CreditHold,
        user_id=user.pk,
        channel_id=channel.pk,
        amount=basis.amount,
        provider=basis.provider,
        model=basis.model,
    )
    hotpath.insert(
        LedgerEntry,
        user_id=user.pk,
        kind=LedgerEntry.Kind.HOLD.value,
        amount=basis.amount,
        hold_id=hold_id,
        turn_id=turn.pk if turn is not None else None,
        provider=basis.provider,
        model=basis.model,
        actor_id=user.pk,
    )
    return hold_id


@dataclass
class Claimed:
    """The hold funding a reply, as its generation knows it."""

    hold_id: Any
    user_id: int
    amount: int
    price: Price  # of the hold's model (the reply's first provider, as estimated)
    provider: str
    model: str


def funding(channel_id: int) -> Claimed | None:
    """The hold that will fund the channel's next reply (its newest open unclaimed one),
    read with the reply's plan so that the model request need not wait for the bot turn
    (whose transaction claims it: ``claim``). Only the reply holding the channel's lock
    claims its holds, so what is read here is what it will claim."""
    row = hotpath.newest_open_hold(channel_id)  # plain SQL: hotpath.py says why
    if row is None:
        return None
    hold_id, user_id, amount, provider, model = row
    return Claimed(hold_id, user_id, amount, current_price(provider, model), provider, model)


def claim(channel_id: int, turn_id: int, funding: Claimed) -> Claimed | None:
    """Once the bot turn ``turn_id`` exists (beside its stream: not on the path to the
    first token), claim for it the channel's open unclaimed holds up to ``funding``, the
    newest its plan saw (newer ones are the next reply's). The newest funds it (the last
    to ask, who pays for a coalesced reply); the others are released now."""
    # Plain SQL (hotpath.py): it runs while the first tokens are being delivered.
    if not hotpath.claim_holds(channel_id, turn_id, funding.hold_id):
        return None
    mine = hotpath.open_holds_of_reply(turn_id)
    if not mine:
        return None
    for hold_id, *_ in mine[1:]:
        settle(hold_id, Usage.nothing(), turn_id=None, note="answered together with a later request")
    hold_id, user_id, amount, provider, model = mine[0]
    return Claimed(hold_id, user_id, amount, current_price(provider, model), provider, model)


def top_up(claimed: Claimed, needed: int) -> bool:
    """Raise the hold to ``needed`` (the real prompt is larger than estimated), in one
    conditional UPDATE of the balance; False when the credits are not there."""
    extra = needed - claimed.amount
    if extra <= 0:
        return True
    with transaction.atomic():
        if not hotpath.move_to_held(claimed.user_id, extra):
            return False
        raised = CreditHold.objects.filter(pk=claimed.hold_id, status=CreditHold.Status.OPEN).update(
            amount=F("amount") + extra
        )
        if not raised:  # settled meanwhile (recovery): give the credits back
            transaction.set_rollback(True)
            return False
        LedgerEntry.objects.create(
            user_id=claimed.user_id,
            kind=LedgerEntry.Kind.HOLD,
            amount=extra,
            hold_id=claimed.hold_id,
            provider=claimed.provider,
            model=claimed.model,
            note="top-up: the prompt is larger than estimated",
        )
    claimed.amount = needed
    return True


@dataclass(frozen=True)
class Usage:
    """What a reply used, and of which model; the debit is computed from it."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    estimated: bool

    @staticmethod
    def nothing() -> Usage:
        return Usage("", "", 0, 0, False)

    @property
    def is_nothing(self) -> bool:
        return self.input_tokens == 0 and self.output_tokens == 0


def settle(
    hold_id: Any, usage: Usage, *, turn_id: int | None, note: str = "", unclaimed: bool = False
) -> bool:
    """Close a hold exactly once: a debit of ``usage`` at its model's price, the rest of
    the hold released. A debit may exceed the hold (the estimate was low): the excess
    comes out of available credits, which may then go below zero, and the next hold is
    refused. False when it was settled already (a second call changes nothing).
    ``unclaimed``: only if no reply has claimed it."""
    with transaction.atomic():
        closing = CreditHold.objects.filter(pk=hold_id, status=CreditHold.Status.OPEN)
        if unclaimed:  # the sweep's: never one a reply claimed meanwhile
            closing = closing.filter(reply__isnull=True)
        closed = closing.update(status=CreditHold.Status.SETTLED, settled_at=timezone.now())
        if not closed:
            return False
        user_id, amount = CreditHold.objects.filter(pk=hold_id).values_list("user_id", "amount").get()
        debit = 0
        if not usage.is_nothing:
            debit = cost(price_for(usage.provider, usage.model), usage.input_tokens, usage.output_tokens)
        Balance.objects.filter(user_id=user_id).update(
            held=F("held") - amount, available=F("available") + (amount - debit)
        )
        entry = {"user_id": user_id, "hold_id": hold_id, "turn_id": turn_id, "note": note[:200]}
        if debit > 0:
            LedgerEntry.objects.create(
                **entry,
                kind=LedgerEntry.Kind.DEBIT,
                amount=debit,
                provider=usage.provider,
                model=usage.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                estimated=usage.estimated,
            )
        if amount - debit > 0:
            LedgerEntry.objects.create(**entry, kind=LedgerEntry.Kind.RELEASE, amount=amount - debit)
    return True


def settle_dead_reply(turn: Turn) -> None:
    """In recovery's transaction closing ``turn`` (its process died): settle its hold
    with an estimate, the text saved so far and the prompt as estimated when the hold
    was taken (what the hold set aside for the prompt, at the hold's price)."""
    hold = CreditHold.objects.filter(reply_id=turn.pk, status=CreditHold.Status.OPEN).first()
    if hold is None:
        return
    # Its reasoning as well as its text, as a reply's own estimate counts them.
    output_tokens = estimate_tokens(turn.raw_completion or turn.text) + estimate_tokens(turn.reasoning or "")
    params = turn.params if isinstance(turn.params, dict) else {}
    price = price_for(hold.provider, hold.model)
    # The hold was prompt × input price + the most output × output price: the prompt back out.
    kind = Provider.objects.filter(name=hold.provider).values_list("kind", flat=True).first() or ""
    most = max_output_tokens(kind, {**params, "max_tokens": int(params.get("max_tokens") or 0)})
    prompt_part = hold.amount - cost(price, 0, most)
    per_1k = cost(price, 1000, 0)
    input_tokens = prompt_part * 1000 // per_1k if per_1k and prompt_part > 0 else 0
    settle(
        hold.pk,
        Usage(hold.provider, hold.model, input_tokens, output_tokens, estimated=True),
        turn_id=turn.pk,
        note="its process died: estimated",
    )


def abandoned_channels(now: Any = None) -> list[int]:
    """Channels with open unclaimed holds older than ABANDONED_AFTER."""
    cutoff = (now or timezone.now()) - ABANDONED_AFTER
    rows = CreditHold.objects.filter(
        status=CreditHold.Status.OPEN, reply__isnull=True, created_at__lt=cutoff, channel__isnull=False
    )
    return sorted(set(rows.values_list("channel_id", flat=True)))


def release_abandoned(channel_id: int, now: Any = None) -> int:
    """Release the channel's open unclaimed holds older than ABANDONED_AFTER (the caller
    has seen that nothing runs in it and no request waits). Returns how many."""
    cutoff = (now or timezone.now()) - ABANDONED_AFTER
    ids = list(
        CreditHold.objects.filter(
            channel_id=channel_id, status=CreditHold.Status.OPEN, reply__isnull=True, created_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    return sum(settle(pk, Usage.nothing(), turn_id=None, note="never answered", unclaimed=True) for pk in ids)


def release_orphans(now: Any = None) -> int:
    """Release open holds whose channel was deleted (nothing can claim them)."""
    cutoff = (now or timezone.now()) - ABANDONED_AFTER
    ids = list(
        CreditHold.objects.filter(
            status=CreditHold.Status.OPEN, reply__isnull=True, channel__isnull=True, created_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    return sum(
        settle(pk, Usage.nothing(), turn_id=None, note="its channel is gone", unclaimed=True) for pk in ids
    )


def enabled() -> bool:
    return bool(settings.CREDITS_ENABLED)
