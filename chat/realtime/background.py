"""One asyncio loop per process, in a daemon thread, for work that no request owns.

Generations run here so that they outlive the socket or HTTP request that asked for
them, and synchronous code (services, admin, DRF views) publishes its events through
this loop so that every publish reuses the same Redis connections.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()


def get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="colloquy-background", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
            # Stop before the embedded Redis does (atexit runs last-registered first),
            # so no task of ours logs a lost connection while the process exits.
            atexit.register(loop.call_soon_threadsafe, loop.stop)
        return _loop


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule a coroutine on the background loop; safe from any thread."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
    """Run a coroutine on the background loop and wait for its result (sync callers only)."""
    if threading.current_thread() is _thread:
        raise RuntimeError("run() called from the background loop itself; await instead")
    return submit(coro).result(timeout)
