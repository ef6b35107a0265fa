"""Reads for the agents API: the enabled agents as a caller sees them, and the tools a
channel or agent may switch on."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from chat.agents.registry import BUILTIN, builtin_names, make_builtin
from chat.knowledge.selectors import readable_bases
from chat.models import Agent

log = logging.getLogger(__name__)


def enabled_agents() -> list[Agent]:
    rows = Agent.objects.filter(enabled=True).select_related("provider")
    return list(rows.prefetch_related("knowledge_bases"))


def agent_for(name: str) -> Agent | None:
    """An enabled agent by name (a disabled one is a 404, like a missing one)."""
    rows = Agent.objects.filter(name=name, enabled=True).select_related("provider")
    return rows.prefetch_related("knowledge_bases").first()


def agents_to_dicts(agents: list[Agent], user: Any) -> list[dict[str, Any]]:
    """The protocol's Agent objects; ``knowledge_base_ids`` only those ``user`` may read
    (chat.knowledge.selectors): a private room's base stays unknown to outsiders."""
    ids = {base.pk for agent in agents for base in agent.knowledge_bases.all()}
    readable = set(readable_bases(user).filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()
    return [
        {
            "name": agent.name,
            "description": agent.description,
            "provider": agent.provider.name if agent.provider_id and agent.provider else None,
            "model": agent.model,
            "tools": list(agent.tools or []),
            "knowledge_base_ids": sorted(
                str(base.pk) for base in agent.knowledge_bases.all() if base.pk in readable
            ),
            "params": dict(agent.params or {}),
        }
        for agent in agents
    ]


def _builtin(name: str) -> dict[str, Any]:
    offered = name in builtin_names()  # web_search only with WEB_SEARCH_URL
    try:
        description = make_builtin(name).spec.description
    except (ImportError, AttributeError):  # its module (or class) is not part of this build
        return {"name": name, "description": "", "builtin": True, "available": False}
    return {"name": name, "description": description, "builtin": True, "available": offered}


def _mcp_tools() -> Iterable[Any]:
    """chat.agents.mcp.available_mcp_tools(): ToolSpecs (or dicts with ``name``,
    ``description`` and maybe ``available``) of the enabled MCP servers; it bounds its
    own wait and reports a dead server's tools unavailable. Nothing without the module."""
    try:
        # By name: the module comes with the MCP work, which may be merged after this.
        mcp = importlib.import_module("chat.agents.mcp")
    except ImportError:
        return []
    listing = getattr(mcp, "available_mcp_tools", None)
    if listing is None:
        return []
    found = listing()
    if hasattr(found, "__await__"):
        found = async_to_sync(_awaited)(found)
    return list(found or [])


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _mcp_entry(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        name, description, available = item["name"], item.get("description", ""), item.get("available", True)
    else:
        name, description, available = item.name, item.description, getattr(item, "available", True)
    description = str(description or "")
    return {"name": str(name), "description": description, "builtin": False, "available": bool(available)}


def tool_catalogue() -> list[dict[str, Any]]:
    """Every tool a channel or agent may name: the built-ins, then the MCP servers'
    tools. A listing that fails is logged and leaves the MCP tools out: the settings
    page still shows the built-ins."""
    tools = [_builtin(name) for name in BUILTIN]
    try:
        tools += [_mcp_entry(item) for item in _mcp_tools()]
    except Exception:
        log.exception("the MCP servers' tools could not be listed")
    return tools
