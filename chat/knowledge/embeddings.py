"""Embedding models behind one interface: text in, L2-normalised float32 rows out.

- ``local:wordllama-l2-256``: the offline default. wordllama's l2_supercat model (token
  embeddings taken from large language models, average-pooled; MIT) ships its weights
  and tokenizer inside its wheel, so nothing is downloaded at run time; 256 dimensions,
  ~16 MB, thousands of passages a second on one core (docs/architecture.md, "Why
  wordllama").
- ``provider:<name>:<model>``: an OpenAI-compatible ``/v1/embeddings`` of an admin's
  Provider row, through the official ``openai`` SDK (as transcription does).

Any failure is an EmbeddingError whose text may be shown to a user (no secrets, no
response bodies): a document then ends ``failed`` with it, and a search falls back to
keywords for the bases it concerns.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from django.conf import settings

log = logging.getLogger(__name__)

LOCAL_KEY = "local:wordllama-l2-256"
LOCAL_DIMS = 256


class EmbeddingError(Exception):
    """An embedding could not be made; ``str()`` is a reason fit to show a user."""


class Embedder(Protocol):
    key: str

    @property
    def dims(self) -> int:
        """Its vectors' length (a provider's is learnt from its first answer)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32, shape (len(texts), dims), every row of norm 1 (or 0 for an empty text)."""


def normalised(vectors: Any, dims: int) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dims:
        raise EmbeddingError(f"the model answered vectors of shape {array.shape}, not (n, {dims})")
    if not np.isfinite(array).all():
        raise EmbeddingError("the model answered vectors that are not finite numbers")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    # An all-zero row (an empty text, a text of unknown tokens) stays zero: cosine 0 with anything.
    result: np.ndarray = np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)
    return result


# --- the offline default -----------------------------------------------------------------------

_wordllama: Any = None
_wordllama_lock = threading.Lock()


def _load_wordllama() -> Any:
    """The model, loaded once per process (about half a second). Its plain ``load()``
    looks for the tokenizer in a folder it names differently from the one it ships, and
    then tries to download it; pointed at its own package folder it finds both files."""
    global _wordllama
    with _wordllama_lock:
        if _wordllama is None:
            import wordllama
            from wordllama import WordLlama

            try:
                _wordllama = WordLlama.load(
                    cache_dir=Path(wordllama.__file__).parent, disable_download=True, dim=LOCAL_DIMS
                )
            except Exception as exc:  # a broken install: no vectors, said plainly
                log.exception("could not load wordllama")
                raise EmbeddingError("the local embedding model could not be loaded") from exc
        return _wordllama


class WordLlamaEmbedder:
    key = LOCAL_KEY
    dims = LOCAL_DIMS

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        model = _load_wordllama()
        # The model is read-only once loaded; its tokenizer (Rust) is thread-safe.
        return normalised(model.embed(list(texts), norm=False, return_np=True), self.dims)


# --- OpenAI-compatible providers -----------------------------------------------------------------


class ProviderEmbedder:
    """A provider's /v1/embeddings, read from its row once, detached from the ORM. Its
    dimension is learnt from its answers (asked once per process with a tiny request
    when wanted before any)."""

    def __init__(self, *, key: str, name: str, base_url: str, api_key_env: str, model: str):
        self.key = key
        self.name = name
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.model = model

    @property
    def dims(self) -> int:
        if not _provider_dims.get(self.key):
            self.embed(["dimension probe"])
        return _provider_dims[self.key]

    def embed(self, texts: list[str]) -> np.ndarray:
        known = _provider_dims.get(self.key, 0)
        if not texts:
            return np.zeros((0, known), dtype=np.float32)
        import openai

        api_key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or "not-set",  # servers without keys (a local one) ignore it
            timeout=settings.PROVIDER_TIMEOUT,
            max_retries=1,
        )
        try:
            with client:
                result = client.embeddings.create(model=self.model, input=list(texts))
        except openai.APIStatusError as exc:
            raise self._failure(f"HTTP {exc.status_code}") from exc
        except openai.APITimeoutError as exc:
            raise self._failure(
                f"no answer within PROVIDER_TIMEOUT ({settings.PROVIDER_TIMEOUT:g} s)"
            ) from exc
        except openai.APIError as exc:  # connection refused, a body that is not embeddings
            raise self._failure(type(exc).__name__) from exc
        data = sorted(getattr(result, "data", None) or [], key=lambda item: getattr(item, "index", 0))
        if len(data) != len(texts):
            raise self._failure(f"{len(data)} vectors for {len(texts)} texts")
        try:
            rows = [[float(x) for x in item.embedding] for item in data]
        except (TypeError, ValueError, AttributeError) as exc:
            raise self._failure("an answer without vectors") from exc
        width = len(rows[0])
        if width == 0 or any(len(row) != width for row in rows):
            raise self._failure("vectors of different lengths")
        if known and width != known:
            # The model behind the name changed: its vectors cannot be compared with the stored ones.
            raise self._failure(f"{width} dimensions where {known} were expected")
        try:
            vectors = normalised(rows, width)
        except EmbeddingError as exc:
            raise self._failure(str(exc)) from exc
        _provider_dims[self.key] = width
        return vectors

    def _failure(self, what: str) -> EmbeddingError:
        log.warning("embedding by provider %s failed: %s", self.name, what)
        return EmbeddingError(f"the embedding provider {self.name} failed: {what}")


# Dimensions learnt per provider key, so that a process asks a provider for them once.
_provider_dims: dict[str, int] = {}


def embedder_for(key: str) -> Embedder:
    """The embedder a base's ``embedder`` names; EmbeddingError for a key naming nothing
    usable (an unknown local model, a provider that is gone, disabled or has no URL)."""
    if key == LOCAL_KEY:
        return WordLlamaEmbedder()
    kind, _, rest = key.partition(":")
    name, _, model = rest.partition(":")
    if kind != "provider" or not name or not model:
        raise EmbeddingError(f"unknown embedding model {key[:100]!r}")
    from chat.models import Provider

    provider = Provider.objects.filter(name=name, enabled=True, kind=Provider.Kind.OPENAI_COMPAT).first()
    # Without a base URL the SDK would fall back to api.openai.com: text goes only where an admin said.
    if provider is None or not provider.base_url:
        raise EmbeddingError(f"the embedding provider {name[:64]} is not configured")
    return ProviderEmbedder(
        key=key, name=provider.name, base_url=provider.base_url, api_key_env=provider.api_key_env, model=model
    )


def default_embedder_key() -> str:
    """The key new bases get, from the EMBEDDINGS setting: "local" (the default) or
    "<provider name>:<model>"."""
    value = str(settings.EMBEDDINGS).strip()
    if value in ("", "local", LOCAL_KEY):
        return LOCAL_KEY
    if value.startswith("provider:"):
        return value
    return f"provider:{value}"
