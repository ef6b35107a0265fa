"""An ASGI guard for the bodies that carry files: Django's ASGI handler reads a whole
request body (to memory, then a temporary file) before any view runs, so a view cannot
refuse a 10 GB body before it was read. This runs first: a body declared too long
(Content-Length) is refused unread, and one that grows too long as it comes (chunked)
is cut off where it passes the limit. Both answer 413 `too_large` naming the setting."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from django.conf import settings

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# What a multipart body may carry beyond its file: boundaries, part headers, a channel name.
MULTIPART_MARGIN = 64 * 1024

_UPLOADS = re.compile(r"/api/(uploads|transcribe)/?")
_MESSAGES = re.compile(r"/api/channels/[^/]+/messages/?")
_KB_DOCUMENTS = re.compile(r"/api/knowledge-bases/[^/]+/documents/?")


def kb_documents_body_limit() -> int:
    """The longest body that adds pasted text to a knowledge base: KB_MAX_TEXT_CHARS
    characters of up to four UTF-8 bytes, and room for names and JSON."""
    chars = int(getattr(settings, "KB_MAX_TEXT_CHARS", 2_000_000))
    return 4 * chars + 256 * 1024


def message_body_limit() -> int:
    """The longest message body read: text, choices and the seed form's image (base64
    of MAX_UPLOAD_BYTES)."""
    return int((settings.MAX_UPLOAD_BYTES + 2) // 3 * 4 + 4 * settings.MAX_MESSAGE_CHARS + 256 * 1024)


def body_limit(method: str, path: str) -> int | None:
    """The longest body this request may send, or None where this guard does not apply.
    Every other request (any method, any path) may send what Django would read of a form
    or a JSON body, DATA_UPLOAD_MAX_MEMORY_SIZE: Django's handler reads a body whole
    before the view answers 401 or 405, so without a bound a PUT of gigabytes fills the
    disk, logged in or not."""
    if method == "POST" and _UPLOADS.fullmatch(path):
        return int(settings.MAX_UPLOAD_BYTES) + MULTIPART_MARGIN
    if method == "POST" and _MESSAGES.fullmatch(path):
        return message_body_limit()
    if method == "POST" and _KB_DOCUMENTS.fullmatch(path):
        return kb_documents_body_limit()
    other = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return None if other is None else int(other)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _refusal(scope: Scope, limit: int) -> str:
    path = scope.get("path", "")
    if scope.get("method") == "POST" and (_UPLOADS.fullmatch(path) or _MESSAGES.fullmatch(path)):
        limit = settings.MAX_UPLOAD_BYTES
        return f"The body is too long: a file may be at most MAX_UPLOAD_BYTES ({limit} bytes)."
    if scope.get("method") == "POST" and _KB_DOCUMENTS.fullmatch(path):
        chars = int(getattr(settings, "KB_MAX_TEXT_CHARS", 2_000_000))
        return f"The body is too long: pasted text may be at most KB_MAX_TEXT_CHARS ({chars} characters)."
    return f"The body is too long: at most DATA_UPLOAD_MAX_MEMORY_SIZE ({limit} bytes) here."


async def _refuse(send: Send, scope: Scope, limit: int) -> None:
    body = orjson.dumps({"detail": _refusal(scope, limit), "code": "too_large"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: see the module's docstring."""

    def __init__(self, app: Any):  # an ASGI application
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = (
            body_limit(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        )
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, scope, limit)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not refused:
                        refused = True
                        await _refuse(send, scope, limit)
                    # Django stops reading and answers nothing (the client is "gone").
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded)
