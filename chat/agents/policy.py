"""What a channel, an agent and a message may say about tools and agents, checked here
once for every path (the API's PATCH and the admin through services.update_channel, the
Agent admin, messages over REST and WebSocket). Each refusal is a ServiceError naming
the field, with the bad values in its words."""

from __future__ import annotations

from collections import Counter
from typing import Any

from chat import permissions
from chat.agents.registry import builtin_names, split_mcp_name
from chat.errors import ServiceError
from chat.models import Agent, Channel, McpServer

# The tools one channel or agent may switch on: far more than a model can choose among
# well, and a bound on what each reply's tool list costs to build.
MAX_TOOLS = 64
# "mcp:" + a server's slug (64) + "/" + a tool's name.
MAX_TOOL_NAME = 200
AGENT_CHOICES = ("fixed", "members")
# The fields of a channel update_channel hands to check_channel_agent_settings.
AGENT_FIELDS = ("tools", "tools_requiring_approval", "agent", "agent_choice", "memory")
CHAT_ONLY = "tools apply to chat mode only"


def _invalid(field: str, message: str) -> ServiceError:
    return ServiceError("invalid", message, fields={field: [message]})


def _names(value: Any, field: str) -> list[str]:
    """A list of tool names as sent: strings, each once, at most MAX_TOOLS."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _invalid(field, f"{field} must be a list of tool names.")
    if len(value) > MAX_TOOLS:
        raise _invalid(field, f"At most {MAX_TOOLS} tools.")
    twice = sorted(name for name, count in Counter(value).items() if count > 1)
    if twice:
        raise _invalid(field, f"Listed more than once: {', '.join(twice)}.")
    return list(value)


def unknown_tools(names: list[str]) -> list[str]:
    """The names that are neither a built-in tool of this instance nor a tool of an
    enabled MCP server (the tool itself is not looked up: that takes the network, and
    a server's tools come and go; the tool loop reports a missing one unavailable)."""
    builtins = set(builtin_names())
    servers: dict[str, list[str]] = {}
    bad = []
    for name in names:
        if name in builtins:
            continue
        parts = split_mcp_name(name) if len(name) <= MAX_TOOL_NAME else None
        if parts is None:
            bad.append(name)
        else:
            servers.setdefault(parts[0], []).append(name)
    enabled = set(McpServer.objects.filter(name__in=servers, enabled=True).values_list("name", flat=True))
    bad += [name for server, named in servers.items() if server not in enabled for name in named]
    return sorted(bad)


def check_tools(value: Any, *, field: str = "tools", kept: Any = ()) -> list[str]:
    """The tools ``value`` names, checked: each a built-in or ``mcp:<server>/<tool>`` of
    an enabled server. Names in ``kept`` (what the channel or agent has already) stay
    accepted when their server was disabled since: saving other settings must not fail
    on them, and the loop reports them unavailable."""
    names = _names(value, field)
    bad = [name for name in unknown_tools(names) if name not in set(kept or ())]
    if bad:
        shown = ", ".join(repr(name[:MAX_TOOL_NAME]) for name in bad[:10])
        raise _invalid(field, f"Unknown tools: {shown} (a built-in tool, or mcp:<server>/<tool>).")
    return names


def check_approval(value: Any, tools: list[str], *, field: str = "tools_requiring_approval") -> list[str]:
    """The tools that wait for a person's approval: some of ``tools``."""
    names = _names(value, field)
    outside = [name for name in names if name not in tools]
    if outside:
        shown = ", ".join(repr(name[:MAX_TOOL_NAME]) for name in outside[:10])
        raise _invalid(field, f"Not among the tools switched on: {shown}.")
    return names


def check_agent_params(value: Any, *, field: str = "params") -> dict[str, Any]:
    """An agent's default parameters: any of the channel params' keys but provider and
    model (the agent's own fields), in the same ranges (chat/framing.py)."""
    from chat.framing import ParamsSerializer  # late: framing builds on the schemas
    from chat.schemas import error_fields

    if not isinstance(value, dict):
        raise _invalid(field, f"{field} must be an object.")
    if "provider" in value or "model" in value:
        raise _invalid(field, "Set the agent's provider and model in their own fields.")
    serializer = ParamsSerializer(data=value, partial=True)
    if not serializer.is_valid():
        raise ServiceError("invalid", f"Invalid {field}.", fields={field: error_fields(serializer.errors)})
    return dict(serializer.validated_data)


def enabled_agent(name: Any, *, field: str = "agent") -> Agent:
    """An enabled agent by name; anything else is 400 naming ``field`` (a disabled one in
    the same words as a missing one: GET /api/agents lists neither)."""
    if not isinstance(name, str):
        raise _invalid(field, f"{field} must be an agent's name.")
    found = Agent.objects.filter(name=name, enabled=True).first()
    if found is None:
        raise _invalid(field, f"No such agent: {name[:64]!r}.")
    return found


def check_web_search(*, user: Any, channel: Channel, value: Any) -> bool:
    """A message's (or regenerate's) ``web_search``: true adds the web_search tool to
    this reply, false leaves it out even where the channel has it (anyone may). True
    needs the instance's search endpoint (WEB_SEARCH_URL) and a chat-mode channel (else
    400 naming ``web_search``), and is the owner's (or a moderator's) to ask where the
    channel's tools do not include web_search: the owner chose the room's tools, and a
    search sends words of the conversation out (else 403 naming it)."""
    if not isinstance(value, bool):
        raise _invalid("web_search", "web_search must be true or false.")
    if not value:
        return value
    if "web_search" not in builtin_names():
        raise _invalid("web_search", "Web search is not configured on this instance.")
    if channel.mode == Channel.Mode.COMPLETION:
        raise _invalid("web_search", CHAT_ONLY)
    if "web_search" not in (channel.tools or []) and not permissions.can_configure(user, channel):
        text = "Only the channel's owner may turn web search on here: it is not among the channel's tools."
        raise ServiceError("forbidden", text, fields={"web_search": [text]})
    return value


def check_channel_agent_settings(*, channel: Channel, changes: dict[str, Any]) -> dict[str, Any]:
    """The agent fields of a channel update (AGENT_FIELDS) as they will be saved, read
    only: ``agent`` as an Agent or None. The mode is the one the update leaves: a
    completion-mode channel takes no tools (its prompt is text, not messages); tools it
    had stay, unused, and the channel object says ``tools_apply: false``."""
    out: dict[str, Any] = {}
    completion = changes.get("mode", channel.mode) == Channel.Mode.COMPLETION
    tools = list(channel.tools or [])
    if "tools" in changes:
        tools = check_tools(changes["tools"], kept=channel.tools or [])
        if tools and completion:
            raise _invalid("tools", CHAT_ONLY)
        out["tools"] = tools
    if "tools_requiring_approval" in changes:
        approval = check_approval(changes["tools_requiring_approval"], tools)
        if approval and completion:
            raise _invalid("tools_requiring_approval", CHAT_ONLY)
        out["tools_requiring_approval"] = approval
    elif "tools" in changes:
        # A tool switched off needs no approval any more.
        out["tools_requiring_approval"] = [t for t in channel.tools_requiring_approval or [] if t in tools]
    if "agent" in changes:
        name = changes["agent"]
        current = channel.agent if channel.agent_id else None
        if name is None:
            out["agent"] = None
        elif current is not None and name == current.name:
            out["agent"] = current  # no change, even if it was disabled since
        else:
            out["agent"] = enabled_agent(name)
    if "agent_choice" in changes:
        if changes["agent_choice"] not in AGENT_CHOICES:
            raise _invalid("agent_choice", "agent_choice must be fixed or members.")
        out["agent_choice"] = changes["agent_choice"]
    if "memory" in changes:
        if not isinstance(changes["memory"], bool):
            raise _invalid("memory", "memory must be true or false.")
        out["memory"] = changes["memory"]
    return out


def check_message_agent(*, user: Any, channel: Channel, name: Any) -> str:
    """The agent a message (or regenerate) names, within the owner's policy: the
    channel's own agent; any enabled agent where ``agent_choice`` is ``members``; any
    for whoever may configure the channel. Unknown or disabled: 400; another agent in a
    ``fixed`` channel: 403. Both name ``agent``."""
    agent = enabled_agent(name)
    allowed = (
        agent.pk == channel.agent_id
        or channel.agent_choice == "members"
        or permissions.can_configure(user, channel)
    )
    if not allowed:
        raise ServiceError(
            "forbidden",
            "This channel does not let members choose the agent.",
            fields={"agent": ["This channel answers with its own agent only."]},
        )
    return agent.name
