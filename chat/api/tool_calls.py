"""Tool calls over REST: approving one that waits (the WebSocket's approve_tool /
deny_tool), and reading back a redacted result that is one's own."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import selectors, services
from chat.agents.steps import private_content
from chat.api import outputs
from chat.api.outputs import errors
from chat.api.views import ASCII_DIGITS, channel_or_404, parse, require_login
from chat.schemas import ToolApprovalSerializer


class ToolApprovalView(APIView):
    required_scopes = {"POST": "chats:write"}

    @extend_schema(
        request=ToolApprovalSerializer, responses={200: outputs.ToolDecision, **errors(400, 403, 404)}
    )
    def post(self, request: Request, name: str) -> Response:
        """Approve or deny a call of the reply being written that waits for approval
        (the author of the message it answers, or the channel's owner)."""
        caller = require_login(request)
        channel = channel_or_404(request, name)
        data = parse(ToolApprovalSerializer, request)
        return Response(
            services.decide_tool_call(
                channel=channel, user=caller, call_id=data["call_id"], approve=data["approve"]
            )
        )


class StepContentView(APIView):
    required_scopes = {"GET": "chats:read"}

    @extend_schema(responses={200: outputs.StepContent, **errors(401, 404)})
    def get(self, request: Request, turn_id: str, call_id: str) -> Response:
        """The whole result of a redacted step (a call that read a personal knowledge
        base or memories), for the person whose data it is; 404 for anyone else."""
        caller = require_login(request)
        turn = (
            selectors.readable_turn(caller, int(turn_id), None) if ASCII_DIGITS.fullmatch(turn_id) else None
        )
        content = private_content(turn.steps, call_id, caller.pk) if turn is not None else None
        if content is None:
            raise Http404("No such step of yours.")
        return Response({"call_id": call_id, "content": content})
