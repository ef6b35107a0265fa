"""What the knowledge tables need beyond Django's schema, by database.

PostgreSQL: the pgvector extension (before the table whose column is ``vector``), the
chunks' English ``tsvector`` stored in a generated column ``tsv`` with a GIN index over
it (ranking reads it instead of parsing every matching chunk's text again; Django's
model does not know the column, PostgreSQL fills it), and one partial HNSW index (cosine)
per embedding dimension in use: ``embedding::vector(N)`` where ``dims = N`` (a column
without a fixed dimension cannot be indexed whole; pgvector's documented way for mixed
dimensions). HNSW indexes ``vector`` up to 2,000 dimensions; larger models are scanned.

SQLite: an FTS5 table over the chunks' text (external content, kept by triggers), with
the Porter stemmer as PostgreSQL's 'english' configuration stems.
"""

from __future__ import annotations

from typing import Any

# The offline default (wordllama l2_supercat, 256 dimensions) is indexed from the start.
DEFAULT_DIMS = 256
HNSW_MAX_DIMS = 2000
FTS_TABLE = "chat_knowledgechunk_fts"

SQLITE_FTS = [
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
    "text, content='chat_knowledgechunk', content_rowid='id', tokenize='porter unicode61')",
    f"CREATE TRIGGER IF NOT EXISTS chat_knowledgechunk_ai AFTER INSERT ON chat_knowledgechunk BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
    f"CREATE TRIGGER IF NOT EXISTS chat_knowledgechunk_ad AFTER DELETE ON chat_knowledgechunk BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); END",
    f"CREATE TRIGGER IF NOT EXISTS chat_knowledgechunk_au AFTER UPDATE OF text ON chat_knowledgechunk BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
]
SQLITE_FTS_DROP = [
    "DROP TRIGGER IF EXISTS chat_knowledgechunk_ai",
    "DROP TRIGGER IF EXISTS chat_knowledgechunk_ad",
    "DROP TRIGGER IF EXISTS chat_knowledgechunk_au",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
]
POSTGRES_TEXT = [
    "ALTER TABLE chat_knowledgechunk ADD COLUMN IF NOT EXISTS tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX IF NOT EXISTS chat_knowledgechunk_tsv ON chat_knowledgechunk USING gin (tsv)",
]
POSTGRES_TEXT_DROP = [
    "DROP INDEX IF EXISTS chat_knowledgechunk_tsv",
    "ALTER TABLE chat_knowledgechunk DROP COLUMN IF EXISTS tsv",
]


def vector_index_name(dims: int) -> str:
    return f"chat_knowledgechunk_hnsw_{int(dims)}"


def vector_index_sql(dims: int) -> str:
    dims = int(dims)
    return (
        f"CREATE INDEX IF NOT EXISTS {vector_index_name(dims)} ON chat_knowledgechunk "
        f"USING hnsw ((embedding::vector({dims})) vector_cosine_ops) WHERE dims = {dims}"
    )


def ensure_vector_index(connection: Any, dims: int) -> bool:
    """Create the HNSW index for ``dims`` on PostgreSQL if it is missing (a base with a
    new embedding model calls this before its first chunk). False when no index is
    made: another database, or more dimensions than HNSW takes."""
    if connection.vendor != "postgresql" or not 0 < int(dims) <= HNSW_MAX_DIMS:
        return False
    with connection.cursor() as cursor:
        # Looked up first: CREATE INDEX, even IF NOT EXISTS, fails in a transaction that
        # has pending deferred-constraint events (a chunk just written with its foreign keys).
        cursor.execute("SELECT to_regclass(%s)", [vector_index_name(dims)])
        if cursor.fetchone()[0] is None:
            cursor.execute(vector_index_sql(dims))
    return True


def create_extension(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS vector")


def create_search_indexes(apps: Any, schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for statement in POSTGRES_TEXT:
            schema_editor.execute(statement)
        schema_editor.execute(vector_index_sql(DEFAULT_DIMS))
    elif vendor == "sqlite":
        for statement in SQLITE_FTS:
            schema_editor.execute(statement)


def drop_search_indexes(apps: Any, schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for statement in POSTGRES_TEXT_DROP:
            schema_editor.execute(statement)
        schema_editor.execute(f"DROP INDEX IF EXISTS {vector_index_name(DEFAULT_DIMS)}")
    elif vendor == "sqlite":
        for statement in SQLITE_FTS_DROP:
            schema_editor.execute(statement)
