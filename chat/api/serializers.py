"""Input serializers of the REST API. The bodies' schemas are chat/schemas.py's, which
the WebSocket uses too (one strict schema per action); only the query of a turns page,
which is REST's alone, is here."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from chat.schemas import (
    BulkDeleteSerializer,
    ChannelCreateSerializer,
    ChannelUpdateSerializer,
    InjectSerializer,
    InterruptSerializer,
    MemberSerializer,
    MessageSerializer,
    RegenerateSerializer,
    ResetSerializer,
    TruncateSerializer,
)

__all__ = [
    "BulkDeleteSerializer",
    "ChannelCreateSerializer",
    "ChannelUpdateSerializer",
    "InjectSerializer",
    "InterruptSerializer",
    "MemberSerializer",
    "MessageSerializer",
    "RegenerateSerializer",
    "ResetSerializer",
    "TruncateSerializer",
    "TurnsQuerySerializer",
]


class TurnsQuerySerializer(serializers.Serializer[Any]):
    # Query values are strings by nature: "1" is how a query says true or one.
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=50)
    before = serializers.IntegerField(min_value=1, required=False)
    include_hidden = serializers.BooleanField(required=False, default=False)
