"""The knowledge-base endpoints (docs/protocol.md, "Knowledge bases"). Thin like the other
views: parse, look up through selectors scoped to the caller (404 for a base they may not
read, so a private room's base cannot be told from a missing one), call one service,
answer."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import selectors
from chat.api import outputs
from chat.api.outputs import errors
from chat.api.scopes import TokenScopes
from chat.api.uploads import refuse_unknown_query
from chat.api.views import ASCII_DIGITS, parse, require_login
from chat.errors import ServiceError
from chat.knowledge import selectors as kb_selectors
from chat.knowledge import services as kb_services
from chat.models import Channel, KnowledgeBase
from chat.schemas import (
    KnowledgeBaseCreateSerializer,
    KnowledgeBaseUpdateSerializer,
    KnowledgeDocumentsSerializer,
    KnowledgeSearchSerializer,
)


def base_or_404(request: Request, base_id: str) -> KnowledgeBase:
    found = kb_selectors.base_for(request.user, base_id)
    if found is None:
        raise Http404("No such knowledge base.")
    return found


def fresh(request: Request, base: KnowledgeBase) -> dict[str, Any]:
    """The base as the caller sees it now (its documents read again)."""
    return kb_selectors.base_to_dict(base_or_404(request, str(base.pk)), request.user)


def channel_param(request: Request, *, required: bool) -> Channel | None:
    name = request.query_params.get("channel")
    if name is None:
        if required:
            raise serializers.ValidationError({"channel": ["A channel name is required."]})
        return None
    channel = selectors.channel_for(request.user, name)
    if channel is None:
        raise Http404("No such channel.")
    return channel


class KnowledgeBasesView(APIView):
    required_scopes = {"GET": "chats:read", "POST": "files:write"}

    @extend_schema(
        operation_id="knowledge_bases_list",
        parameters=[OpenApiParameter("channel", str, required=False, description="that channel's bases")],
        responses={200: outputs.KnowledgeBaseList, **errors(400, 404)},
    )
    def get(self, request: Request) -> Response:
        """The caller's own bases and those of the channels they own or belong to; with
        `channel`, that channel's own and attached bases. By name, at most 500."""
        caller = require_login(request)
        refuse_unknown_query(request, {"channel"})
        rows = kb_selectors.listed_bases(caller, channel=channel_param(request, required=False))
        return Response({"knowledge_bases": [kb_selectors.base_to_dict(b, caller) for b in rows]})

    @extend_schema(
        request=KnowledgeBaseCreateSerializer,
        responses={201: outputs.KnowledgeBase, **errors(400, 403, 404, 413)},
    )
    def post(self, request: Request) -> Response:
        """A new base: the caller's own, or (with `channel`, its owner or a moderator) the
        channel's, attached to it at once."""
        caller = require_login(request)
        data = parse(KnowledgeBaseCreateSerializer, request)
        channel = None
        if "channel" in data:
            channel = selectors.channel_for(caller, data["channel"])
            if channel is None:
                raise Http404("No such channel.")
        base = kb_services.create_base(
            user=caller, name=data["name"], description=data.get("description", ""), channel=channel
        )
        return Response(fresh(request, base), status=status.HTTP_201_CREATED)


class AvailableBasesView(APIView):
    required_scopes = {"GET": "chats:read"}

    @extend_schema(
        operation_id="knowledge_bases_available",
        parameters=[OpenApiParameter("channel", str, required=True, description="a channel's name")],
        responses={200: outputs.KnowledgeBaseList, **errors(400, 404)},
    )
    def get(self, request: Request) -> Response:
        """What the caller may use in `channel` (attach it, name it in a message): their
        own bases, the channel's own and those attached to it."""
        caller = require_login(request)
        refuse_unknown_query(request, {"channel"})
        channel = channel_param(request, required=True)
        assert channel is not None
        rows = kb_selectors.available_bases(caller, channel)
        return Response({"knowledge_bases": [kb_selectors.base_to_dict(b, caller) for b in rows]})


