"""Keep watch keys out of the servers' logs.

A private channel's watch link carries its key in the query string (``/watch/x?key=…``,
``/ws/x?watch=1&key=…``, ``/api/channels/x/events?key=…``), and both servers log request
lines: uvicorn through the ``uvicorn.access`` logger (WebSocket handshakes through
``uvicorn.error``), daphne through the access-log writer its command line builds. Both
get the key replaced with ``[redacted]``. Installed by chatsite.asgi, which both servers
import after setting up their logging and before building daphne's writer.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from daphne import cli as daphne_cli
from daphne.access import AccessLogGenerator

KEY_VALUE = re.compile(r"([?&]key=)[^&\s\"]*")


def redact(text: str) -> str:
    return KEY_VALUE.sub(r"\1[redacted]", text)


class RedactKeys(logging.Filter):
    """uvicorn passes the request line as a format argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


class RedactingAccessLogGenerator(AccessLogGenerator):  # type: ignore[misc]  # an untyped base class (no stubs)
    def write_entry(self, host: Any, date: Any, request: str, *args: Any, **kwargs: Any) -> None:
        super().write_entry(host, date, redact(request), *args, **kwargs)


def install() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())
    daphne_cli.AccessLogGenerator = RedactingAccessLogGenerator
