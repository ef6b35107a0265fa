"""The tool interface: what the tool loop (chat/generation/generation.py) calls, and what
every tool (built-in, MCP) implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    """What the model is told about a tool."""

    name: str  # "calculator", "web_fetch", "mcp:<server>/<tool>"
    description: str
    parameters: dict[str, Any]  # the JSON Schema of its arguments object


@dataclass(frozen=True)
class ToolContext:
    """Who and what a call runs for."""

    channel_id: int
    channel_name: str
    session_id: Any
    turn_id: int  # the bot turn being written
    requester_id: int | None  # who asked for the reply
    author_id: int | None  # the author of the message answered
    knowledge_base_ids: tuple[str, ...] = ()  # the bases in scope for this reply
    memory_user_ids: tuple[int, ...] = ()  # whose memories this reply may read and write


# No user has this id: ``private_to`` a result no one may read back.
NOBODY = 0


@dataclass
class ToolOutput:
    ok: bool
    content: str  # for the model; the loop caps it at TOOL_OUTPUT_CHARS
    # A user's id when the content is that user's personal data (a personal knowledge
    # base, memories): everyone else sees the step redacted. NOBODY when it is several
    # people's: then no one may read it back.
    private_to: int | None = None
    sources: list[dict[str, Any]] | None = None  # the protocol's Source objects


class ToolError(Exception):
    """A call that failed cleanly: its message goes back to the model as the error."""


class Tool(Protocol):
    spec: ToolSpec
    status: str  # shown while it runs, e.g. "searching the web…"
    timeout: float  # seconds
    # Optional, as a class attribute: ``private_arguments = True`` when the arguments
    # themselves are one person's data (the memory tool): the room sees them redacted.

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput: ...
