"""Agents at the desk (admins): their tools checked as a channel's are
(chat.agents.policy), their knowledge bases picked from a list."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from chat.agents.policy import check_agent_params, check_approval, check_tools
from chat.errors import ServiceError
from chat.models import Agent


class AgentForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Agent
        fields = [
            "name",
            "description",
            "enabled",
            "provider",
            "model",
            "instructions",
            "tools",
            "tools_requiring_approval",
            "knowledge_bases",
            "params",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        kept = self.instance.tools if self.instance.pk else []
        try:
            tools = check_tools(cleaned.get("tools") or [], kept=kept)
            cleaned["tools"] = tools
        except ServiceError as exc:
            self._refused(exc)
            return cleaned
        try:
            approval = cleaned.get("tools_requiring_approval") or []
            cleaned["tools_requiring_approval"] = check_approval(approval, tools)
        except ServiceError as exc:
            self._refused(exc)
        try:
            cleaned["params"] = check_agent_params(cleaned.get("params") or {})
        except ServiceError as exc:
            self._refused(exc)
        return cleaned

    def _refused(self, exc: ServiceError) -> None:
        for name, errors in (exc.fields or {}).items():
            plain = isinstance(errors, list) and all(isinstance(item, str) for item in errors)
            self.add_error(name if name in self.fields else None, errors if plain else str(errors))


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin[Agent]):
    form = AgentForm
    list_display = ["name", "description", "provider", "model", "tool_count", "enabled", "updated_at"]
    list_filter = ["enabled", "provider"]
    search_fields = ["name", "description", "instructions"]
    list_editable = ["enabled"]
    filter_horizontal = ["knowledge_bases"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description="tools")
    def tool_count(self, agent: Agent) -> int:
        return len(agent.tools or [])
