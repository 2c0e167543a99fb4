"""Backends by name, imported lazily so a missing optional dependency fails with a clear message."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NamedTuple

from .base import LMBackend
from .request_cache import CachedBackend
from .settings import BackendSettings, BackendSettingsError


class BackendInfo(NamedTuple):
    """What a backend is, as its class declares it (:class:`~plural_icm.backends.base.LMBackend`'s
    ``install``, ``engine_per_process``, ``reserves_gpu_memory``, ``served``), so no orchestrator
    compares backend names. Its module imports its optional dependency only when the backend is
    built, so asking what it is needs no such dependency."""

    module: str
    class_name: str
    install: str
    """What to install when the import fails."""
    engine_per_process: bool = False
    reserves_gpu_memory: bool = False
    served: bool = False


def register_backend(cls: type[LMBackend]) -> type[LMBackend]:
    """Class decorator in a backend's own module: make ``cls`` available as
    ``model.backend=<cls.name>``, with what it declares of itself."""
    old = BACKENDS.get_registered(cls.name)
    if old is not None and old[1] != cls.__name__:
        raise ValueError(f"backend {cls.name!r} is registered twice")
    BACKENDS.register(cls.name, BackendInfo(cls.__module__, cls.__name__, cls.install,
                                            cls.engine_per_process, cls.reserves_gpu_memory,
                                            cls.served))
    return cls


class _Backends(dict):
    """kind -> :class:`BackendInfo` of every backend the package defines: its modules are imported
    on first use (none imports its optional dependency at import), each backend class registering
    itself (:func:`register_backend`). A plain (module, class name, install) tuple is read with
    the defaults."""

    _discovered = False

    def _discover(self) -> None:
        if _Backends._discovered:
            return
        _Backends._discovered = True
        from plural_icm.utils.plugins import import_plugin_modules

        import_plugin_modules("plural_icm.backends")

    def register(self, kind: str, info: BackendInfo) -> None:
        dict.__setitem__(self, kind, info)

    def get_registered(self, kind: str):
        return dict.get(self, kind)

    def __getitem__(self, kind):
        self._discover()
        return dict.__getitem__(self, kind)

    def __contains__(self, kind) -> bool:
        self._discover()
        return dict.__contains__(self, kind)

    def __iter__(self):
        self._discover()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._discover()
        return dict.__len__(self)

    def get(self, kind, default=None):
        self._discover()
        return dict.get(self, kind, default)

    def keys(self):
        self._discover()
        return dict.keys(self)

    def items(self):
        self._discover()
        return dict.items(self)


#: kind -> BackendInfo, declared by each backend's class (:func:`register_backend`).
BACKENDS: _Backends = _Backends()


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
