"""The built-in demo: an offline, rule-based responder in the spirit of ELIZA.

It lets a fresh install work with no model at all. It answers the last user turn,
streams word by word at DEMO_TOKEN_DELAY seconds a token, stops at the framing's stop
sequences and at max_tokens, and always calls its model "demo".

So that every feature can be tried offline, it also "reads" files (Provider.sees_images
is true for it): in chat mode it first says which images, documents and transcripts
the message it answers carried, as a model would have received them (the images as
parts of the last user message, a file's text between the markers of
chat/uploads/prompting.py file_block). It cannot tell what a picture shows, and says so.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator

from django.conf import settings

from chat.generation.prompt import BuiltPrompt, PromptImage, estimate_tokens
from chat.generation.providers.base import (
    Delta,
    Finish,
    GenerationRequest,
    ModelProvider,
    thinking_level,
)

REFLECTIONS = {
    "i": "you",
    "me": "you",
    "my": "your",
    "am": "are",
    "mine": "yours",
    "myself": "yourself",
    "you": "I",
    "your": "my",
    "yours": "mine",
    "are": "am",
    "i'm": "you're",
    "you're": "I'm",
}

RULES: list[tuple[str, list[str]]] = [
    (r"^\s*$", ["You said nothing at all. What is on your mind?"]),
    (
        r"\b(hello|hi|hey|good (morning|evening|afternoon))\b",
        ["Hello! I am the demo bot: no real model is connected yet. What shall we talk about?"],
    ),
    (r"\bi need (.*)", ["Why do you need {0}?", "Would it really help you to get {0}?"]),
    (r"\bi (?:feel|am feeling) (.*)", ["Why do you feel {0}?", "How long have you felt {0}?"]),
    (r"\bi am (.*)", ["How long have you been {0}?", "Why do you say you are {0}?"]),
    (r"\bi think (.*)", ["Do you really think {0}?", "What makes you think {0}?"]),
    (r"\bbecause (.*)", ["Is that the real reason?", "What else could explain {0}?"]),
    (r"\b(?:can|could) you (.*)", ["What makes you think I can {0}?", "Perhaps you can {0} yourself."]),
    (r"\bwhy (.*)", ["Why do you ask why {0}?", "What do you think?"]),
    (
        r"\b(?:model|llm|gpt|ai)\b",
        ["I am only the demo responder. An admin can connect a real model under Providers."],
    ),
    (r"\?$", ["What answer would please you most?", "Why do you ask that?"]),
    (r"(.*)", ["Tell me more about that.", "I see. Please go on: {0}?", "How does that make you feel?"]),
]


def reflect(fragment: str) -> str:
    words = fragment.lower().rstrip(".!?").split()
    return " ".join(REFLECTIONS.get(word, word) for word in words)


def respond(text: str, seed: int | None = None) -> str:
    """The demo's answer to one user message."""
    chooser = random.Random(seed if seed is not None else text)
    for pattern, answers in RULES:
        match = re.search(pattern, text.strip(), re.IGNORECASE)
        if match:
            groups = [reflect(g) for g in match.groups() if g]
            answer = chooser.choice(answers)
            return answer.format(*(groups or [""]))
    return "Please go on."


# A file's text in a prompt (chat/uploads/prompting.py file_block): an opening line
# naming it, the text, an "[end of <name>]" line. A name is on one line.
FILE_BLOCK = re.compile(
    r"^\[(?P<how>file: |transcript of )(?P<name>[^\n]+)\]\n(?P<body>.*?)\n\[end of (?P=name)\]$",
    re.MULTILINE | re.DOTALL,
)
# The note ending a text the prompt (or the extraction) cut short.
LEFT_OUT = re.compile(r"\n\[… [^\n]*left out[^\n]*\]\Z")
NO_TEXT = "(no text was found in this file)"


def received(built: BuiltPrompt) -> str:
    """What the demo says of the files the message it answers carried (the last
    message, when it is the user's; neighbouring user turns are merged into it); empty
    when there were none. Plain text: the page escapes it like any reply."""
    if built.mode != "chat" or not built.messages or built.messages[-1]["role"] != "user":
        return ""
    content = built.messages[-1]["content"]
    parts = content if isinstance(content, list) else [content]
    images = [part for part in parts if isinstance(part, PromptImage)]
    text = "\n".join(part for part in parts if isinstance(part, str))
    notes = [_of_images(images)] if images else []
    notes += [_of_file(m["how"], m["name"], m["body"]) for m in FILE_BLOCK.finditer(text)]
    return " ".join(notes)


def _of_images(images: list[PromptImage]) -> str:
    named = "; ".join(
        f"{image.name}, {image.width}×{image.height}" if image.width and image.height else image.name
        for image in images
    )
    count = "1 image" if len(images) == 1 else f"{len(images)} images"
    them = "it" if len(images) == 1 else "them"
    return (
        f"I see {count} ({named}). I am the demo, so I cannot tell what is in {them}; "
        "connect a model that reads images."
    )


def _of_file(how: str, name: str, body: str) -> str:
    verb = "heard" if how.startswith("transcript") else "read"
    if body == NO_TEXT:
        return f"I have {verb} {name}: it holds no text."
    text = LEFT_OUT.sub("", body)
    cut = " (the rest was left out)" if text != body else ""
    return f"I have {verb} {name}: {len(text):,} characters{cut}."


def split_tokens(text: str) -> list[str]:
    """Word-sized tokens, each carrying its leading whitespace."""
    return re.findall(r"\s*\S+|\s+$", text)


class DemoProvider(ModelProvider):
    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta | Finish]:
        built = request.built
        files = received(built)
        typed = request.last_user_text
        # A message of files alone gets their acknowledgement, not "You said nothing".
        answer = respond(typed) if typed.strip() or not files else ""
        reply = " ".join(part for part in (files, answer) if part)
        if built.mode == "completion":
            # Like a base model, it goes on writing the next turn; the stop sequences end it.
            reply += "\n" + "".join(built.stop[:1]) + " I see."
        max_tokens = int(request.params.get("max_tokens", 256))
        level = thinking_level(request.params)
        if level is not None:  # so thinking can be tried, and tested, with no model at all
            yield Delta(reasoning=f"({level} effort) The user wrote: {request.last_user_text[:80]}")
        emitted = ""
        reason = "stop"
        for count, token in enumerate(split_tokens(reply)):
            if count >= max_tokens:
                reason = "length"
                break
            candidate = emitted + token
            cut = min((candidate.find(s) for s in built.stop if s and s in candidate), default=-1)
            if cut >= 0:
                if cut > len(emitted):
                    yield Delta(text=candidate[len(emitted) : cut])
                break
            await asyncio.sleep(settings.DEMO_TOKEN_DELAY)
            emitted = candidate
            yield Delta(text=token)
        yield Finish(
            reason=reason,
            prompt_tokens=estimate_tokens(built.as_text()),
            completion_tokens=len(split_tokens(emitted)),
        )
