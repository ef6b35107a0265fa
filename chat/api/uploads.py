"""The uploads endpoints (docs/protocol.md, "Files"): send a file, list, read, delete,
and its bytes. Thin like the other views: parse, look up through selectors scoped to the
caller, call one service, answer."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import Http404, HttpRequest
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import selectors
from chat.api import outputs
from chat.api.outputs import errors
from chat.api.scopes import TokenScopes
from chat.api.views import require_login
from chat.errors import ServiceError
from chat.uploads import body_limit, serving
from chat.uploads import selectors as upload_selectors
from chat.uploads.services import create_upload, delete_upload, too_large

MULTIPART_MARGIN = body_limit.MULTIPART_MARGIN


class CappedUploadHandler(FileUploadHandler):
    """Stops a multipart body whose files pass MAX_UPLOAD_BYTES as it is read: a chunked
    body has no Content-Length to refuse it by, and must not fill the disk."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.seen = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.seen += len(raw_data)
        if self.seen > settings.MAX_UPLOAD_BYTES:
            raise too_large()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


class UploadRequestSerializer(serializers.Serializer[Any]):
    """For the schema: a multipart form with the file and, optionally, a channel."""

    file = serializers.FileField(help_text="the file; its type is read from its bytes")
    channel = serializers.CharField(required=False, help_text="the channel it is for (its name)")


def content_length(request: HttpRequest) -> int | None:
    raw = request.META.get("CONTENT_LENGTH") or ""
    return int(raw) if raw.isascii() and raw.isdigit() else None


def query_flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "0":
        return False
    if raw == "1":
        return True
    raise serializers.ValidationError({name: ["Expected 0 or 1."]})


def refuse_unknown_query(request: Request, known: set[str]) -> None:
    unknown = sorted(set(request.query_params) - known - {"format"})
    if unknown:
        raise serializers.ValidationError({name: ["Unknown parameter."] for name in unknown})


def upload_or_404(request: Request, upload_id: str) -> Any:
    found = upload_selectors.own_upload(request.user, upload_id)
    if found is None:
        raise Http404("No such upload.")
    return found


class UploadsView(APIView):
    required_scopes = {"GET": "chats:read", "POST": "files:write"}
    parser_classes = [MultiPartParser]

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        if request.method == "POST":
            request.upload_handlers = [CappedUploadHandler(request), *request.upload_handlers]
        return super().initialize_request(request, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Before anything reads the body (the CSRF check of a session login reads the form).
        length = content_length(request._request)
        if request.method == "POST" and length and length > settings.MAX_UPLOAD_BYTES + MULTIPART_MARGIN:
            raise too_large(length)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="uploads_list",
        parameters=[OpenApiParameter("channel", str, required=False, description="only this channel's")],
        responses={200: outputs.UploadList, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        """The caller's uploads, newest first (the newest 500)."""
        caller = require_login(request)
        refuse_unknown_query(request, {"channel"})
        rows = upload_selectors.uploads_of(caller, channel_name=request.query_params.get("channel"))
        return Response({"uploads": [upload.to_dict() for upload in rows]})

    @extend_schema(
        request={"multipart/form-data": UploadRequestSerializer},
        responses={201: outputs.Upload, **errors(400, 403, 404, 409, 413, 415, 429)},
    )
    def post(self, request: Request) -> Response:
        """Upload a file (multipart `file`, optionally `channel`); it is processed in the
        background (`attachment_updated` events on its channel)."""
        caller = require_login(request)
        files, data = request.FILES, request.data
        unknown = sorted((set(data) | set(files)) - {"file", "channel"})
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        sent = files.getlist("file")
        if len(sent) != 1:
            raise ServiceError(
                "invalid",
                "Send one file as the multipart field `file`.",
                fields={"file": ["Expected one file." if sent else "No file was sent."]},
            )
        channel = None
        if (name := data.get("channel")) is not None:
            channel = selectors.channel_for(caller, name)
            if channel is None:
                raise Http404("No such channel.")
        upload = create_upload(user=caller, data_or_file=sent[0], name=sent[0].name or "", channel=channel)
        return Response(upload.to_dict(), status=status.HTTP_201_CREATED)


class UploadDetailView(APIView):
    required_scopes = {"GET": "chats:read", "DELETE": "files:write"}

    @extend_schema(responses={200: outputs.Upload, **errors(404)})
    def get(self, request: Request, upload_id: str) -> Response:
        """One of the caller's uploads."""
        require_login(request)
        return Response(upload_or_404(request, upload_id).to_dict())

    @extend_schema(responses={204: None, **errors(403, 404)})
    def delete(self, request: Request, upload_id: str) -> Response:
        """Delete an upload and its file (its owner; an admin). One sent with a message
        stays listed on its turn as `deleted`."""
        caller = require_login(request)
        found = upload_selectors.deletable_upload(caller, upload_id)
        if found is None:
            raise Http404("No such upload.")
        delete_upload(user=caller, upload=found)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AnyAccept(BaseContentNegotiation):
    """Bytes are answered whatever the client accepts (an <img> asks for images); a
    refusal is JSON."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class UploadContentView(APIView):
    required_scopes = {"GET": "chats:read"}
    # Checked per request below: the owner, or the turn's watchers.
    permission_classes = [AllowAny, TokenScopes]
    content_negotiation_class = AnyAccept

    @extend_schema(
        parameters=[
            OpenApiParameter("key", str, required=False, description="a private channel's watch key"),
            OpenApiParameter(
                "inline", int, required=False, description="1: shown in the page (raster images only)"
            ),
        ],
        responses={(200, "*/*"): outputs.UPLOAD_CONTENT, **errors(400, 404)},
    )
    def get(self, request: Request, upload_id: str) -> Any:
        """The file's bytes: for its owner, and for whoever may see the message it was
        sent with (its channel's watchers; private channels: members, or the current
        watch key). Everyone else: 404."""
        refuse_unknown_query(request, {"key", "inline"})
        inline = query_flag(request, "inline")
        found = upload_selectors.servable_upload(request.user, upload_id, request.query_params.get("key"))
        if found is None:
            raise Http404("No such upload.")
        return serving.content_response(found, inline=inline)
