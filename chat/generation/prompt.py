"""Framing -> completion prompt or chat messages, within the model's context window.

A turn may carry images (chat/uploads/prompting.py reads them): in chat mode, for a model
that reads images, a message's content is then a list of parts, text (str) and images
(PromptImage) in order, which each provider puts in its own wire shape
(providers/openai_compat.py, anthropic.py). Messages without images keep a plain string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PromptImage:
    """A raster image as a model receives it: its stored (re-encoded) bytes, base64."""

    name: str
    mime: str
    width: int
    height: int
    data: str = field(repr=False)  # base64 of the stored file; never in the substrate

    @property
    def label(self) -> str:
        """How the substrate names it (the bytes never go there)."""
        size = f", {self.width}x{self.height}" if self.width and self.height else ""
        return f"[image: {self.name}, {self.mime}{size}]"

    @property
    def not_sent(self) -> str:
        """The text a model that does not read images gets in its place."""
        return f"[image not sent: {self.name} (this model does not read images)]"

    @property
    def tokens(self) -> int:
        return image_tokens(self.width, self.height)


def image_tokens(width: int, height: int) -> int:
    """An image's estimated prompt cost, the larger of the two published formulas so the
    context window is never overfilled for either kind:
    - OpenAI (platform.openai.com/docs/guides/images-vision, "Calculating costs", high
      detail): fit in 2048x2048, scale the short side down to 768, then 170 a 512-px tile + 85;
    - Anthropic (docs.anthropic.com, Vision, "Calculate image costs"): about
      width*height/750, images being scaled to at most ~1.15 megapixels (~1600 tokens).
    Without known dimensions: 1000."""
    if width <= 0 or height <= 0:
        return 1000
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))  # scaled down, never up
    w, h = w * scale, h * scale
    openai = 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)
    anthropic = min(1600, math.ceil(width * height / 750))
    return max(openai, anthropic)


@dataclass(frozen=True)
class PromptTurn:
    role: str  # user | bot | agent
    text: str  # with its attachments' text (chat/uploads/prompting.py)
    images: tuple[PromptImage, ...] = ()


@dataclass
class BuiltPrompt:
    mode: str
    prompt: str = ""  # completion mode: the exact text sent
    system: str = ""  # chat mode: the preamble
    # Chat mode: {"role", "content"}, content a str, or a list of str and PromptImage.
    messages: list[dict[str, Any]] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    dropped_turns: int = 0

    @property
    def images(self) -> list[PromptImage]:
        """The images sent, in order."""
        return [
            part
            for m in self.messages
            if isinstance(m["content"], list)
            for part in m["content"]
            if isinstance(part, PromptImage)
        ]

    def as_text(self) -> str:
        """What the model saw, for the substrate view: each image named by
        ``PromptImage.label`` on its own line where it was sent, never its bytes."""
        if self.mode == "completion":
            return self.prompt
        parts = [f"[system]\n{self.system}"] if self.system else []
        parts += [f"[{m['role']}]\n{content_text(m['content'])}" for m in self.messages]
        return "\n\n".join(parts)

    def estimated_tokens(self) -> int:
        """The prompt's estimated size, images counted at their estimated cost."""
        return estimate_tokens(self.as_text()) + sum(
            image.tokens - estimate_tokens(image.label) for image in self.images
        )


def content_text(content: str | list[Any]) -> str:
    """A message's content as the substrate shows it."""
    if isinstance(content, str):
        return content
    return "\n".join(part.label if isinstance(part, PromptImage) else part for part in content)


def shown_name(name: str) -> str:
    """A name (a file's, a knowledge base's, a document's) on one line: the markers
    around a file's text or passages are lines of their own, and a name must not break
    one (nor fake another turn in the substrate)."""
    return " ".join(name.split()) or "unnamed"


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


def turn_content(turn: PromptTurn, vision: bool) -> str | list[Any]:
    """A turn's content: its text alone, or its images then its text (both providers'
    guides advise images before the question about them). A model that does not read
    images gets a line naming each instead, so it knows one was there."""
    if not turn.images:
        return turn.text
    if not vision:
        notes = "\n".join(image.not_sent for image in turn.images)
        return f"{notes}\n\n{turn.text}" if turn.text else notes
    return [*turn.images, turn.text] if turn.text else list(turn.images)


def turn_tokens(framing: dict[str, Any], turn: PromptTurn, vision: bool) -> int:
    text_cost = estimate_tokens(render_turn(framing, turn))
    if vision:
        return text_cost + sum(image.tokens for image in turn.images)
    return text_cost + sum(estimate_tokens(image.not_sent) + 1 for image in turn.images)


def build_chat_messages(turns: list[PromptTurn], vision: bool = False) -> list[dict[str, Any]]:
    """User and agent turns become user messages, bot turns assistant ones; neighbours
    with the same role are merged, since some APIs require the roles to alternate."""
    messages: list[dict[str, Any]] = []
    for turn in turns:
        role = "assistant" if turn.role == "bot" else "user"
        content = turn_content(turn, vision)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = _joined(messages[-1]["content"], content)
        else:
            messages.append({"role": role, "content": content})
    return messages


def _joined(first: str | list[Any], second: str | list[Any]) -> str | list[Any]:
    if isinstance(first, str) and isinstance(second, str):
        return first + "\n\n" + second
    head = [first] if isinstance(first, str) else list(first)
    tail = [second] if isinstance(second, str) else list(second)
    if head and tail and isinstance(head[-1], str) and isinstance(tail[0], str):
        return [*head[:-1], head[-1] + "\n\n" + tail[0], *tail[1:]]
    return head + tail


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
    vision: bool = False,
) -> BuiltPrompt:
    """Build the prompt, dropping the oldest turns until it fits beside the reply.

    The preamble always stays, and so does the newest turn. An ``instruction`` (a named
    system prompt) goes first: before the preamble, in the system prompt or the
    completion prompt alike. ``vision``: the model reads images (chat mode only; a
    completion prompt is text, and names each image instead).
    """
    if instruction.strip():
        framing = {**framing, "preamble": f"{instruction.strip()}\n\n{framing.get('preamble', '')}"}
    budget = max(context_window - max_tokens, 1)
    fixed = estimate_tokens(framing.get("preamble", "") + framing.get("bot_prefix", ""))
    vision = vision and mode != "completion"
    if mode == "completion":
        turns = [_as_text(t) for t in turns]
    costs = [turn_tokens(framing, t, vision) for t in turns]
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
        built.messages = build_chat_messages(kept, vision)
    return built


def _as_text(turn: PromptTurn) -> PromptTurn:
    """A turn for a completion prompt: its images named in its text."""
    if not turn.images:
        return turn
    content = turn_content(turn, vision=False)
    assert isinstance(content, str)
    return PromptTurn(turn.role, content)
