"""The query of a turns page, REST's alone. Bodies are checked by chat/schemas.py, the
one strict schema per action that the WebSocket uses too."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class TurnsQuerySerializer(serializers.Serializer[Any]):
    # Query values are strings by nature: "1" is how a query says true or one.
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=50)
    before = serializers.IntegerField(min_value=1, required=False)
    include_hidden = serializers.BooleanField(required=False, default=False)
