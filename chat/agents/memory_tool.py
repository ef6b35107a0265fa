"""The ``memory`` tool: the model saves, forgets and lists facts about the person it is
answering (chat/agents/memory.py). It acts for the first user of the reply's memory
scope (ToolContext.memory_user_ids, from memory_scope: the author, when memory is on
for them here); with nobody in scope it answers that memory is off. Every answer is
that user's personal data (``private_to``): the room sees the step redacted."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from chat.agents import memory
from chat.agents.tools import ToolContext, ToolError, ToolOutput, ToolSpec
from chat.errors import ServiceError
from chat.realtime.async_db import db_call

ACTIONS = ("save", "forget", "list")

SPEC = ToolSpec(
    name="memory",
    description=(
        "Long-term memory about the person you are talking with, kept across conversations. "
        "save: remember a durable fact they told you (preferences, name, circumstances), one "
        "short sentence. forget: drop a fact by its id (from list) or its exact text. list: "
        "every fact you remember about them, with ids."
    ),
    parameters={
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": list(ACTIONS)},
            "text": {"type": "string", "description": "save: the fact; forget: its exact text"},
            "id": {"type": "string", "description": "forget: the fact's id, as list gives it"},
        },
        "required": ["action"],
        "additionalProperties": False,
    },
)


class MemoryTool:
    spec = SPEC
    status = "remembering…"
    timeout = 10.0
    # What it is asked to save is as personal as what it returns: the room sees neither.
    private_arguments = True

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        if not ctx.memory_user_ids:
            return ToolOutput(ok=False, content="memory is off here")
        user_id = ctx.memory_user_ids[0]
        content = await db_call(act)(user_id, arguments, ctx.turn_id)
        return ToolOutput(ok=True, content=content, private_to=user_id)


def act(user_id: int, arguments: dict[str, Any], turn_id: int | None) -> str:
    """Run one call for the user (synchronous: the database); ToolError for a call the
    model got wrong, in words it can act on."""
    action = arguments.get("action")
    if action not in ACTIONS:
        raise ToolError(f"action must be one of: {', '.join(ACTIONS)}.")
    unknown = sorted(set(arguments) - {"action", "text", "id"})
    if unknown:
        raise ToolError(f"unknown argument(s): {', '.join(unknown)}.")
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise ToolError("memory is off here")
    try:
        if action == "list":
            return listing(user_id)
        if action == "save":
            saved, new = memory.remember(
                user=user, text=arguments.get("text"), origin="tool", source_turn_id=turn_id
            )
            return f"{'Saved' if new else 'Already remembered'} [{saved.pk}]: {saved.text}"
        return forget(user, arguments)
    except ServiceError as error:
        raise ToolError(error.text) from error


def listing(user_id: int) -> str:
    rows = list(memory.memories_of(user_id))
    if not rows:
        return "You remember nothing about this person yet."
    return "\n".join(f"[{row.pk}] {row.text}" for row in rows)


def forget(user: Any, arguments: dict[str, Any]) -> str:
    raw_id, text = arguments.get("id"), arguments.get("text")
    if raw_id is None and text is None:
        raise ToolError("forget needs the fact's id (from list) or its exact text.")
    found = None
    if isinstance(raw_id, str):
        found = memory.memory_for(user, raw_id.strip().strip("[]"))
    elif raw_id is not None:
        raise ToolError("id must be a string, as list gives it.")
    if found is None and isinstance(text, str) and text.strip():
        found = memory.memories_of(user.pk).filter(text__iexact=text.strip()).first()
    if found is None:
        raise ToolError("No such memory: call list for the ids.")
    gone = found.text
    memory.delete_memory(user=user, memory=found)
    return f"Forgot: {gone}"
