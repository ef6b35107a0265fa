"""Framing -> completion prompt or chat messages, within the model's context window."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PromptTurn:
    role: str  # user | bot | agent
    text: str


@dataclass
class BuiltPrompt:
    mode: str
    prompt: str = ""  # completion mode: the exact text sent
    system: str = ""  # chat mode: the preamble
    messages: list[dict[str, str]] = field(default_factory=list)  # chat mode
    stop: list[str] = field(default_factory=list)
    dropped_turns: int = 0

    def as_text(self) -> str:
        """What the model saw, for the substrate view."""
        if self.mode == "completion":
            return self.prompt
        parts = [f"[system]\n{self.system}"] if self.system else []
        parts += [f"[{m['role']}]\n{m['content']}" for m in self.messages]
        return "\n\n".join(parts)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about four characters a token for English text."""
    return math.ceil(len(text) / 4)


def render_turn(framing: dict[str, Any], turn: PromptTurn) -> str:
    prefix = framing.get(f"{turn.role}_prefix", "")
    text = turn.text
    if turn.role == "user" and framing.get("quote_user"):
        text = f'"{text}"'
    return f"{prefix}{text}{framing.get('turn_suffix', '')}"


def build_completion_prompt(framing: dict[str, Any], turns: list[PromptTurn]) -> str:
    """preamble + (role prefix + text + turn_suffix) per turn + bot_prefix."""
    body = "".join(render_turn(framing, t) for t in turns)
    return f"{framing.get('preamble', '')}{body}{framing.get('bot_prefix', '')}"


def build_chat_messages(turns: list[PromptTurn]) -> list[dict[str, str]]:
    """User and agent turns become user messages, bot turns assistant ones; neighbours
    with the same role are merged, since some APIs require the roles to alternate."""
    messages: list[dict[str, str]] = []
    for turn in turns:
        role = "assistant" if turn.role == "bot" else "user"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + turn.text
        else:
            messages.append({"role": role, "content": turn.text})
    return messages


def stop_sequences(framing: dict[str, Any], mode: str) -> list[str]:
    """Where a reply is cut: the framing's stops, and in completion mode the start of
    the next user turn."""
    stops = [s for s in framing.get("stop", []) if s]
    if mode == "completion":
        boundary = f"{framing.get('turn_suffix', '')}{framing.get('user_prefix', '')}"
        if framing.get("turn_suffix") and framing.get("user_prefix") and boundary not in stops:
            stops.append(boundary)
    return stops


def build_prompt(
    *,
    mode: str,
    framing: dict[str, Any],
    turns: list[PromptTurn],
    context_window: int,
    max_tokens: int,
    instruction: str = "",
) -> BuiltPrompt:
    """Build the prompt, dropping the oldest turns until it fits beside the reply.

    The preamble always stays, and so does the newest turn. An ``instruction`` (a named
    system prompt) goes first: before the preamble, in the system prompt or the
    completion prompt alike.
    """
    if instruction.strip():
        framing = {**framing, "preamble": f"{instruction.strip()}\n\n{framing.get('preamble', '')}"}
    budget = max(context_window - max_tokens, 1)
    fixed = estimate_tokens(framing.get("preamble", "") + framing.get("bot_prefix", ""))
    costs = [estimate_tokens(render_turn(framing, t)) for t in turns]
    start, total = 0, fixed + sum(costs)
    while total > budget and start < len(turns) - 1:
        total -= costs[start]
        start += 1
    kept = turns[start:]
    built = BuiltPrompt(mode=mode, stop=stop_sequences(framing, mode), dropped_turns=start)
    if mode == "completion":
        built.prompt = build_completion_prompt(framing, kept)
    else:
        built.system = framing.get("preamble", "").strip()
        built.messages = build_chat_messages(kept)
    return built
