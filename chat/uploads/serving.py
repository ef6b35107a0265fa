"""An upload's bytes as an HTTP answer: never something a browser runs.

Every answer is sandboxed (CSP `default-src 'none'; sandbox`), typed with the real
type read from its bytes and `nosniff`, and a download (`Content-Disposition:
attachment`) unless it is a raster image asked for with ``?inline=1`` (the page's
thumbnails). SVG, which can carry script, is always a download."""

from __future__ import annotations

from django.http import FileResponse
from django.utils.http import content_disposition_header

from chat.models import Upload
from chat.uploads.sniff import RASTER

SANDBOX = "default-src 'none'; sandbox"


def may_show_inline(upload: Upload) -> bool:
    return upload.mime in RASTER


def content_response(upload: Upload, *, inline: bool) -> FileResponse:
    """Stream the stored file (local disk or S3) with the headers above."""
    stored = upload.file.open("rb")
    response = FileResponse(stored, content_type=upload.mime)
    shown = inline and may_show_inline(upload)
    response["Content-Disposition"] = content_disposition_header(not shown, upload.name) or "attachment"
    if not response.has_header("Content-Length"):  # (an S3 file's is not known to FileResponse)
        response["Content-Length"] = str(upload.size)
    response["X-Content-Type-Options"] = "nosniff"
    # (Set here, the site-wide CSP middleware leaves it as it is.)
    response["Content-Security-Policy"] = SANDBOX
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    # Access is checked per request: no shared cache may keep a copy for others.
    response["Cache-Control"] = "private, no-cache"
    return response
