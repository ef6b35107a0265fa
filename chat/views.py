"""The pages. Thin: read through selectors, write through services."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat import selectors


def index(request: HttpRequest) -> HttpResponse:
    channels = selectors.visible_channels(request.user)
    return render(request, "chat/index.html", {"channels": channels})
