"""Prompt suggestions (`POST /api/prompts`): the task model (chat/generation/tasks.py)
proposes n prompts of a kind, one a line, each handed on as soon as its line is done;
the offline demo has a few of its own."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from chat.generation.providers.base import ProviderConfig
from chat.generation.tasks import complete

KINDS = {
    "creative": "creative writing prompts (stories, poems, ideas to imagine)",
    "task": "practical requests someone could ask an assistant to do",
    "question": "interesting questions to ask",
    "continuation": "ways to continue or follow up on the user's text",
}
MAX_PROMPT_CHARS = 500
TOKENS_PER_PROMPT = 60
LIST_MARK = re.compile(r"^\s*(?:\d+[.):]|[-*•])\s*")

DEMO_PROMPTS = {
    "creative": [
        "Write a short story about a lighthouse keeper who finds a message in a bottle",
        "Describe a city where it always rains, from the point of view of a cat",
        "Write a poem about the first morning of spring",
        "Invent a new holiday and tell how people celebrate it",
        "Imagine a conversation between the moon and the sea",
    ],
    "task": [
        "Summarise the main points of a text I paste",
        "Plan a three-day trip with a small budget",
        "Draft a polite email asking for a deadline extension",
        "Explain a recipe step by step for a beginner",
        "Make a weekly study schedule for an exam",
    ],
    "question": [
        "Why is the sky blue?",
        "How do bees find their way back to the hive?",
        "What makes a good night's sleep?",
        "How did people tell the time before clocks?",
        "Why do we remember some dreams and not others?",
    ],
    "continuation": [
        "Tell me more about {text}",
        "What would be a good next step after {text}?",
        "Give me an example of {text}",
        "What are the pros and cons of {text}?",
        "Explain {text} to a ten-year-old",
    ],
}


def clean_prompt(line: str) -> str:
    """One line of the model's answer as a prompt: no list mark, no quotes."""
    text = LIST_MARK.sub("", line.strip()).strip().strip("\"'“”«»").strip()
    return text[:MAX_PROMPT_CHARS]


def instruction(n: int, kind: str) -> str:
    return (
        f"Suggest {n} different {KINDS[kind]}, related to the user's text when there is one, "
        "in the language of that text. Write one per line, each a complete prompt the user "
        "could send as it is; no numbering, no quotes, nothing else."
    )


def demo_prompts(text: str, n: int, kind: str) -> list[str]:
    topic = " ".join(text.split()[:8]) or "this"
    return [template.format(text=topic) for template in DEMO_PROMPTS[kind][:n]]


async def suggest(config: ProviderConfig, *, text: str, n: int, kind: str) -> AsyncIterator[str]:
    """Up to ``n`` suggestions, each as soon as the model has finished its line."""
    if config.kind == "demo":
        for prompt in demo_prompts(text, n, kind):
            yield prompt
        return
    pending, given = "", 0
    answer = complete(
        config,
        system=instruction(n, kind),
        user=text or "(no text yet: suggest anything of that kind)",
        max_tokens=TOKENS_PER_PROMPT * n,
        temperature=0.9,
    )
    try:
        async for piece in answer:
            pending += piece
            while "\n" in pending and given < n:
                line, pending = pending.split("\n", 1)
                if prompt := clean_prompt(line):
                    given += 1
                    yield prompt
            if given >= n:
                return
    finally:
        await answer.aclose()  # n lines may come before the model's end: hang up now
    if given < n and (prompt := clean_prompt(pending)):
        yield prompt