class KnowledgeBaseDetailView(APIView):
    required_scopes = {"GET": "chats:read", "PATCH": "files:write", "DELETE": "files:write"}

    @extend_schema(responses={200: outputs.KnowledgeBase, **errors(404)})
    def get(self, request: Request, base_id: str) -> Response:
        require_login(request)
        return Response(kb_selectors.base_to_dict(base_or_404(request, base_id), request.user))

    @extend_schema(
        request=KnowledgeBaseUpdateSerializer, responses={200: outputs.KnowledgeBase, **errors(400, 403, 404)}
    )
    def patch(self, request: Request, base_id: str) -> Response:
        """Rename it or change its description (who may manage it)."""
        caller = require_login(request)
        base = base_or_404(request, base_id)
        changes = parse(KnowledgeBaseUpdateSerializer, request)
        kb_services.update_base(user=caller, base=base, changes=changes)
        return Response(fresh(request, base))

    @extend_schema(responses={204: None, **errors(403, 404)})
    def delete(self, request: Request, base_id: str) -> Response:
        """Delete it with its documents and passages; channels using it stop."""
        caller = require_login(request)
        kb_services.delete_base(user=caller, base=base_or_404(request, base_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _single_text_fields(exc: ServiceError) -> ServiceError:
    """A refusal of the one-text form names its own fields (`text`, `name`), not
    `texts.0.…`."""
    texts = (exc.fields or {}).get("texts")
    if isinstance(texts, dict) and isinstance(texts.get("0"), dict):
        return ServiceError(exc.code, exc.text, fields=texts["0"], retry_after=exc.retry_after)
    return exc


class KnowledgeDocumentsView(APIView):
    required_scopes = {"POST": "files:write"}

    @extend_schema(
        request=KnowledgeDocumentsSerializer,
        responses={201: outputs.KnowledgeDocumentList, **errors(400, 403, 404, 409, 413, 415)},
    )
    def post(self, request: Request, base_id: str) -> Response:
        """Add documents: `{"uploads": [ids]}` (the caller's own; indexed when ready),
        `{"name", "text"}` or `{"texts": [{"name", "text"}]}`. Progress comes as
        `knowledge_base_updated` events on a channel base's channel."""
        caller = require_login(request)
        base = base_or_404(request, base_id)
        data = parse(KnowledgeDocumentsSerializer, request)
        if "text" in data:
            try:
                made = kb_services.add_documents(
                    user=caller, base=base, texts=[{"name": data["name"], "text": data["text"]}]
                )
            except ServiceError as exc:
                raise _single_text_fields(exc) from None
        else:
            made = kb_services.add_documents(
                user=caller,
                base=base,
                upload_ids=data.get("uploads", []),
                texts=[dict(item) for item in data.get("texts", [])],
            )
        return Response(
            {"documents": [kb_selectors.document_to_dict(d) for d in made]}, status=status.HTTP_201_CREATED
        )


class KnowledgeDocumentDetailView(APIView):
    required_scopes = {"DELETE": "files:write"}

    @extend_schema(responses={204: None, **errors(403, 404)})
    def delete(self, request: Request, base_id: str, document_id: str) -> Response:
        """Delete a document and its passages (who may manage the base)."""
        caller = require_login(request)
        base = base_or_404(request, base_id)
        document = kb_selectors.document_for(base, document_id)
        if document is None:
            raise Http404("No such document.")
        kb_services.delete_document(user=caller, base=base, document=document)
        return Response(status=status.HTTP_204_NO_CONTENT)


class KnowledgeSearchView(APIView):
    required_scopes = {"POST": "chats:read"}

    @extend_schema(
        request=KnowledgeSearchSerializer, responses={200: outputs.SearchResults, **errors(400, 403, 404)}
    )
    def post(self, request: Request, base_id: str) -> Response:
        """Search one base (whoever may read it): `query` (1–2000 characters), `limit`
        (1–50, default KB_TOP_K), `threshold` (0–1, default KB_SCORE_THRESHOLD) →
        passages best first."""
        require_login(request)
        base = base_or_404(request, base_id)
        data = parse(KnowledgeSearchSerializer, request)
        query = data["query"]
        if not query.strip():
            raise ServiceError("invalid", "The query is blank.", fields={"query": ["The query is blank."]})
        from chat.knowledge.search import search  # late: it loads the embedding models

        found = search(
            [base],
            query,
            limit=data.get("limit", int(getattr(settings, "KB_TOP_K", 10))),
            threshold=data.get("threshold", float(getattr(settings, "KB_SCORE_THRESHOLD", 0.1))),
        )
        return Response(
            {
                "results": [
                    {
                        "chunk": hit.chunk_id,
                        "score": hit.score,
                        "text": hit.text,
                        "document": {"id": str(hit.document_id), "name": hit.document_name},
                        "page": hit.page,
                    }
                    for hit in found.hits
                ],
                "failed": {str(base_id): reason for base_id, reason in found.failed.items()},
            }
        )


class KnowledgeChunkView(APIView):
    required_scopes = {"GET": "chats:read"}
    permission_classes = [AllowAny, TokenScopes]  # checked below: the base's readers, or the citing turn's

    @extend_schema(
        parameters=[
            OpenApiParameter("turn", int, required=False, description="a reply whose sources cite it"),
            OpenApiParameter("key", str, required=False, description="a private channel's watch key"),
        ],
        responses={200: outputs.KnowledgeChunk, **errors(400, 404)},
    )
    def get(self, request: Request, base_id: str, chunk_id: str) -> Response:
        """One passage, for a citation link: for whoever may read its base, or (with
        `turn`, and `key` on a private channel's watch link) whoever may read a reply
        whose sources cite it. Everyone else: 404."""
        refuse_unknown_query(request, {"turn", "key"})
        turn_id = None
        if (raw := request.query_params.get("turn")) is not None:
            if not ASCII_DIGITS.fullmatch(raw) or int(raw) < 1:
                raise serializers.ValidationError({"turn": ["Expected a turn id."]})
            turn_id = int(raw)
        found = None
        if ASCII_DIGITS.fullmatch(chunk_id):
            found = kb_selectors.chunk_for(
                request.user, int(chunk_id), turn_id=turn_id, key=request.query_params.get("key")
            )
        if found is None or str(found.knowledge_base_id) != str(kb_selectors.parsed_id(base_id)):
            raise Http404("No such passage.")
        return Response(kb_selectors.chunk_to_dict(found))
