"""The one error type services raise; transports turn it into a frame or a response."""

from __future__ import annotations

from typing import Any

import redis
from django import db

# Protocol error code -> HTTP status.
HTTP_STATUS = {
    "bad_json": 400,
    "unknown_type": 400,
    "invalid": 400,
    "read_only": 403,
    "auth_required": 401,
    "forbidden": 403,
    "locked": 409,
    "muted": 403,
    "too_long": 413,
    "too_large": 413,
    "unsupported_type": 415,
    "not_ready": 409,
    "no_vision": 400,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "provider_error": 502,
    "not_found": 404,
    "unavailable": 503,
    "language_unavailable": 400,
    "insufficient_credits": 402,
}

# Redis or the database cannot be reached: the request was fine, the service is not.
# (OperationalError also covers SQLite's "database is locked"; that is a moment's
# unavailability too.)
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    db.OperationalError,
    db.InterfaceError,
)
# Seconds a client should wait before trying again.
UNAVAILABLE_RETRY_AFTER_S = 5


class ServiceError(Exception):
    """A refused request: ``code`` is one of the protocol's error codes."""

    def __init__(
        self,
        code: str,
        text: str,
        *,
        fields: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(text)
        self.code = code
        self.text = text
        self.fields = fields
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)

    def to_event(self, channel_name: str | None = None) -> dict[str, Any]:
        from chat.realtime.events import error_event  # late: events loads the channel layer

        return dict(
            error_event(
                self.code, self.text, channel=channel_name, fields=self.fields, retry_after=self.retry_after
            )
        )


def unavailable_error() -> ServiceError:
    """The answer to a request that failed because Redis or the database is down."""
    return ServiceError(
        "unavailable",
        "The service is briefly unavailable (its database or Redis cannot be reached); "
        "nothing was changed. Try again shortly.",
        retry_after=UNAVAILABLE_RETRY_AFTER_S,
    )
