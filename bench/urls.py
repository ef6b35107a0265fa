"""The site's URLs plus two bare Django views, the REST scenario's reference.

``/bench/channels`` and ``/bench/turns/<session id>`` read the rows that
``GET /api/channels`` and ``GET /api/sessions/{id}/turns`` read, in one query each, and
answer the same JSON shape with a plain JsonResponse: no DRF, no authentication, no
Redis. What the API takes beyond them is what it could save (the public channels the
bare list shows are all the benchmark user's channels in the REST scenario).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, JsonResponse
from django.urls import path

from chat.models import Turn
from chat.selectors import visible_channels
from chatsite.urls import urlpatterns as site_urlpatterns

# As the API pages them (chat/api/views.py PAGE_SIZE).
PAGE_SIZE = 100


def channel_row(request: HttpRequest, channel: Any) -> dict[str, Any]:
    """A channel as the API lists it; ``generating`` is false (reading it is a Redis
    round trip the API makes and the reference does not)."""
    return {
        "name": channel.name,
        "title": channel.title,
        "turns": channel.turn_count,
        "visibility": channel.visibility,
        "locked": channel.locked,
        "generating": False,
        "chat_url": request.build_absolute_uri(f"/channel/{channel.name}"),
        "watch_url": request.build_absolute_uri(f"/watch/{channel.name}"),
    }


def channels(request: HttpRequest) -> JsonResponse:
    """The public channels with their turn counts: the API's own query
    (selectors.visible_channels, as an anonymous caller sees them), whatever it counts
    with, so that the two differ by everything but the query."""
    rows = list(visible_channels(AnonymousUser())[: PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    return JsonResponse(
        {
            "channels": [channel_row(request, c) for c in rows[:PAGE_SIZE]],
            "next": request.build_absolute_uri("/bench/channels?page=2") if more else None,
        }
    )


def turns(request: HttpRequest, session_id: uuid.UUID) -> JsonResponse:
    """A session's last ``limit`` visible turns, oldest first, substrate included, one query."""
    limit = int(request.GET.get("limit", "50"))
    rows = Turn.objects.filter(session_id=session_id, hidden=False).select_related("author")
    page = list(rows.order_by("-id")[:limit])
    return JsonResponse({"turns": [t.to_dict(substrate=True) for t in reversed(page)]})


urlpatterns = [
    path("bench/channels", channels),
    path("bench/turns/<uuid:session_id>", turns),
    *site_urlpatterns,
]
