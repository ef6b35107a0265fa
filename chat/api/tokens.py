"""The caller's API tokens (docs/protocol.md, "Scopes"): list, make (the secret shown
once), revoke. The rules are chat/services/tokens.py's; a token asking may only make or
revoke tokens with scopes it holds itself."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.api import outputs
from chat.api.outputs import errors
from chat.api.scopes import held_scopes, held_until
from chat.api.uploads import refuse_unknown_query
from chat.api.views import parse, require_login
from chat.models import SCOPES, ApiToken, iso
from chat.schemas import (
    StrictCharField,
    StrictChoiceField,
    StrictDateTimeField,
    StrictListField,
    StrictSerializer,
)
from chat.services import tokens


class TokenCreateSerializer(StrictSerializer):
    # Length, repeats and who may hold which scope: the service's checks, one message each.
    name = StrictCharField(help_text="1–100 characters, unique among your tokens")
    scopes = StrictListField(child=StrictChoiceField(choices=list(SCOPES)), help_text="at least one")
    expires_at = StrictDateTimeField(required=False, allow_null=True, help_text="ISO 8601, in the future")


class TokenInfo(outputs.Output):
    id = serializers.IntegerField()
    name = serializers.CharField()
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=list(SCOPES)))
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="to the minute")
    expires_at = serializers.DateTimeField(allow_null=True)
    expired = serializers.BooleanField()
    current = serializers.BooleanField(help_text="the token this request was made with")


class TokenList(outputs.Output):
    tokens = TokenInfo(many=True)


class NewToken(outputs.Output):
    id = serializers.IntegerField()
    name = serializers.CharField()
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=list(SCOPES)))
    token = serializers.CharField(help_text="shown only in this answer")
    expires_at = serializers.DateTimeField(allow_null=True)


def token_to_dict(token: ApiToken, current: Any = None) -> dict[str, Any]:
    return {
        "id": token.pk,
        "name": token.name,
        "scopes": list(token.scopes),
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at) if token.last_used_at else None,
        "expires_at": iso(token.expires_at) if token.expires_at else None,
        "expired": token.expired(),
        "current": isinstance(current, ApiToken) and current.pk == token.pk,
    }


class TokensView(APIView):
    # Making one needs no scope of its own: the new token's scopes must be the asking
    # token's (chat/services/tokens.py).
    required_scopes = {"GET": "chats:read", "POST": None}

    @extend_schema(operation_id="me_tokens_list", responses={200: TokenList, **errors(400)})
    def get(self, request: Request) -> Response:
        """The caller's tokens, oldest first, without their secrets."""
        caller = require_login(request)
        refuse_unknown_query(request, set())
        rows = ApiToken.objects.filter(user=caller).order_by("created_at", "pk")
        return Response({"tokens": [token_to_dict(t, request.auth) for t in rows]})

    @extend_schema(request=TokenCreateSerializer, responses={201: NewToken, **errors(400, 403)})
    def post(self, request: Request) -> Response:
        """A named token with `scopes` and an optional `expires_at`; its secret is shown
        only in this answer."""
        caller = require_login(request)
        data = parse(TokenCreateSerializer, request)
        token, raw = tokens.create_token(
            user=caller,
            name=data["name"],
            scopes=data["scopes"],
            expires_at=data.get("expires_at"),
            held=held_scopes(request),
            until=held_until(request),
            made_by=request.auth if isinstance(request.auth, ApiToken) else None,
        )
        return Response(
            {
                "id": token.pk,
                "name": token.name,
                "scopes": token.scopes,
                "token": raw,
                "expires_at": iso(token.expires_at) if token.expires_at else None,
            },
            status=status.HTTP_201_CREATED,
        )


class TokenDetailView(APIView):
    # Revoking needs no scope of its own: a token may revoke itself, or a token whose
    # scopes it holds (chat/services/tokens.py).
    required_scopes = {"DELETE": None}

    @extend_schema(responses={204: None, **errors(403, 404)})
    def delete(self, request: Request, token_id: str) -> Response:
        """Revoke one of the caller's tokens: refused at once, its sockets and streams end
        within LOGIN_RECHECK_SECONDS."""
        caller = require_login(request)
        own = request.auth.pk if isinstance(request.auth, ApiToken) else None
        tokens.revoke_token(user=caller, token_id=token_id, held=held_scopes(request), own=own)
        return Response(status=status.HTTP_204_NO_CONTENT)
