"""Retrieval inside a reply (docs/architecture.md, "Knowledge bases"): which bases a
reply searches, the block of passages put first in the answered turn's text, the
passages of a long file sent with the message, and the ``sources`` list that numbers
them as the prompt does (the bot turn stores it; the ``sources`` event announces it).

The prompt says what was searched even when nothing was found: a model told nothing
answers as if the documents did not exist ("I cannot see that file"), which is the
complaint the knowledge-base issue starts from.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Q

from chat.generation.prompt import shown_name
from chat.models import Channel, KnowledgeBase, Upload

if TYPE_CHECKING:
    from chat.knowledge.search import Hit

log = logging.getLogger(__name__)

# A source's snippet: the start of its passage, on one line, at most this long.
SNIPPET_CHARS = 300
# A long file's passages are asked for by the chunk: about this many characters each
# (chat/knowledge/chunking.py makes ~300-500 tokens), so enough of them fill the room a
# file has in a prompt (ATTACHMENT_PROMPT_CHARS).
PASSAGE_CHARS_GUESS = 1000


def snippet(text: str) -> str:
    return " ".join(text.split())[:SNIPPET_CHARS]


def bases_for_reply(channel: Channel, request: dict[str, Any], author_id: int | None) -> list[KnowledgeBase]:
    """The bases a reply searches: the channel's attached ones, then those the answered
    message named (``request["knowledge_base_ids"]``) that its author may still use
    there (their own, the channel's own or attached: the rule the message was checked
    by). A base deleted, detached or no longer the author's since is left out."""
    bases = {base.pk: base for base in channel.knowledge_bases.all()}
    named: list[uuid.UUID] = []
    for raw in request.get("knowledge_base_ids") or []:
        try:
            named.append(uuid.UUID(str(raw)))
        except ValueError:
            continue
    if named:
        usable = Q(channel_id=channel.pk) | Q(attached_to=channel)
        if author_id is not None:
            usable |= Q(owner_id=author_id)
        found = {b.pk: b for b in KnowledgeBase.objects.filter(usable, pk__in=named).distinct()}
        for base_id in named:
            if base_id in found:
                bases.setdefault(base_id, found[base_id])
    return list(bases.values())


@dataclass
class Retrieved:
    """What searching the bases gave a reply."""

    block: str = ""  # first in the answered turn's text; "" when nothing was searched
    sources: list[dict[str, Any]] = field(default_factory=list)
    searched: bool = False
    elapsed_ms: float = 0.0


def passage_label(n: int, document: str, page: int | None, section: str, base: str | None) -> str:
    """``[1] handbook.pdf, page 3, Refunds — Handbook``: how a passage is named in the
    prompt (the page shows the same words under the reply)."""
    parts = [shown_name(document)]
    if page:
        parts.append(f"page {page}")
    if section.strip():
        parts.append(shown_name(section))
    label = f"[{n}] {', '.join(parts)}"
    return f"{label} — {shown_name(base)}" if base is not None else label


def hit_passage(n: int, hit: Hit) -> str:
    """A passage as the prompt (and kb_search) gives it: its label, then its text."""
    label = passage_label(n, hit.document_name, hit.page, hit.section, hit.knowledge_base_name)
    return f"{label}\n{hit.text.strip()}\n"


def hit_source(n: int, hit: Hit) -> dict[str, Any]:
    """The protocol's Source object of a passage numbered ``n``."""
    return {
        "n": n,
        "kb": {"id": str(hit.knowledge_base_id), "name": hit.knowledge_base_name},
        "document": {"id": str(hit.document_id), "name": hit.document_name},
        "chunk": hit.chunk_id,
        "score": round(float(hit.score), 4),
        "snippet": snippet(hit.text),
        "page": hit.page,
    }


def keywords_only_note(base_name: str, reason: str) -> str:
    return (
        f'[knowledge base "{shown_name(base_name)}" was searched by keywords only: its embedding '
        f"service failed ({shown_name(reason)})]"
    )


