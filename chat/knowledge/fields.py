"""The column a chunk's embedding lives in.

On PostgreSQL it is pgvector's ``vector`` with no fixed dimension (bases of different
embedding models share the table; each dimension has its own partial HNSW index over
``embedding::vector(N)``, see chat/knowledge/vector_index.py). On SQLite, which here
cannot load extensions, it is the float32 bytes, scanned with numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db import models


class EmbeddingField(models.Field[Any, Any]):
    description = "An embedding: pgvector's vector on PostgreSQL, float32 bytes elsewhere"

    def db_type(self, connection: Any) -> str:
        return "vector" if connection.vendor == "postgresql" else "blob"

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if value is None:
            return None
        array = np.asarray(value, dtype=np.float32)
        if connection.vendor == "postgresql":
            # pgvector's text form; the driver sends it as text and the column casts it.
            return "[" + ",".join(repr(float(x)) for x in array.tolist()) + "]"
        return array.tobytes()

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (bytes, memoryview)):
            return np.frombuffer(bytes(value), dtype=np.float32)
        if isinstance(value, str):
            return np.asarray([float(x) for x in value.strip("[]").split(",") if x], dtype=np.float32)
        return np.asarray(value, dtype=np.float32)
