"""Every API error is `{"detail": "..."}` with a fitting status (docs/protocol.md)."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from chat.errors import UNAVAILABLE, ServiceError, unavailable_error

log = logging.getLogger(__name__)


def service_error_response(exc: ServiceError) -> Response:
    body: dict[str, Any] = {"detail": exc.text, "code": exc.code}
    if exc.fields is not None:
        body["fields"] = exc.fields
    headers = {}
    if exc.retry_after is not None:
        body["retry_after"] = exc.retry_after
        headers["Retry-After"] = str(exc.retry_after)
    return Response(body, status=exc.http_status, headers=headers)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return service_error_response(exc)
    if isinstance(exc, UNAVAILABLE):
        # An outage, not a bug: one line in the log, and a 503 the client can act on
        # (services reach Redis before they commit, so nothing was saved).
        log.warning("%s answered 503: %s", getattr(context.get("request"), "path", "a request"), exc)
        return service_error_response(unavailable_error())
    if isinstance(exc, exceptions.ValidationError):
        return Response(
            {"detail": "Invalid input.", "code": "invalid", "fields": exc.detail},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, exceptions.ParseError):
        return Response({"detail": str(exc.detail), "code": "bad_json"}, status=status.HTTP_400_BAD_REQUEST)
    response = drf_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "code" not in response.data:
        # DRF's own refusals (not logged in, a bad token, CSRF, not found, a method not
        # allowed…) carry the protocol's code like ours do.
        response.data["code"] = PROTOCOL_CODES.get(response.status_code, "invalid")
    return response


# The protocol's error code for the statuses DRF answers by itself.
PROTOCOL_CODES = {
    401: "auth_required",
    403: "forbidden",
    404: "not_found",
    405: "invalid",
    406: "invalid",
    415: "invalid",
    429: "rate_limited",
}
