"""A bot turn's steps: its tool calls in order, as stored on the turn (Turn.steps) and
sent in ``tool_call`` / ``tool_result`` events, history and the Turn object.

A Step is a dict (JSON in the database):
  call_id, round, name, arguments, status, ok, content, truncated, duration_ms,
  text_offset, redacted, approved_by
and ``private_arguments: true`` when the tool's arguments are personal (the memory
tool): ``arguments`` is then ``{}`` everywhere (the call ran with the real ones);
and, stored only, ``private``: {"user_id", "content"} — the result of a call that read
one person's data (a personal knowledge base, memories). Everyone else gets the step
with empty content and ``redacted: {"owner": <username>}``; ``public`` drops
``private`` wherever a step leaves the server, and only
GET /api/turns/{id}/steps/{call_id} serves it back, to that person.
"""

from __future__ import annotations

from typing import Any

# A step's states. "awaiting_approval" and "running" are transient: a reply that ends
# leaves none of them (``closed``).
RUNNING = "running"
AWAITING = "awaiting_approval"
OK = "ok"
ERROR = "error"
DENIED = "denied"
INTERRUPTED = "interrupted"
OPEN = (RUNNING, AWAITING)


def new_step(
    *, call_id: str, round_no: int, name: str, arguments: dict[str, Any], text_offset: int
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "round": round_no,
        "name": name,
        "arguments": arguments,
        "status": RUNNING,
        "ok": None,
        "content": "",
        "truncated": False,
        "duration_ms": None,
        "text_offset": text_offset,
        "redacted": None,
        "approved_by": None,
    }


def public(step: dict[str, Any]) -> dict[str, Any]:
    """The step as anyone may see it."""
    return {k: v for k, v in step.items() if k != "private"}


def public_steps(steps: Any) -> list[dict[str, Any]]:
    return [public(step) for step in steps or [] if isinstance(step, dict)]


def closed(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps of a reply that ended: a call still open was interrupted."""
    return [
        {**step, "status": INTERRUPTED, "ok": False} if step.get("status") in OPEN else step for step in steps
    ]


def private_content(steps: Any, call_id: str, user_id: int) -> str | None:
    """The full result of a redacted step, for the one person it belongs to; None for
    anyone else, or when there is no such step."""
    for step in steps or []:
        if isinstance(step, dict) and step.get("call_id") == call_id:
            private = step.get("private") or {}
            return str(private.get("content", "")) if private.get("user_id") == user_id else None
    return None
