"""Per-message choices within the owner's bounds, checked here once for every transport.

A channel's ``member_params`` says what members (not the owner, not moderators) may
choose for their own messages: which provider/model pairs, and the range of each
sampling parameter; a key absent means members may not set it, ``{}`` lets them set
nothing. A message (or a regenerate) may carry ``params``, ``thinking`` and
``instruction``: they apply to that reply only and are recorded on the user turn
(``Turn.request``), which the generation reads (chat/generation/records.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from chat import permissions
from chat.errors import ServiceError
from chat.framing import ParamsSerializer, effective_params
from chat.generation.records import provider_chain
from chat.models import Channel, Instruction, Provider, UserPreference
from chat.schemas import (
    THINKING_LEVELS,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictListField,
    StrictSerializer,
    ThinkingField,
    error_fields,
)

# Marks an argument the client did not send (``instruction: null`` is a choice: none).
NOT_GIVEN: Any = object()

MAX_POLICY_MODELS = 50


def _range_serializer(name: str) -> type[StrictSerializer]:
    """{"min", "max"}, min ≤ max, each within the range the channel's own params allow
    for ``name`` (chat/framing.py ParamsSerializer: one place says what is valid)."""
    param: Any = ParamsSerializer().fields[name]  # a strict number field with its range
    field: Any = type(param)
    low, high = param.min_value, param.max_value

    class Range(StrictSerializer):
        min = field(min_value=low, max_value=high)
        max = field(min_value=low, max_value=high)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if attrs["min"] > attrs["max"]:
                raise serializers.ValidationError({"min": ["Must not be greater than max."]})
            return attrs

    return Range


class MaxTokensBound(StrictSerializer):
    max = StrictIntegerField(min_value=1)

    def validate_max(self, value: int) -> int:
        if value > settings.MAX_TOKENS_LIMIT:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.MAX_TOKENS_LIMIT}."
            )
        return value


class MemberParamsSerializer(StrictSerializer):
    """The policy, with the same ranges as the channel's own params (chat/framing.py)."""

    models = StrictListField(
        child=StrictCharField(max_length=265), max_length=MAX_POLICY_MODELS, required=False
    )
    temperature = _range_serializer("temperature")(required=False)
    top_p = _range_serializer("top_p")(required=False)
    top_k = _range_serializer("top_k")(required=False)
    repeat_penalty = _range_serializer("repeat_penalty")(required=False)
    max_tokens = MaxTokensBound(required=False)
    thinking = StrictBooleanField(required=False)

    def validate_models(self, value: list[str]) -> list[str]:
        # The demo always answers, with or without its row (records.DEMO_CONFIG).
        known = {"demo", *Provider.objects.values_list("name", flat=True)}
        for item in value:
            provider, _, model = item.partition("/")
            if not provider or not model:
                raise serializers.ValidationError(f'"{item}": expected "provider/model".')
            if provider not in known:
                raise serializers.ValidationError(f'"{item}": no provider has this name.')
        return list(dict.fromkeys(value))  # duplicates add nothing


def validate_member_params(value: Any) -> dict[str, Any]:
    """The policy as it will be saved (whole: it replaces the old one), or
    ServiceError("invalid") naming ``member_params`` and the bad keys."""
    if not isinstance(value, dict):
        raise ServiceError(
            "invalid", "member_params must be an object.", fields={"member_params": ["Expected an object."]}
        )
    serializer = MemberParamsSerializer(data=value)
    if not serializer.is_valid():
        fields = {"member_params": error_fields(serializer.errors)}
        raise ServiceError("invalid", "Invalid member_params.", fields=fields)
    data = serializer.validated_data
    return {key: (dict(item) if isinstance(item, dict) else item) for key, item in data.items()}


def usable_instruction(user: Any, instruction_id: int) -> Instruction | None:
    """An instruction the user may apply: a shared one, or their own."""
    found = Instruction.objects.filter(pk=instruction_id).first()
    if found is None or (found.owner_id is not None and found.owner_id != getattr(user, "pk", None)):
        return None
    return found


def model_choice(channel: Channel, provider: str, model: str) -> str:
    """The "provider/model" pair a reply would start with, given what was chosen (the
    rest as the generation fills it in: chat/generation/records.py provider_chain)."""
    params = effective_params(channel.params)
    if provider:
        params["provider"] = provider
    if model:
        params["model"] = model
    first = provider_chain(channel, params)[0]
    return f"{first.name}/{first.model_label}"


