"""Which tools exist and how to make one. Built-in tools by name; MCP tools are named
``mcp:<server>/<tool>`` (chat/agents/mcp.py)."""

from __future__ import annotations

import importlib

from django.conf import settings

from chat.agents.tools import Tool

# name -> "module:class"; each class is made with no arguments.
BUILTIN: dict[str, str] = {
    "calculator": "chat.agents.builtin.calculator:Calculator",
    "current_time": "chat.agents.builtin.clock:CurrentTime",
    "web_fetch": "chat.agents.builtin.web:WebFetch",
    "web_search": "chat.agents.builtin.web:WebSearch",
    "kb_search": "chat.agents.builtin.kb:KbSearch",
    "memory": "chat.agents.memory_tool:MemoryTool",
}

MCP_PREFIX = "mcp:"


def builtin_names() -> list[str]:
    """The built-in tools this instance offers: web_search only with WEB_SEARCH_URL."""
    return [name for name in BUILTIN if name != "web_search" or settings.WEB_SEARCH_URL]


def make_builtin(name: str) -> Tool:
    module, _, cls = BUILTIN[name].partition(":")
    tool: Tool = getattr(importlib.import_module(module), cls)()
    return tool


def split_mcp_name(name: str) -> tuple[str, str] | None:
    """("server", "tool") of "mcp:server/tool", else None."""
    if not name.startswith(MCP_PREFIX):
        return None
    server, slash, tool = name[len(MCP_PREFIX) :].partition("/")
    return (server, tool) if slash and server and tool else None
