"""Knowledge bases and documents made straight through the ORM (the services are
tested with the API); a real public text to search: Python's own reference topics,
which ship with Python (pydoc_data)."""

from __future__ import annotations

import pydoc_data.topics
from typing import Any

from chat.knowledge.embeddings import LOCAL_DIMS, LOCAL_KEY
from chat.models import KnowledgeBase, KnowledgeDocument

TOPICS = (
    "try",
    "while",
    "lambda",
    "import",
    "with",
    "assert",
    "del",
    "global",
    "class",
    "raise",
    "for",
    "yield",
)


def topic_text(*names: str) -> str:
    """Python's reference sections, each under a Markdown heading of its name."""
    return "\n\n".join(f"# {name}\n\n{pydoc_data.topics.topics[name]}" for name in names or TOPICS)


def make_base(
    *,
    owner: Any = None,
    channel: Any = None,
    name: str = "Notes",
    embedder: str = LOCAL_KEY,
    dims: int = LOCAL_DIMS,
) -> KnowledgeBase:
    return KnowledgeBase.objects.create(
        name=name, owner=owner, channel=channel, created_by=owner, embedder=embedder, dims=dims
    )


def add_document(
    base: KnowledgeBase, name: str, text: str, meta: dict[str, Any] | None = None, **extra: Any
) -> KnowledgeDocument:
    return KnowledgeDocument.objects.create(
        knowledge_base=base, name=name, text=text, meta=meta or {}, **extra
    )