def check_choices(
    *,
    channel: Channel,
    user: Any,
    params: Any = None,
    thinking: Any = NOT_GIVEN,
    instruction: Any = NOT_GIVEN,
) -> dict[str, Any]:
    """What a message (or regenerate) asks for, as recorded on the user turn:
    ``{"params"?, "thinking"?, "instruction"?}``, with the user's preferences filled in
    where the channel allows them. Owners and moderators are bound by the value ranges
    only; members by the channel's member_params too (``forbidden`` for what it does
    not offer, ``invalid`` naming ``params.<key>`` out of bounds)."""
    request: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    if params is not None:
        if not isinstance(params, dict):
            raise ServiceError(
                "invalid", "params must be an object.", fields={"params": ["Expected an object."]}
            )
        serializer = ParamsSerializer(data=params, partial=True)
        if not serializer.is_valid():
            raise ServiceError(
                "invalid", "Invalid params.", fields={"params": error_fields(serializer.errors)}
            )
        chosen = dict(serializer.validated_data)
        other_provider = chosen.get("provider") not in (
            "",
            None,
            effective_params(channel.params)["provider"],
        )
        if other_provider and "model" not in chosen:
            chosen["model"] = ""  # another provider's own default, not the channel's model
    if thinking is not NOT_GIVEN:
        if not (isinstance(thinking, bool) or thinking in THINKING_LEVELS):
            message = ThinkingField.default_error_messages["invalid"]
            raise ServiceError("invalid", "Invalid thinking.", fields={"thinking": [message]})
        chosen["thinking"] = thinking
    if not permissions.can_configure(user, channel):
        _check_policy(channel, chosen)
    if "thinking" in chosen:
        request["thinking"] = chosen.pop("thinking")
    if chosen:
        request["params"] = chosen
    if instruction is not NOT_GIVEN:
        if instruction is not None and usable_instruction(user, instruction) is None:
            raise ServiceError(
                "invalid", "No such instruction.", fields={"instruction": ["No such instruction."]}
            )
        request["instruction"] = instruction
    _apply_preferences(channel, user, request)
    return request


def _check_policy(channel: Channel, chosen: dict[str, Any]) -> None:
    policy = channel.member_params or {}
    current = effective_params(channel.params)
    forbidden: list[str] = []
    invalid: dict[str, list[str]] = {}
    for key, value in chosen.items():
        if key in ("provider", "model"):
            continue
        if value == current.get(key):
            continue  # choosing what the channel uses anyway is no choice
        if key not in policy or (key == "thinking" and not policy["thinking"]):
            forbidden.append(key)
            continue
        bound = policy[key]
        if key == "thinking":
            continue
        low, high = bound.get("min"), bound["max"]
        if (low is not None and value < low) or value > high:
            shown = f"from {low} to {high}" if low is not None else f"at most {high}"
            invalid[key] = [f"This channel lets members choose {shown}."]
    if "provider" in chosen or "model" in chosen:
        pair = model_choice(channel, chosen.get("provider", ""), chosen.get("model", ""))
        if pair != model_choice(channel, "", ""):
            offered = policy.get("models") or []
            if not offered:
                forbidden.append("model")
            elif pair not in offered:
                invalid["model"] = [f"This channel lets members choose one of: {', '.join(offered)}."]
    if forbidden:
        raise ServiceError(
            "forbidden",
            f"This channel does not let members choose: {', '.join(sorted(set(forbidden)))}.",
        )
    if invalid:
        raise ServiceError("invalid", "Outside the channel's bounds.", fields={"params": invalid})


def _apply_preferences(channel: Channel, user: Any, request: dict[str, Any]) -> None:
    """The user's default model where the message chose none and the channel's policy
    offers it; their default instruction where neither the message nor the channel names
    one."""
    if not (user and user.is_authenticated):
        return
    preference = UserPreference.objects.filter(user=user).first()
    if preference is None:
        return
    params = request.get("params", {})
    if preference.provider and "provider" not in params and "model" not in params:
        pair = model_choice(channel, preference.provider, preference.model)
        provider, _, model = pair.partition("/")
        enabled = Provider.objects.filter(name=provider, enabled=True).exists()
        if enabled and pair in (channel.member_params or {}).get("models", []):
            request["params"] = {**params, "provider": provider, "model": model}
    if (
        "instruction" not in request
        and channel.instruction_id is None
        and preference.instruction_id is not None
        and usable_instruction(user, preference.instruction_id) is not None
    ):
        request["instruction"] = preference.instruction_id