def search_bases(bases: list[KnowledgeBase], query: str) -> Retrieved:
    """Search ``bases`` for ``query`` and write the block the answered turn starts with:
    the passages that pass KB_SCORE_THRESHOLD, best first and numbered from 1, each
    named by its document, page and base; or, when none passes, a line saying the
    bases were searched and hold nothing relevant. A base whose query embedding failed
    was searched by keywords only, and the block says so."""
    if not bases or not query.strip():
        return Retrieved()
    from chat.knowledge import search  # the engine (numpy, embedders) only when a reply searches

    started = time.monotonic()
    names = ", ".join(f'"{shown_name(base.name)}"' for base in bases)
    try:
        result = search.search(bases, query, limit=settings.KB_TOP_K, threshold=settings.KB_SCORE_THRESHOLD)
    except Exception:  # a search's bug or a database error: the reply is still written
        log.exception("knowledge bases %s could not be searched", [str(base.pk) for base in bases])
        block = f"[knowledge bases {names} could not be searched: say so if asked about them]"
        return Retrieved(block=block, searched=True, elapsed_ms=(time.monotonic() - started) * 1000)
    elapsed = (time.monotonic() - started) * 1000
    lines: list[str] = []
    sources: list[dict[str, Any]] = []
    if result.hits:
        lines.append(
            f"[knowledge base passages: the most relevant to this message from {names}, best first; "
            "answer from them where they apply and cite them by number, e.g. [1]]"
        )
        for n, hit in enumerate(result.hits, start=1):
            lines.append(hit_passage(n, hit))
            sources.append(hit_source(n, hit))
        lines.append("[end of knowledge base passages]")
    else:
        lines.append(
            f"[knowledge bases searched for this message: {names}. No passage in them is relevant "
            "to it. If it asks about their documents, say that nothing relevant was found in the "
            "knowledge bases; do not say that a file or document does not exist or was not shared.]"
        )
    by_id = {base.pk: base for base in bases}
    for base_id, reason in result.failed.items():
        base = by_id.get(base_id)
        name = shown_name(base.name) if base is not None else str(base_id)
        lines.append(keywords_only_note(name, reason))
    return Retrieved(block="\n".join(lines), sources=sources, searched=True, elapsed_ms=elapsed)


@dataclass
class LongFiles:
    """Asks chat/uploads/prompting.py files_of_turns to give each file of ``turn_ids``
    too long for a prompt (ATTACHMENT_PROMPT_CHARS) as its passages most relevant to
    ``query`` instead of its head, numbered from ``first_n`` on; the passages given are
    collected as ``sources`` (kb and chunk null, the upload as the document)."""

    query: str
    turn_ids: frozenset[int]
    first_n: int = 1
    sources: list[dict[str, Any]] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def wants(self, upload: Upload, length: int) -> bool:
        return (
            upload.turn_id in self.turn_ids
            and length > settings.ATTACHMENT_PROMPT_CHARS
            and bool(self.query.strip())
        )

    def block(self, upload: Upload, length: int) -> str | None:
        """The file's best passages, marked with its name; None when they cannot be
        ranked (its embedding failed), and the head is given as before."""
        from chat.knowledge.embeddings import EmbeddingError, default_embedder_key, embedder_for
        from chat.knowledge.search import rank_passages

        started = time.monotonic()
        text = Upload.objects.filter(pk=upload.pk).values_list("text", flat=True).first() or ""
        limit = settings.ATTACHMENT_PROMPT_CHARS
        try:
            ranked = rank_passages(
                text,
                chunk_meta(upload.meta or {}),
                self.query,
                max(1, limit // PASSAGE_CHARS_GUESS),
                embedder_for(default_embedder_key()),
            )
        except EmbeddingError as exc:
            log.warning("the passages of upload %s could not be ranked: %s", upload.pk, exc)
            return None
        finally:
            self.elapsed_ms += (time.monotonic() - started) * 1000
        name = shown_name(upload.name)
        chosen: list[str] = []
        room = limit
        for chunk, score in ranked:
            if room <= 0:
                break
            body = chunk.text.strip()[:room]
            room -= len(body)
            n = self.first_n + len(self.sources)
            chosen.append(f"{passage_label(n, upload.name, chunk.page, chunk.section, None)}\n{body}\n")
            self.sources.append(
                {
                    "n": n,
                    "kb": None,
                    "document": {"id": str(upload.pk), "name": upload.name},
                    "chunk": None,
                    "score": round(float(score), 4),
                    "snippet": snippet(chunk.text),
                    "page": chunk.page,
                }
            )
        if not chosen:
            return None
        opening = (
            f"[file: {name} — {length:,} characters, too long to give whole; its {len(chosen)} "
            "passages most relevant to this message follow, best first; cite them by number]"
        )
        return "\n".join([opening, *chosen, f"[end of {name}]"])


def chunk_meta(upload_meta: dict[str, Any]) -> dict[str, Any]:
    """An upload's meta as chunking reads a document's: where its pages or sheets start
    (chat/uploads/documents.py records them as ``page_starts``, ``sheet_starts``)."""
    meta: dict[str, Any] = {}
    if upload_meta.get("page_starts"):
        meta["pages"] = upload_meta["page_starts"]
    if upload_meta.get("sheet_starts"):
        meta["sheets"] = upload_meta["sheet_starts"]
    return meta
