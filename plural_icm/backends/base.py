"""The one small interface everything that talks to a language model goes through.

Prompts are token ids, given as *segments*: ``((bos, ...), (tok, tok, ...), ...)``. The prompt is
the concatenation of its segments; segment boundaries are where a backend may cache and reuse a
computed prefix (the transformers backend keeps the key/value states of every segment it has seen,
keyed by the content of the whole prefix up to it; vLLM's automatic prefix caching does the same in
fixed-size blocks). Callers that build many prompts sharing long prefixes (ICM's leave-one-out
contexts, few-shot inference) get the reuse for free and exactly: a cached prefix was computed from
the very same tokens at the very same positions.

Label rule (documented in the README): a label string is appended to the prompt as text; its token
ids are ``tokenizer.encode(label, add_special_tokens=False)``. Prompts end *without* a trailing
space and labels carry their leading space (``" True"``), which is how BPE tokenizers split running
text. A one-token label is scored as the next-token log-probability; a label of several tokens is
scored as the log-probability of the whole continuation (sum over its tokens). Backends raise a
clear error instead of silently scoring 0 (the published ICM code's behaviour when a label is not
in the top-20).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

Segment = tuple[int, ...]
Prompt = tuple[Segment, ...]


def as_prompt(*segments: Sequence[int]) -> Prompt:
    """Normalise lists of token ids into a hashable prompt."""
    return tuple(tuple(int(t) for t in s) for s in segments if len(s))


def flatten(prompt: Prompt) -> list[int]:
    return [t for seg in prompt for t in seg]


def prompt_length(prompt: Prompt) -> int:
    return sum(len(s) for s in prompt)


@dataclass
class BackendStats:
    """Counters every backend keeps; benchmarks and the search engine report them."""

    prompts: int = 0
    """Prompts scored or generated from."""
    prompt_tokens_computed: int = 0
    """Prompt tokens that went through the model."""
    prompt_tokens_cached: int = 0
    """Prompt tokens whose states were served from a prefix cache instead."""
    generated_tokens: int = 0
    wall_time_s: float = 0.0
    request_cache_hits: int = 0
    """Whole requests answered by the content-keyed request cache (no model call)."""

    def snapshot(self) -> "BackendStats":
        return BackendStats(**asdict(self))

    def since(self, earlier: "BackendStats") -> "BackendStats":
        a, b = asdict(self), asdict(earlier)
        return BackendStats(**{k: a[k] - b[k] for k in a})

    @property
    def cache_hit_rate(self) -> float:
        total = self.prompt_tokens_computed + self.prompt_tokens_cached
        return self.prompt_tokens_cached / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cache_hit_rate"] = self.cache_hit_rate
        return d


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)

    @property
    def deterministic(self) -> bool:
        """Greedy decoding, or sampling with a fixed seed: safe to cache."""
        return self.temperature == 0.0 or self.seed is not None


class ContextLengthError(ValueError):
    """A prompt is longer than the model's context window."""


class LMBackend(ABC):
    """A language model behind two calls: label scoring and generation.

    Subclasses set ``name`` (registry name), ``model_id``, ``revision``, ``tokenizer`` (a
    transformers tokenizer) and ``max_context``, and implement the two abstract methods. A backend
    built from a model config also sets ``settings_class``, a
    :class:`~plural_icm.backends.settings.BackendSettings` subclass whose fields are exactly its
    constructor's keywords (what it takes from the model config). A backend declares what it
    is with the class attributes below and :func:`plural_icm.backends.registry.register_backend`
    (a decorator in its own module); the pipeline reads them instead of comparing names.
    """

    name: str = "abstract"
    settings_class: Any = None
    install: str = ""
    """What to install when the backend's dependency is missing (the error names it)."""
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
    model_id: str = ""
    revision: str | None = None
    tokenizer: Any = None
    max_context: int = 0

    def __init__(self) -> None:
        self.stats = BackendStats()

    # -- the interface --------------------------------------------------------------------
    @abstractmethod
    def label_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> np.ndarray:
        """Log-probability of each label string as the continuation of each prompt.

        Returns an array of shape ``(len(prompts), len(labels))`` in input order.
        """

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        """Generated text for each prompt, in input order."""

    # -- helpers shared by all backends -----------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def bos(self) -> Segment:
        """The segment a prompt starts with: the BOS token when the model uses one."""
        bos_id = getattr(self.tokenizer, "bos_token_id", None)
        add = getattr(self.tokenizer, "add_bos_token", bos_id is not None)
        return (int(bos_id),) if bos_id is not None and add is not False else ()

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        ids = [self.encode(label) for label in labels]
        for label, toks in zip(labels, ids):
            if not toks:
                raise ValueError(f"label {label!r} encodes to no tokens with {self.model_id}")
        return ids

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of ``messages`` rendered with the model's chat template.

        Base models without a template get a plain "Role: text" rendering, so the same code path
        serves zero-shot prompting of base models.
        """
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            out = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                          tokenize=True)
            if isinstance(out, dict) or hasattr(out, "keys"):
                out = out["input_ids"]
            return [int(t) for t in out]
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
        if add_generation_prompt:
            text += "Assistant:"
        return list(self.bos()) + self.encode(text)

    def check_length(self, prompt: Prompt, what: str = "prompt", extra: int = 1) -> None:
        n = prompt_length(prompt) + extra
        if self.max_context and n > self.max_context:
            raise ContextLengthError(
                f"{what} needs {n} tokens but {self.model_id} has a context of {self.max_context}; "
                "use fewer claims per search (dataset.max_search_claims), fewer in-context examples "
                "(inference.n_examples) or a context policy (inference.context_policy=drop_oldest)")

    @contextmanager
    def timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stats.wall_time_s += time.perf_counter() - t0

    def cache_identity(self) -> dict[str, Any]:
        """Everything about this backend that changes its outputs (for the request cache key)."""
        return {"backend": self.name, "model": self.model_id, "revision": self.revision,
                "max_context": self.max_context}

    def close(self) -> None:
        """Release the model (GPU memory, engine processes)."""
