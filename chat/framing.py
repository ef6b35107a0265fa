"""Framing and sampling parameters: their defaults and their validation.

Both are validated here once, for every transport, with the protocol's ranges.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

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
}


class StrictSerializer(serializers.Serializer):
    """Rejects keys it does not know instead of ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class FramingSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, allow_blank=True, trim_whitespace=False)
    preamble = serializers.CharField(max_length=20000, allow_blank=True, trim_whitespace=False)
    user_prefix = serializers.CharField(max_length=200, allow_blank=True, trim_whitespace=False)
    bot_prefix = serializers.CharField(max_length=200, allow_blank=True, trim_whitespace=False)
    agent_prefix = serializers.CharField(max_length=200, allow_blank=True, trim_whitespace=False)
    turn_suffix = serializers.CharField(max_length=200, allow_blank=True, trim_whitespace=False)
    stop = serializers.ListField(
        child=serializers.CharField(max_length=200, trim_whitespace=False), max_length=8
    )
    quote_user = serializers.BooleanField()


class ParamsSerializer(StrictSerializer):
    provider = serializers.CharField(max_length=64, allow_blank=True)
    model = serializers.CharField(max_length=200, allow_blank=True)
    max_tokens = serializers.IntegerField(min_value=1)
    temperature = serializers.FloatField(min_value=0, max_value=2)
    top_p = serializers.FloatField(min_value=0, max_value=1)
    top_k = serializers.IntegerField(min_value=0, max_value=1000)
    repeat_penalty = serializers.FloatField(min_value=0.5, max_value=2)

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


def _flatten(errors: Any) -> Any:
    """DRF's errors as plain JSON: list items' errors come keyed by their index (an int),
    which JSON object keys cannot be, so keys become strings ("0")."""
    if isinstance(errors, dict):
        return {str(key): _flatten(value) for key, value in errors.items()}
    if isinstance(errors, list):
        return [str(item) if not isinstance(item, (dict, list)) else _flatten(item) for item in errors]
    return str(errors)


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
        raise SettingsInvalidError({label: _flatten(serializer.errors)})
    return dict(serializer.validated_data)


def effective_framing(channel_framing: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULT_FRAMING, **(channel_framing or {})}


def effective_params(channel_params: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULT_PARAMS, **(channel_params or {})}
