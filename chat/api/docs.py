"""A readable API page rendered on the server from the OpenAPI document (no CDN)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.views import SpectacularAPIView

from chat.api.scopes import TokenScopes

METHODS = ("get", "post", "patch", "put", "delete")


def api_docs(request: HttpRequest) -> HttpResponse:
    schema: dict[str, Any] = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    operations = []
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                op = item[method]
                operations.append(
                    {
                        "method": method.upper(),
                        "path": path,
                        "summary": (op.get("description") or op.get("summary") or "").strip(),
                        "parameters": [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"],
                    }
                )
    return render(request, "chat/api_docs.html", {"operations": operations, "info": schema.get("info", {})})


class SchemaView(SpectacularAPIView):
    """The OpenAPI document: public, and any token may read it."""

    permission_classes = [*SpectacularAPIView.permission_classes, TokenScopes]
    required_scopes = {"GET": None}
