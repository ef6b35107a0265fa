"""POST /api/transcribe?language=en-US: a recording in, its text out (docs/protocol.md).

The body is a multipart form with ``file`` (the page's microphone button sends one), or
the raw bytes with an audio/* or video/* Content-Type (scripts, curl --data-binary).
The work runs in the request's thread (Django runs sync views in a thread pool): decode
with PyAV, then the engine (chat/uploads/transcription.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.api.outputs import errors
from chat.errors import ServiceError
from chat.uploads import transcription

# A multipart body carries its boundaries and headers beside the file.
MULTIPART_SLACK = 64 * 1024


def too_large() -> ServiceError:
    limit = settings.MAX_UPLOAD_BYTES
    return ServiceError(
        "too_large",
        f"The recording is larger than MAX_UPLOAD_BYTES ({limit} bytes).",
        fields={"file": [f"At most {limit} bytes (MAX_UPLOAD_BYTES)."]},
    )


def not_audio(reason: str = "not a readable audio file") -> ServiceError:
    return ServiceError("invalid", "Invalid input.", fields={"file": [reason[:1].upper() + reason[1:] + "."]})


def no_recording() -> ServiceError:
    return ServiceError(
        "invalid",
        "Invalid input.",
        fields={"file": ["Send the recording as the multipart field `file`, or as the body "
                         "with an audio/* or video/* Content-Type."]},
    )  # fmt: skip


class RawRecordingParser(BaseParser):
    """The body as bytes, read up to one byte past MAX_UPLOAD_BYTES (a body sent without
    a Content-Length is never read whole)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        if stream is None:
            return b""
        data = stream.read(settings.MAX_UPLOAD_BYTES + 1)
        if len(data) > settings.MAX_UPLOAD_BYTES:
            raise too_large()
        return data


class AudioParser(RawRecordingParser):
    media_type = "audio/*"


class VideoParser(RawRecordingParser):
    media_type = "video/*"


Transcript = inline_serializer(
    "Transcript",
    {
        "text": serializers.CharField(help_text="What was heard (may be empty)."),
        "language": serializers.ChoiceField(choices=transcription.LANGUAGES),
        "duration_s": serializers.FloatField(help_text="Seconds of audio transcribed."),
    },
)
RECORDING_FORM = inline_serializer("RecordingForm", {"file": serializers.FileField()})


class TranscribeView(APIView):
    required_scopes = {"POST": "files:write"}
    parser_classes = [MultiPartParser, AudioParser, VideoParser]

    @extend_schema(
        operation_id="transcribe",
        parameters=[
            OpenApiParameter(
                "language",
                str,
                required=False,
                enum=list(transcription.LANGUAGES),
                description="Default en-US.",
            )
        ],
        request={
            "multipart/form-data": RECORDING_FORM,
            "audio/*": OpenApiTypes.BINARY,
            "video/*": OpenApiTypes.BINARY,
        },
        responses={200: Transcript, **errors(400, 403, 413, 429, 502)},
    )
    def post(self, request: Request) -> Response:
        """Transcribe a recording: MP3, WAV, M4A, OGG, FLAC, WebM, MP4, MOV or AVI, at most
        MAX_UPLOAD_BYTES and TRANSCRIBE_MAX_SECONDS long; counted against DAILY_UPLOAD_BYTES."""
        language = request.query_params.get("language", "en-US")
        transcription.check_language(language)
        transcription.engine_for(language)  # before reading the body: it may be refused
        data = recording_of(request)
        return Response(transcription.transcribe_recording(user=request.user, data=data, language=language))


def recording_of(request: Request) -> bytes:
    """The recording's bytes; a body over MAX_UPLOAD_BYTES is refused by its
    Content-Length before any of it is read."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    multipart = request.content_type.startswith("multipart/")
    limit = settings.MAX_UPLOAD_BYTES + (MULTIPART_SLACK if multipart else 0)
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large()
    try:
        data = request.data
    except (TooManyFieldsSent, TooManyFilesSent, RequestDataTooBig) as exc:
        raise not_audio("send one file") from exc
    except UnsupportedMediaType as exc:  # JSON, a form, text/plain…: name what is wanted
        raise no_recording() from exc
    if isinstance(data, bytes):
        if not data:
            raise ServiceError("invalid", "Invalid input.", fields={"file": ["No recording was sent."]})
        return data
    upload = request.FILES.get("file")
    if upload is None:
        raise no_recording()
    if upload.size is not None and upload.size > settings.MAX_UPLOAD_BYTES:
        raise too_large()
    return bytes(upload.read())
