"""Input serializers (what clients may send) and the shapes of answers. Outputs are
built from the models' own dict methods so the REST and live protocols agree."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A string, and only a string (DRF would turn 5 into "5")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class ChannelCreateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    title = StrictCharField(max_length=200, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=["public", "private"], required=False)
    mode = serializers.ChoiceField(choices=["chat", "completion"], required=False)
    framing = serializers.DictField(required=False)
    params = serializers.DictField(required=False)


class ChannelUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=["public", "private"], required=False)
    locked = serializers.BooleanField(required=False)
    framing = serializers.DictField(required=False)
    params = serializers.DictField(required=False)


class MemberSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)


class MessageSerializer(serializers.Serializer):
    text = StrictCharField(allow_blank=True, trim_whitespace=False)
    framing = serializers.DictField(required=False)
    params = serializers.DictField(required=False)


class RegenerateSerializer(serializers.Serializer):
    framing = serializers.DictField(required=False)
    params = serializers.DictField(required=False)


class InjectSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "agent", "bot"])
    text = StrictCharField(allow_blank=True, trim_whitespace=False)


class TruncateSerializer(serializers.Serializer):
    keep = serializers.IntegerField(min_value=0)


class BulkDeleteSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.UUIDField(), max_length=1000)


class TurnsQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=50)
    before = serializers.IntegerField(min_value=1, required=False)
    include_hidden = serializers.BooleanField(required=False, default=False)
