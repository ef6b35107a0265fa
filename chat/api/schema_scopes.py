"""The OpenAPI document names each operation's token scope (chat/api/scopes.py). Apart
from chat.api.scopes: drf-spectacular's AutoSchema reads DRF's settings on import, and
those name TokenScopes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema

from chat.api.scopes import Needed, UndeclaredScopeError, required


def describe(needed: Needed) -> str:
    if needed is None:
        return "Token scope: none needed."
    names = [needed] if isinstance(needed, str) else list(needed)
    return "Token scope: " + ", ".join(f"`{name}`" for name in names) + "."


class ScopedAutoSchema(AutoSchema):
    """Every operation of the OpenAPI document names its scope: `x-required-scopes` and
    a line of its description."""

    def get_operation(self, *args: Any, **kwargs: Any) -> Any:
        operation = super().get_operation(*args, **kwargs)
        if not operation:
            return operation
        try:
            needed = required(self.view, self.method)
        except UndeclaredScopeError:
            needed, note = None, "Token scope: undeclared (refused to everyone)."
        else:
            note = describe(needed)
        listed = [] if needed is None else [needed] if isinstance(needed, str) else list(needed)
        operation["x-required-scopes"] = listed
        description = operation.get("description", "").rstrip()
        operation["description"] = f"{description}\n\n{note}" if description else note
        return operation
