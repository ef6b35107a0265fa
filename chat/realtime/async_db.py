"""Running ORM code from async code: in a thread pool, with the connection closed
afterwards, so no coroutine holds a database connection while it waits."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def db_call(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Wrap a sync ORM function for async callers. Not thread-sensitive: calls from
    different sockets and generations run side by side instead of in one queue."""

    @functools.wraps(fn)
    def closing(*args: Any, **kwargs: Any) -> R:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(closing, thread_sensitive=False)
