"""Framing and sampling parameters: their defaults and their validation.

Both are validated here once, for every transport, with the protocol's ranges and the
strict fields of chat/schemas.py (no "5" for 5, no "yes" for true, no NUL).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from chat.schemas import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictListField,
    StrictSerializer,
    ThinkingField,
    error_fields,
)

DEFAULT_FRAMING: dict[str, Any] = {
    "name": "Conversation",
    "preamble": "The following is a friendly conversation between a user and an assistant.\n\n",
    "user_prefix": "User: ",
    "bot_prefix": "Assistant: ",
    "agent_prefix": "",
    "turn_suffix": "\n\n",
    "stop": ["\nUser:"],
    "quote_user": False,
}

DEFAULT_PARAMS: dict[str, Any] = {
    "provider": "",
    "model": "",
    "max_tokens": 256,
    "temperature": 0.8,
    "top_p": 0.95,
    "top_k": 40,
    "repeat_penalty": 1.1,
    "thinking": False,
}


class FramingSerializer(StrictSerializer):
    name = StrictCharField(max_length=100, allow_blank=True)
    preamble = StrictCharField(max_length=20000, allow_blank=True)
    user_prefix = StrictCharField(max_length=200, allow_blank=True)
    bot_prefix = StrictCharField(max_length=200, allow_blank=True)
    agent_prefix = StrictCharField(max_length=200, allow_blank=True)
    turn_suffix = StrictCharField(max_length=200, allow_blank=True)
    stop = StrictListField(child=StrictCharField(max_length=200), max_length=8)
    quote_user = StrictBooleanField()


class ParamsSerializer(StrictSerializer):
    provider = StrictCharField(max_length=64, allow_blank=True)
    model = StrictCharField(max_length=200, allow_blank=True)
    max_tokens = StrictIntegerField(min_value=1)
    temperature = StrictFloatField(min_value=0, max_value=2)
    top_p = StrictFloatField(min_value=0, max_value=1)
    top_k = StrictIntegerField(min_value=0, max_value=1000)
    repeat_penalty = StrictFloatField(min_value=0.5, max_value=2)
    thinking = ThinkingField()

    def validate_max_tokens(self, value: int) -> int:
        if value > settings.MAX_TOKENS_LIMIT:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.MAX_TOKENS_LIMIT}."
            )
        return value

    def validate_provider(self, value: str) -> str:
        from chat.models import Provider

        if value and not Provider.objects.filter(name=value, enabled=True).exists():
            raise serializers.ValidationError("No enabled provider has this name.")
        return value


class SettingsInvalidError(Exception):
    """Framing or params failed validation; ``fields`` maps each field to its messages."""

    def __init__(self, fields: dict[str, Any]):
        super().__init__("invalid settings")
        self.fields = fields


def merge_framing(current: dict[str, Any], changes: Any) -> dict[str, Any]:
    """Apply a (partial) framing to the current one, or raise SettingsInvalidError."""
    return _merge(FramingSerializer, DEFAULT_FRAMING, current, changes, "framing")


def merge_params(current: dict[str, Any], changes: Any) -> dict[str, Any]:
    """Apply (partial) params to the current ones, or raise SettingsInvalidError."""
    return _merge(ParamsSerializer, DEFAULT_PARAMS, current, changes, "params")


def _merge(
    serializer_class: type[StrictSerializer],
    defaults: dict[str, Any],
    current: dict[str, Any],
    changes: Any,
    label: str,
) -> dict[str, Any]:
    if not isinstance(changes, dict):
        raise SettingsInvalidError({label: ["Expected an object."]})
    merged = {**defaults, **(current or {}), **changes}
    serializer = serializer_class(data=merged)
    if not serializer.is_valid():
        raise SettingsInvalidError({label: error_fields(serializer.errors)})
    return dict(serializer.validated_data)


def effective_framing(channel_framing: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULT_FRAMING, **(channel_framing or {})}


def effective_params(channel_params: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULT_PARAMS, **(channel_params or {})}
