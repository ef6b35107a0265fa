"""Middleware of the site's own."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SyncMiddlewareChain:
    """The last of MIDDLEWARE: being synchronous only, it makes Django run every
    middleware above it synchronously too, in the one thread a request gets under ASGI.

    WhiteNoise, near the top, is synchronous only, so every request goes to a thread
    anyway. Below it, Django ran the middleware that can be both in async mode, and then
    each of their process_request and process_response calls went from the event loop to
    that thread and back: a dozen round trips a request, 1 to 2 ms of CPU (with uvicorn,
    a view that does nothing took 2.7 ms of server CPU a request against 1.7 ms, and
    answered 320 requests a second to 20 clients against 480).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
