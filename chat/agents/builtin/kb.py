"""kb_search: the model searches the knowledge bases in scope for the reply itself (the
ones chat/knowledge/retrieval.py bases_for_reply chose), with a query of its own.
Passages are numbered and named as the prompt's are (retrieval.hit_passage) and come
with the protocol's Source objects.

A passage from a personal base (``KnowledgeBase.owner`` set) is that person's data: the
output is then ``private_to`` them, and everyone else in the room sees the step redacted.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings

from chat.agents.tools import NOBODY, ToolContext, ToolError, ToolOutput, ToolSpec
from chat.knowledge import retrieval
from chat.models import KnowledgeBase
from chat.realtime.async_db import db_call

log = logging.getLogger(__name__)

MAX_TOP_K = 20


def _bases(ids: tuple[str, ...]) -> list[KnowledgeBase]:
    wanted: list[uuid.UUID] = []
    for raw in ids:
        try:
            wanted.append(uuid.UUID(str(raw)))
        except ValueError:
            continue
    found = {base.pk: base for base in KnowledgeBase.objects.filter(pk__in=wanted)}
    return [found[pk] for pk in wanted if pk in found]  # in the reply's order


def search(ids: tuple[str, ...], query: str, top_k: int) -> ToolOutput:
    """Search the bases (sync ORM: called through db_call)."""
    from chat.knowledge import search as engine  # numpy and the embedders only when searched

    bases = _bases(ids)
    if not bases:
        return ToolOutput(ok=False, content="no knowledge bases are in scope")
    try:
        result = engine.search(bases, query, limit=top_k, threshold=settings.KB_SCORE_THRESHOLD)
    except Exception as exc:  # a search's bug or a database error: the model is told
        log.exception("knowledge bases %s could not be searched", [str(base.pk) for base in bases])
        raise ToolError("the knowledge bases could not be searched") from exc
    by_id = {base.pk: base for base in bases}
    # Only bases the content names decide privacy: those of the passages and of the notes.
    named = [hit.knowledge_base_id for hit in result.hits] + list(result.failed)
    owners = [by_id[pk].owner_id for pk in named if pk in by_id and by_id[pk].owner_id is not None]
    parts = [retrieval.hit_passage(n, hit) for n, hit in enumerate(result.hits, start=1)]
    if not parts:
        parts.append(f"No passage in the {len(bases)} knowledge base(s) in scope is relevant to this query.")
    for base_id, reason in result.failed.items():
        base = by_id.get(base_id)
        parts.append(retrieval.keywords_only_note(base.name if base else str(base_id), reason))
    return ToolOutput(
        ok=True,
        content="\n".join(parts).strip(),
        # Two people's passages: readable back by neither (each would read the other's).
        private_to=(owners[0] if len(set(owners)) == 1 else NOBODY) if owners else None,
        sources=[retrieval.hit_source(n, hit) for n, hit in enumerate(result.hits, start=1)],
    )


class KbSearch:
    spec = ToolSpec(
        name="kb_search",
        description=(
            "Search the knowledge bases available to this conversation (documents its members "
            "shared). Returns the most relevant passages, numbered, each named by its document "
            "and base; cite them by number."
        ),
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for, in words."},
                "top_k": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TOP_K,
                    "description": "How many passages at most.",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    )
    status = "searching the knowledge bases…"
    timeout = 30.0

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("query: a non-empty string is required")
        top_k = arguments.get("top_k", settings.KB_TOP_K)
        if top_k is None:
            top_k = settings.KB_TOP_K
        if isinstance(top_k, float) and top_k.is_integer():  # some models send 5.0
            top_k = int(top_k)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise ToolError(f"top_k: a whole number from 1 to {MAX_TOP_K}")
        if not ctx.knowledge_base_ids:
            return ToolOutput(ok=False, content="no knowledge bases are in scope")
        return await db_call(search)(ctx.knowledge_base_ids, query.strip(), top_k)
