"""The caller's credits (docs/protocol.md, "Issue 18"; docs/credits.md, "Usage"):
GET /api/me/usage, their balance and what they spent per day and model. Only one's own."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.api.outputs import Output, errors
from chat.api.uploads import refuse_unknown_query
from chat.api.views import query_int, require_login
from chat.credits import selectors

# Described here rather than in chat/api/outputs.py: only this view answers with them.
CREDITS_HELP = "credits, a decimal string with six decimals"


class CreditBalance(Output):
    available = serializers.CharField(max_length=40, help_text=CREDITS_HELP)
    held = serializers.CharField(
        max_length=40, help_text="credits set aside for replies being written, six decimals"
    )


class UsageDay(Output):
    """What one model cost on one day (UTC): debits minus refunds."""

    date = serializers.DateField()
    provider = serializers.CharField(allow_blank=True)
    model = serializers.CharField(allow_blank=True)
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    credits = serializers.CharField(max_length=40, help_text=CREDITS_HELP)


class CreditUsage(Output):
    enabled = serializers.BooleanField(help_text="whether replies cost credits here (CREDITS_ENABLED)")
    balance = CreditBalance(allow_null=True, help_text="null: credits are off and the caller never had any")
    days = UsageDay(many=True)


class UsageView(APIView):
    required_scopes = {"GET": "chats:read"}

    @extend_schema(
        operation_id="me_usage",
        parameters=[OpenApiParameter("days", int, required=False, description="1–366 (default 30)")],
        responses={200: CreditUsage, **errors(400, 403)},
    )
    def get(self, request: Request) -> Response:
        """The caller's balance and their usage per day (UTC) and model over the last
        `days` days, today included, oldest first; days without usage are left out."""
        caller = require_login(request)
        refuse_unknown_query(request, {"days"})
        days = query_int(
            request,
            "days",
            default=selectors.USAGE_DAYS_DEFAULT,
            low=1,
            high=selectors.USAGE_DAYS_MAX,
        )
        return Response(selectors.usage_state(caller, days))
