"""Searching knowledge bases: by meaning and by words, fused.

Two rankings of a base's current-generation chunks, each its top candidates:
- by meaning: cosine similarity of the chunk's embedding to the query's (embedded once
  per embedding model among the bases). PostgreSQL: bases holding at most
  ``KB_EXACT_SCAN_CHUNKS`` chunks together are searched exactly (their rows by the
  (base, generation) index, sorted by distance); larger ones through pgvector's HNSW
  index of the chunks' dimension (the query repeats the partial index's expression and
  condition so the planner uses it; ``hnsw.iterative_scan`` keeps scanning when the
  filters on base and generation drop candidates). Why not HNSW always: measured on the
  retrieval benchmark (bench/README.md), a base's passages that lie far from the bulk of
  the table (a FAQ among manuals) are not reached by the graph walk at usable
  ``ef_search`` (recall@5 0.17 against the exact 0.66 at 10,000 chunks), while the exact
  scan costs milliseconds there. SQLite: a numpy scan over the base's vectors, loaded in
  one query and kept per process until the base's ``revision`` moves.
- by words: PostgreSQL full-text (the stored ``tsv`` column, schema.py; an OR of the
  query's words, ``ts_rank`` normalised by length: measured better than ``ts_rank_cd``,
  which favours long chunks); SQLite FTS5 (porter, ``bm25()``). Names, codes and rare
  words, which embeddings blur, are found here.
They are fused by reciprocal rank fusion (k = 60), best first. Each hit's ``score``
(0..1) is the larger of its cosine similarity and the share of the query's distinct
non-stopword words it contains; hits under ``threshold`` are left out.

A base whose embedding model fails for the query (a provider down) is searched by
words only and named in ``SearchResult.failed`` with the reason.
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from chat.knowledge.chunking import Chunk, split
from chat.knowledge.embeddings import Embedder, EmbeddingError, embedder_for
from chat.knowledge.schema import FTS_TABLE, HNSW_MAX_DIMS
from chat.models import KnowledgeBase, KnowledgeChunk

RRF_K = 60
# Candidates each ranking brings to the fusion: at least this many, and at least
# CANDIDATE_FACTOR × the hits asked for.
MIN_CANDIDATES = 20
CANDIDATE_FACTOR = 3
MAX_CANDIDATES = 200
# Query words used for the keyword search (a pasted page is not a query).
MAX_QUERY_WORDS = 32
# PostgreSQL's HNSW search of bases above settings.KB_EXACT_SCAN_CHUNKS (see the doc).
HNSW_EF_SEARCH = 400
HNSW_MAX_SCAN_TUPLES = 1_000_000
# Bases whose vectors a process keeps (SQLite); 10k chunks of 256 dimensions are 10 MB.
VECTOR_CACHE_BASES = 32

WORD = re.compile(r"[^\W_]+")
# English function words: left out of keyword queries and of the word share.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "s",
        "t",
        "don",
    ]
)


@dataclass
class Hit:
    chunk_id: int
    score: float
    text: str
    document_id: uuid.UUID
    document_name: str
    knowledge_base_id: uuid.UUID
    knowledge_base_name: str
    page: int | None
    section: str


@dataclass
class SearchResult:
    hits: list[Hit]
    failed: dict[uuid.UUID, str] = field(default_factory=dict)


# --- words ---------------------------------------------------------------------------------------


def _stem(word: str) -> str:
    """A light suffix stripping, enough to count "indexes" as "index" when scoring."""
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + replacement
    return word


def query_words(query: str) -> list[str]:
    """The query's distinct words (letters and digits only, lower case), stopwords left
    out unless there is nothing else, at most MAX_QUERY_WORDS."""
    words = list(dict.fromkeys(word.lower() for word in WORD.findall(query)))
    meaningful = [word for word in words if word not in STOPWORDS]
    return (meaningful or words)[:MAX_QUERY_WORDS]


def word_share(words: Sequence[str], text: str) -> float:
    """The share of ``words`` (query_words) found in ``text``, stems compared."""
    meaningful = [word for word in words if word not in STOPWORDS]
    if not meaningful:
        return 0.0
    present = {_stem(word.lower()) for word in WORD.findall(text)}
    return sum(_stem(word) in present for word in dict.fromkeys(meaningful)) / len(set(meaningful))


def _fts5_query(words: Sequence[str]) -> str:
    # Every word is letters and digits only: quoted, it is a plain term to FTS5.
    return " OR ".join(f'"{word}"' for word in words)


def _tsquery(words: Sequence[str]) -> str:
    # Letters and digits only, quoted: a plain lexeme each to to_tsquery.
    return " | ".join(f"'{word}'" for word in words)


def rrf(rankings: Iterable[Sequence[Any]], k: int = RRF_K) -> dict[Any, float]:
    """Reciprocal rank fusion: each item's sum of 1 / (k + rank) over the rankings (rank
    from 1), in first-seen order."""
    scores: dict[Any, float] = defaultdict(float)
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] += 1.0 / (k + rank)
    return dict(scores)


def fused_order(fused: dict[Any, float], scores: dict[Any, float]) -> list[Any]:
    """Best first by fused rank; equal fused ranks (the top of one ranking against the
    top of another) by score."""
    return sorted(fused, key=lambda item: (-round(fused[item], 12), -scores.get(item, 0.0)))


# --- the search ----------------------------------------------------------------------------------


@dataclass
class _Base:
    """A base's state as of this search (read afresh: the caller's object may be stale)."""

    id: uuid.UUID
    name: str
    embedder: str
    dims: int
    generation: int
    revision: int


def search(
    bases: Sequence[KnowledgeBase],
    query: str,
    *,
    limit: int = 10,
    threshold: float = 0.1,
    document_ids: Collection[uuid.UUID] | None = None,
) -> SearchResult:
    """The best passages of ``bases`` for ``query`` (see the module's doc). The caller
    has checked that the asker may read every base."""
    result = SearchResult(hits=[])
    if limit <= 0 or not bases or not query.strip():
        return result
    states = [
        _Base(*row)
        for row in KnowledgeBase.objects.filter(pk__in=[base.pk for base in bases]).values_list(
            "id", "name", "embedder", "dims", "generation", "revision"
        )
    ]
    if not states:
        return result
    documents = list(document_ids) if document_ids is not None else None
    if documents is not None and not documents:
        return result
    wanted = min(max(MIN_CANDIDATES, CANDIDATE_FACTOR * limit), MAX_CANDIDATES)

    rankings: list[list[int]] = []
    cosines: dict[int, float] = {}
    query_vectors: dict[uuid.UUID, np.ndarray] = {}  # base id -> the query's vector for it
    by_key: dict[str, list[_Base]] = defaultdict(list)
    for state in states:
        by_key[state.embedder].append(state)
    for key, group in by_key.items():
        try:
            embedder = embedder_for(key)
            vector = embedder.embed([query])[0]
        except EmbeddingError as exc:
            for state in group:
                result.failed[state.id] = str(exc)
            continue
        usable = [state for state in group if state.dims == vector.shape[0]]
        for state in group:
            if state.dims != vector.shape[0]:
                result.failed[state.id] = (
                    f"the embedding model now answers {vector.shape[0]} dimensions, not {state.dims}"
                )
        for state in usable:
            query_vectors[state.id] = vector
        if usable:
            ranked = _vector_candidates(usable, vector, wanted, documents)
            rankings.append([chunk_id for chunk_id, _ in ranked])
            cosines.update(ranked)

    words = query_words(query)
    if words:
        rankings.append(_keyword_candidates(states, words, wanted, documents))

    fused = rrf(rankings)
    if not fused:
        return result
    rows = {
        chunk.pk: chunk
        for chunk in KnowledgeChunk.objects.filter(pk__in=list(fused)).select_related(
            "document", "knowledge_base"
        )
    }
    scores: dict[int, float] = {}
    for chunk_id, chunk in rows.items():
        cosine = cosines.get(chunk_id)
        if cosine is None and chunk.knowledge_base_id in query_vectors and chunk.embedding is not None:
            embedding = np.asarray(chunk.embedding, dtype=np.float32)
            if embedding.shape == query_vectors[chunk.knowledge_base_id].shape:
                cosine = float(embedding @ query_vectors[chunk.knowledge_base_id])
        scores[chunk_id] = min(1.0, max(0.0, cosine or 0.0, word_share(words, chunk.text)))
    for chunk_id in fused_order(fused, scores):
        found = rows.get(chunk_id)
        if found is None:  # deleted since
            continue
        chunk = found
        score = scores[chunk_id]
        if score < threshold:
            continue
        result.hits.append(
            Hit(
                chunk_id=chunk.pk,
                score=round(score, 4),
                text=chunk.text,
                document_id=chunk.document_id,
                document_name=chunk.document.name,
                knowledge_base_id=chunk.knowledge_base_id,
                knowledge_base_name=chunk.knowledge_base.name,
                page=chunk.page,
                section=chunk.section,
            )
        )
        if len(result.hits) >= limit:
            break
    return result


def _vector_candidates(
    bases: list[_Base], vector: np.ndarray, wanted: int, documents: list[uuid.UUID] | None
) -> list[tuple[int, float]]:
    """(chunk id, cosine) of the best ``wanted`` chunks of ``bases`` (one embedder)."""
    if connection.vendor == "postgresql":
        return _pg_vector_candidates(bases, vector, wanted, documents)
    found: list[tuple[int, float]] = []
    for base in bases:
        found.extend(_scan(base, vector, wanted, documents))
    found.sort(key=lambda pair: -pair[1])
    return found[:wanted]


def _pg_vector_candidates(
    bases: list[_Base], vector: np.ndarray, wanted: int, documents: list[uuid.UUID] | None
) -> list[tuple[int, float]]:
    dims = int(bases[0].dims)
    literal = "[" + ",".join(repr(float(x)) for x in vector.tolist()) + "]"
    by_generation: dict[int, list[uuid.UUID]] = defaultdict(list)
    for base in bases:
        by_generation[base.generation].append(base.id)
    found: list[tuple[int, float]] = []
    with transaction.atomic(), connection.cursor() as cursor:
        for generation, ids in by_generation.items():
            exact = dims > HNSW_MAX_DIMS or _few_chunks(cursor, ids, generation, documents)
            if not exact:
                # SET LOCAL: inside this transaction only (outside one it would do nothing).
                # Filters on base and generation are applied after the index's candidates:
                # an iterative scan fetches more until ``wanted`` rows pass them, further
                # than pgvector's default 20,000 tuples when the bases are a small share of
                # a big table. ef_search above the default 40: see the module's doc.
                cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                cursor.execute(f"SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}")
                cursor.execute(f"SET LOCAL hnsw.max_scan_tuples = {HNSW_MAX_SCAN_TUPLES}")
            sql, params = pg_vector_query(dims, literal, ids, generation, documents, wanted, exact=exact)
            cursor.execute(sql, params)
            found.extend((int(chunk_id), float(similarity)) for chunk_id, similarity in cursor.fetchall())
    # relaxed_order may return rows slightly out of order: sorted here.
    found.sort(key=lambda pair: -pair[1])
    return found[:wanted]


def _few_chunks(
    cursor: Any, ids: list[uuid.UUID], generation: int, documents: list[uuid.UUID] | None
) -> bool:
    """Whether bases ``ids`` (of one generation, within ``documents``) hold at most
    KB_EXACT_SCAN_CHUNKS chunks: counted on the (base, generation) index, the count cut
    off past the bound so that it costs no more than the exact scan it decides on."""
    bound = int(settings.KB_EXACT_SCAN_CHUNKS)
    if bound <= 0:
        return False
    sql = (
        "SELECT count(*) FROM (SELECT 1 FROM chat_knowledgechunk "
        "WHERE knowledge_base_id = ANY(%s) AND generation = %s"
    )
    params: list[Any] = [ids, generation]
    if documents is not None:
        sql += " AND document_id = ANY(%s)"
        params.append(documents)
    cursor.execute(sql + " LIMIT %s) AS counted", [*params, bound + 1])
    return int(cursor.fetchone()[0]) <= bound


def pg_vector_query(
    dims: int,
    literal: str,
    ids: list[uuid.UUID],
    generation: int,
    documents: list[uuid.UUID] | None,
    wanted: int,
    *,
    exact: bool = False,
) -> tuple[str, list[Any]]:
    """The nearest chunks of bases ``ids`` (of one generation) on PostgreSQL. By the
    HNSW index: the expression and the condition repeat the partial index's (schema.py),
    as the planner uses the index only when both match. ``exact``: ordered by the
    distance to the uncast column, which no index serves, so the base's rows are found
    by the (base, generation) index and sorted — every one compared. ``dims`` is an int
    of ours."""
    dims = int(dims)
    distance = "embedding <=> %s::vector" if exact else f"embedding::vector({dims}) <=> %s::vector({dims})"
    sql = (
        f"SELECT id, 1 - ({distance}) FROM chat_knowledgechunk "
        f"WHERE dims = {dims} AND knowledge_base_id = ANY(%s) AND generation = %s"
    )
    params: list[Any] = [literal, ids, generation]
    if documents is not None:
        sql += " AND document_id = ANY(%s)"
        params.append(documents)
    sql += f" ORDER BY {distance} LIMIT %s"
    params += [literal, wanted]
    return sql, params


def _keyword_candidates(
    bases: list[_Base], words: list[str], wanted: int, documents: list[uuid.UUID] | None
) -> list[int]:
    """Chunk ids of ``bases``' current generations matching any of ``words``, best first."""
    postgres = connection.vendor == "postgresql"
    pairs = " OR ".join("(c.knowledge_base_id = %s AND c.generation = %s)" for _ in bases)
    pair_params: list[Any] = []
    for base in bases:
        pair_params += [base.id if postgres else base.id.hex, base.generation]
    document_sql, document_params = "", []
    if documents is not None:
        document_sql = f" AND c.document_id IN ({', '.join(['%s'] * len(documents))})"
        document_params = [doc if postgres else doc.hex for doc in documents]
    if postgres:
        sql = (
            # tsv: the stored to_tsvector('english', text) (schema.py). ts_rank's
            # normalisation 1 divides by 1 + log(length): long chunks do not win by size.
            "SELECT c.id FROM chat_knowledgechunk c, to_tsquery('english', %s) q "
            f"WHERE c.tsv @@ q AND ({pairs}){document_sql} "
            "ORDER BY ts_rank(c.tsv, q, 1) DESC, c.id LIMIT %s"
        )
        params = [_tsquery(words), *pair_params, *document_params, wanted]
    else:
        sql = (
            f"SELECT c.id FROM {FTS_TABLE} f JOIN chat_knowledgechunk c ON c.id = f.rowid "
            f"WHERE {FTS_TABLE} MATCH %s AND ({pairs}){document_sql} "
            f"ORDER BY bm25({FTS_TABLE}), c.id LIMIT %s"
        )
        params = [_fts5_query(words), *pair_params, *document_params, wanted]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [int(row[0]) for row in cursor.fetchall()]


# --- SQLite: the vectors of a base, per process --------------------------------------------------


@dataclass
class _Vectors:
    generation: int
    revision: int
    ids: np.ndarray  # int64 chunk ids
    documents: np.ndarray  # the chunks' document ids (hex), for document_ids
    matrix: np.ndarray  # float32, (n, dims), rows L2-normalised


_vectors: OrderedDict[uuid.UUID, _Vectors] = OrderedDict()
_vectors_lock = threading.Lock()


def _base_vectors(base: _Base) -> _Vectors:
    with _vectors_lock:
        cached = _vectors.get(base.id)
        if cached is not None and (cached.generation, cached.revision) == (base.generation, base.revision):
            _vectors.move_to_end(base.id)
            return cached
    rows = list(
        KnowledgeChunk.objects.filter(knowledge_base_id=base.id, generation=base.generation, dims=base.dims)
        .exclude(embedding=None)
        .values_list("id", "document_id", "embedding")
    )
    if rows:
        matrix = np.vstack(
            [
                np.frombuffer(bytes(row[2]), dtype=np.float32)
                if isinstance(row[2], (bytes, memoryview))
                else np.asarray(row[2], dtype=np.float32)
                for row in rows
            ]
        )
    else:
        matrix = np.zeros((0, base.dims), dtype=np.float32)
    loaded = _Vectors(
        generation=base.generation,
        revision=base.revision,
        ids=np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
        documents=np.array([row[1].hex for row in rows], dtype=object),
        matrix=matrix,
    )
    with _vectors_lock:
        _vectors[base.id] = loaded
        _vectors.move_to_end(base.id)
        while len(_vectors) > VECTOR_CACHE_BASES:
            _vectors.popitem(last=False)
    return loaded


def _scan(
    base: _Base, vector: np.ndarray, wanted: int, documents: list[uuid.UUID] | None
) -> list[tuple[int, float]]:
    loaded = _base_vectors(base)
    if not len(loaded.ids):
        return []
    similarities = loaded.matrix @ vector.astype(np.float32)
    candidates = np.arange(len(loaded.ids))
    if documents is not None:
        candidates = candidates[np.isin(loaded.documents, [doc.hex for doc in documents])]
        if not len(candidates):
            return []
    subset = similarities[candidates]
    if len(candidates) > wanted:
        top = np.argpartition(-subset, wanted - 1)[:wanted]
    else:
        top = np.arange(len(candidates))
    top = top[np.argsort(-subset[top], kind="stable")]
    return [(int(loaded.ids[candidates[i]]), float(subset[i])) for i in top]


# --- a text not stored -----------------------------------------------------------------------------


def rank_passages(
    text: str, meta: dict[str, Any], query: str, limit: int, embedder: Embedder
) -> list[tuple[Chunk, float]]:
    """The best ``limit`` chunks of a text that is not stored (an attached file too long
    for the prompt), ranked as search() ranks: cosine and BM25 fused, score = max(cosine,
    share of the query's words). Embedded on the fly; should the embedder fail, ranked by
    words alone. No threshold: the caller gets the best there is."""
    chunks = split(text, meta)
    if not chunks or limit <= 0:
        return []
    words = query_words(query)
    rankings: list[list[int]] = []
    cosines = np.zeros(len(chunks), dtype=np.float32)
    try:
        batch = max(1, int(settings.KB_EMBED_BATCH))
        query_vector = embedder.embed([query])[0] if query.strip() else None
        if query_vector is not None:
            matrix = np.vstack(
                [
                    embedder.embed([c.text for c in chunks[i : i + batch]])
                    for i in range(0, len(chunks), batch)
                ]
            )
            cosines = matrix @ query_vector
            rankings.append([int(i) for i in np.argsort(-cosines, kind="stable")])
    except EmbeddingError:
        pass  # words alone
    if words:
        bm25 = _bm25([chunk.text for chunk in chunks], words)
        rankings.append([int(i) for i in np.argsort(-bm25, kind="stable") if bm25[i] > 0])
    shares = [word_share(words, chunk.text) for chunk in chunks]
    scores = {i: min(1.0, max(0.0, float(cosines[i]), shares[i])) for i in range(len(chunks))}
    order = fused_order(rrf(rankings), scores) or list(range(len(chunks)))
    ranked = [(chunks[i], round(scores[i], 4)) for i in order]
    return ranked[:limit]


def _bm25(texts: list[str], words: list[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """BM25 of each text for the query's words (stems compared)."""
    terms = [_stem(word) for word in words]
    documents = [[_stem(token.lower()) for token in WORD.findall(text)] for text in texts]
    average = max(1.0, sum(len(doc) for doc in documents) / len(documents))
    frequency = {term: sum(term in set(doc) for doc in documents) for term in set(terms)}
    scores = np.zeros(len(texts), dtype=np.float64)
    for index, doc in enumerate(documents):
        counts: dict[str, int] = defaultdict(int)
        for token in doc:
            counts[token] += 1
        for term in set(terms):
            if counts.get(term):
                idf = math.log(1 + (len(documents) - frequency[term] + 0.5) / (frequency[term] + 0.5))
                tf = counts[term]
                scores[index] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / average))
    return scores
