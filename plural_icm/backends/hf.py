"""The transformers backend, with an exact segment-level prefix cache.

How label scoring reuses work (``prefix_cache=True``):

* Every prompt is a sequence of segments; the states of each segment are kept in the exact,
  byte-bounded LRU of :mod:`plural_icm.backends.prefix_cache` (keyed by a hash chain over the whole
  prefix; budget ``prefix_cache_gb``, default 4 GiB; an evicted segment is recomputed).
* A call builds a trie of its prompts' segments and walks it depth first, keeping the states of the
  current path in one growing buffer (a DFS stack: a child's states are written after its parent's,
  siblings overwrite each other). At each node, children whose states are cached are descended into
  without computing anything; the others are computed in batches that share the node's states as
  the KV cache (the forward's ``cache``, ``past_key_values`` before transformers 5.25; expanded
  over the batch): each row is the chain of segments down to the next branching point or prompt
  end, right-padded (under causal attention real tokens never see pads that come after them).
  Shared uncached segments are thus computed once; the LM head runs only where a label is scored
  (``logits_to_keep``).
* The final segment of a scored prompt is always computed (its last position gives the logits).
* Labels of several tokens are scored exactly as the sum over the continuation: the label's tokens
  but the last become one more segment after the prompt (one extra short row per prompt and label).

``prefix_cache=False`` computes every prompt from scratch (batched, right-padded): the reference
cost model.

Exactness: every prompt's log-probabilities equal running its full token sequence alone through the
model, up to float rounding (tested to 1e-4 in fp32 on a tiny random model and on SmolLM2).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from .base import GenerationParams, LMBackend, Prompt, flatten, prompt_length
from .loading import ResolvedModel, load_causal_lm, load_tokenizer, resolve_model
from .settings import HFSettings
from .registry import register_backend
from .prefix_cache import ROOT_KEY, PathBuffer, SegmentKVCache, chain_key, gb_to_bytes

log = logging.getLogger(__name__)

@dataclass
class _Node:
    key: bytes
    seg: tuple[int, ...]
    children: dict[bytes, "_Node"] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)  # indices of requests ending here


@dataclass
class _Request:
    prompt: Prompt
    tail_targets: list[list[int]]
    """For each of the last ``len(tail_targets)`` positions: token ids whose log-prob is wanted."""


def _resolve_dtype(dtype: str, device: str) -> Any:
    import torch
    if dtype in ("auto", None):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(names)}")
    return names[dtype]


def _set_threads() -> None:
    import torch
    if os.environ.get("OMP_NUM_THREADS"):
        return  # the user (or the SLURM launcher) decided
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    # A SLURM job without CPU binding (task/none, no cgroups) still sees every core; more OpenMP
    # threads than allocated CPUs makes jobs sharing a node spin against each other (tens of
    # times slower), so the allocation wins.
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        n = min(n, int(slurm))
    torch.set_num_threads(max(1, n))


@register_backend
class HFBackend(LMBackend):
    """transformers ``AutoModelForCausalLM`` behind the :class:`LMBackend` interface."""

    name = "hf"
    settings_class = HFSettings
    install = "pip install torch transformers accelerate gguf"

    def __init__(self, model_spec: str, cache_dir: str | Path | None = None,
                 revision: str | None = None, max_context: int | None = None,
                 trust_remote_code: bool = False, dtype: str = "auto", device: str = "auto",
                 batch_size: int = 8, prefix_cache: bool = True,
                 prefix_cache_gb: float | None = 4.0, prefix_cache_tokens: int | None = None,
                 max_batch_tokens: int = 16384) -> None:
        """Load the model. The keywords are :class:`~plural_icm.backends.settings.HFSettings`'
        fields (``prefix_cache_gb``: the segment cache's budget in GiB, None unbounded)."""
        super().__init__()
        import torch
        t0 = time.perf_counter()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if device == "cpu":
            _set_threads()
        self.torch_dtype = _resolve_dtype(dtype, device)
        self.resolved: ResolvedModel = resolve_model(model_spec, cache_dir, revision=revision,
                                                     trust_remote_code=trust_remote_code)
        self.model_id = self.resolved.model_id
        self.revision = revision
        self.tokenizer = load_tokenizer(self.resolved)
        self.model = load_causal_lm(self.resolved, self.torch_dtype, device)
        self._cache_arg = _cache_keyword(self.model)
        text_cfg = self.model.config.get_text_config(decoder=True)
        model_ctx = int(getattr(text_cfg, "max_position_embeddings", 0) or 0)
        self.max_context = int(max_context or model_ctx)
        if model_ctx and self.max_context > model_ctx:
            log.warning("max_context %d exceeds %s's max_position_embeddings %d; using %d",
                        self.max_context, self.model_id, model_ctx, model_ctx)
            self.max_context = model_ctx
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens)
        self.prefix_cache = bool(prefix_cache)
        self.prefix_cache_gb = prefix_cache_gb
        self.kv_cache = SegmentKVCache(gb_to_bytes(prefix_cache_gb), max_tokens=prefix_cache_tokens)
        self.load_time_s = time.perf_counter() - t0
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        log.info("loaded %s (%s, %s) in %.1f s", self.model_id, self.torch_dtype, device, self.load_time_s)

    # -- identity ------------------------------------------------------------------------------
    def cache_identity(self) -> dict[str, Any]:
        ident = super().cache_identity()
        ident["dtype"] = str(self.torch_dtype).replace("torch.", "")
        ident["device"] = self.device.split(":")[0]  # cpu and cuda kernels round differently
        if self.resolved.source_sha:
            ident["source_sha"] = self.resolved.source_sha
        if self.resolved.is_local:
            cfg = Path(self.resolved.path_or_id) / "config.json"
            if cfg.exists():
                ident["config_sha"] = hashlib.sha256(cfg.read_bytes()).hexdigest()[:16]
        return ident

    def close(self) -> None:
        self.kv_cache.clear()
        self.model = None

    # -- label scoring --------------------------------------------------------------------------
    def label_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> np.ndarray:
        prompts = [tuple(tuple(int(t) for t in s) for s in p if len(s)) for p in prompts]
        label_ids = self.label_token_ids(labels)
        extra = max(len(ids) for ids in label_ids) if label_ids else 1
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty; start prompts with backend.bos()")
            self.check_length(p, what=f"prompt {i}", extra=extra)
        if not prompts or not labels:
            return np.zeros((len(prompts), len(labels)))
        first = sorted({ids[0] for ids in label_ids})
        first_col = {t: j for j, t in enumerate(first)}
        continuations = sorted({tuple(ids) for ids in label_ids if len(ids) > 1})
        requests: list[_Request] = []
        for p in prompts:
            requests.append(_Request(p, [first]))
            for ids in continuations:
                requests.append(_Request(p + (ids[:-1],), [[t] for t in ids[1:]]))
        # Tokens the call stands for: each prompt once, plus the label tokens scored after it.
        total = sum(prompt_length(p) for p in prompts) + len(prompts) * sum(len(c) - 1 for c in continuations)
        with self.timed():
            results = self._score(requests, total)
        self.stats.prompts += len(prompts)
        per_prompt = 1 + len(continuations)
        out = np.zeros((len(prompts), len(labels)), dtype=np.float64)
        for i in range(len(prompts)):
            base = results[i * per_prompt]
            ext = {ids: results[i * per_prompt + 1 + c] for c, ids in enumerate(continuations)}
            for j, ids in enumerate(label_ids):
                lp = float(base[0][first_col[ids[0]]])
                if len(ids) > 1:
                    lp += float(sum(float(r[0]) for r in ext[tuple(ids)]))
                out[i, j] = lp
        return out

    def _score(self, requests: list[_Request], total: int) -> list[list[np.ndarray]]:
        """Results of ``requests``; ``total`` is the number of prompt tokens they stand for."""
        import torch
        results: list[Any] = [None] * len(requests)
        computed_before = self.stats.prompt_tokens_computed
        with torch.inference_mode():
            if self.prefix_cache:
                self._score_with_reuse(requests, results)
            else:
                self._score_from_scratch(requests, results)
        computed = self.stats.prompt_tokens_computed - computed_before
        self.stats.prompt_tokens_cached += max(0, total - computed)
        return results

    def _score_from_scratch(self, requests: list[_Request], results: list[Any]) -> None:
        order = sorted(range(len(requests)), key=lambda i: prompt_length(requests[i].prompt))
        rows = [(flatten(requests[i].prompt), [i]) for i in order]
        ctx = _Ctx(requests, results)
        for batch in self._batches(rows, 0):
            self._forward_rows(None, 0, batch, ctx)

    def _score_with_reuse(self, requests: list[_Request], results: list[Any]) -> None:
        """Fill ``results`` for ``requests``, computing each distinct uncached segment once.

        The requests' segments become a trie (a node per distinct prefix, keyed by the hash chain
        the LRU uses). A depth-first walk keeps the states of the current path in one
        :class:`PathBuffer`; at each node, a child found in the LRU is descended into without
        computing anything, and the others are computed together in :meth:`_run_chains`, one row
        per chain of segments down to the next branching point or prompt end (a chain stops early
        at a segment the LRU holds, so a cached suffix is not recomputed). Prompts that end at a
        node are scored where their row ends; their final segment is never taken from the LRU
        (its last position's logits are needed). Equal, up to float rounding, to running each
        prompt alone (module doc)."""
        root = _Node(ROOT_KEY, ())
        for i, req in enumerate(requests):
            node = root
            for seg in req.prompt:
                key = chain_key(node.key, seg)
                child = node.children.get(key)
                if child is None:
                    child = node.children[key] = _Node(key, seg)
                node = child
            node.ends.append(i)
        buf = PathBuffer()
        ctx = _Ctx(requests, results)
        # Explicit stack instead of recursion: prompts can have hundreds of segments.
        stack: list[tuple[_Node, int, list[tuple[Any, Any]] | None]] = [(root, 0, None)]
        while stack:
            node, start, kv = stack.pop()
            if kv is not None:
                buf.write(start, kv)
            past_len = start + (len(node.seg) if kv is not None else 0)
            rows: list[tuple[list[_Node], Any]] = []
            descend: list[tuple[_Node, int, list[tuple[Any, Any]]]] = []
            for child in sorted(node.children.values(), key=lambda c: c.seg, reverse=True):
                cached = None if child.ends else self.kv_cache.get(child.key)
                if cached is not None:
                    descend.append((child, past_len, cached))
                    continue
                chain = [child]
                while len(chain[-1].children) == 1 and not chain[-1].ends:
                    nxt = next(iter(chain[-1].children.values()))
                    if not nxt.ends and nxt.key in self.kv_cache:
                        break
                    chain.append(nxt)
                rows.append((chain, None))
            if rows:
                new_nodes = self._run_chains(buf, past_len, [c for c, _ in rows], ctx)
                for chain_end, chain_start, chain_kv in new_nodes:
                    descend.append((chain_end, chain_start, chain_kv))
            # The stack is LIFO: push in reverse so children are visited in sorted order.
            for child, child_start, child_kv in descend:
                if child.children:
                    stack.append((child, child_start, child_kv))

    def _run_chains(self, buf: PathBuffer, past_len: int, chains: list[list[_Node]],
                    ctx: "_Ctx") -> list[tuple[_Node, int, list[tuple[Any, Any]]]]:
        """Compute chains of segments after the buffer's first ``past_len`` positions, store every
        segment's states in the LRU, and return, for each chain whose last node has children, the
        node to descend into with the chain's joined states (a :class:`_ChainEnd`)."""
        rows = sorted((_ChainRow([t for n in chain for t in n.seg], chain[-1].ends, chain)
                       for chain in chains), key=lambda r: len(r.tokens))
        follow: list[tuple[_Node, int, list[tuple[Any, Any]]]] = []
        for batch in self._batches(rows, past_len):
            kv_out = self._forward_rows(buf, past_len, [(r.tokens, r.ends) for r in batch], ctx)
            for b, row in enumerate(batch):
                off = 0
                seg_kvs = []
                for n in row.chain:
                    seg_len = len(n.seg)
                    seg_kv = [(k[b:b + 1, :, past_len + off: past_len + off + seg_len].clone(),
                               v[b:b + 1, :, past_len + off: past_len + off + seg_len].clone())
                              for k, v in kv_out]
                    self._store(n.key, seg_len, seg_kv)
                    seg_kvs.append(seg_kv)
                    off += seg_len
                end = row.chain[-1]
                if end.children:
                    # States of the whole chain, written after the parent's in the path buffer.
                    joined = seg_kvs[0] if len(seg_kvs) == 1 else [
                        (_cat([s[i][0] for s in seg_kvs]), _cat([s[i][1] for s in seg_kvs]))
                        for i in range(len(kv_out))]
                    follow.append((_ChainEnd(end, off), past_len, joined))
        # _ChainEnd makes the stack treat the whole chain as one node of length `off`.
        return follow

    def _store(self, key: bytes, n_tokens: int, kv: list[tuple[Any, Any]]) -> None:
        self.kv_cache.put(key, n_tokens, kv)

    def _batches(self, rows: list[Any], past_len: int) -> list[list[Any]]:
        batches, cur = [], []
        for r in rows:  # rows sorted by length: the last row of a batch is its longest
            if cur and (len(cur) >= self.batch_size
                        or (len(cur) + 1) * (past_len + len(r[0])) > self.max_batch_tokens):
                batches.append(cur)
                cur = []
            cur.append(r)
        if cur:
            batches.append(cur)
        return batches

    def _forward_rows(self, buf: PathBuffer | None, past_len: int,
                      rows: list[tuple[list[int], list[int]]], ctx: "_Ctx") -> list[tuple[Any, Any]]:
        """One forward pass over right-padded ``rows`` after ``past_len`` shared positions.

        ``rows`` are (tokens, indices of requests ending at the row's last token). Fills the
        requests' results and returns the per-layer key/value states (batch, heads, seq, dim).
        """
        import torch
        n_rows, width = len(rows), max(len(r[0]) for r in rows)
        ids = torch.full((n_rows, width), self.pad_id, dtype=torch.long)
        for b, (toks, _) in enumerate(rows):
            ids[b, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        # Positions where logits are needed (the tails of the requests ending on each row).
        need: dict[int, int] = {}
        for toks, ends in rows:
            n_tail = max((len(ctx.requests[i].tail_targets) for i in ends), default=0)
            for p in range(len(toks) - n_tail, len(toks)):
                need.setdefault(p, len(need))
        keep = sorted(need)
        col = {p: c for c, p in enumerate(keep)}
        past = buf.past(past_len, n_rows) if buf is not None else None
        pos = torch.arange(past_len, past_len + width, dtype=torch.long).unsqueeze(0).expand(n_rows, -1)
        out = self.model(input_ids=ids.to(self.device), position_ids=pos.to(self.device),
                         **{self._cache_arg: past if past is not None else _empty_cache()},
                         use_cache=True,
                         logits_to_keep=torch.tensor(keep if keep else [width - 1], dtype=torch.long,
                                                     device=self.device))
        self.stats.prompt_tokens_computed += sum(len(r[0]) for r in rows)
        logits = out.logits
        for b, (toks, ends) in enumerate(rows):
            for i in ends:
                tails = ctx.requests[i].tail_targets
                n_tail = len(tails)
                res = []
                for j, targets in enumerate(tails):
                    p = len(toks) - n_tail + j
                    lp = torch.log_softmax(logits[b, col[p]].float(), dim=-1)
                    res.append(lp[torch.tensor(targets, dtype=torch.long, device=lp.device)].cpu().numpy())
                ctx.results[i] = res
        return [(layer.keys, layer.values) for layer in _returned_cache(out).layers]

    # -- generation -------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        import torch
        seqs = [flatten(tuple(tuple(s) for s in p)) for p in prompts]
        for i, s in enumerate(seqs):
            if not s:
                raise ValueError(f"prompt {i} is empty; start prompts with backend.bos()")
            self.check_length(tuple([tuple(s)]), what=f"prompt {i}", extra=1)
        out: list[str] = [""] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        with self.timed(), torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start: start + self.batch_size]
                texts = self._generate_batch([seqs[i] for i in idx], params)
                for i, t in zip(idx, texts):
                    out[i] = t
        self.stats.prompts += len(seqs)
        self.stats.prompt_tokens_computed += sum(len(s) for s in seqs)
        return out

    def _generate_batch(self, seqs: list[list[int]], params: GenerationParams) -> list[str]:
        import torch
        from transformers import DynamicCache
        n, width = len(seqs), max(len(s) for s in seqs)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for b, s in enumerate(seqs):  # left padding: every row's next token is at the same column
            ids[b, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[b, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        max_new = min(params.max_new_tokens, max(0, self.max_context - width)) if self.max_context \
            else params.max_new_tokens
        gens: list[list[int]] = [[] for _ in range(n)]
        done = [max_new <= 0] * n
        sampling = params.temperature > 0
        gens_rng = None
        if sampling and params.seed is not None:
            # One generator per row, all seeded alike: a prompt's sample does not depend on the batch.
            gens_rng = [torch.Generator(device="cpu").manual_seed(int(params.seed)) for _ in range(n)]
        eos = self._eos_ids()
        dev = self.device
        cache = DynamicCache(config=self.model.config)
        res = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         **{self._cache_arg: cache}, use_cache=True, logits_to_keep=1)
        texts = [""] * n
        for _step in range(max_new):
            logits = res.logits[:, -1, :].float().cpu()
            nxt = torch.empty(n, dtype=torch.long)
            for b in range(n):
                nxt[b] = self._pick(logits[b], params, gens_rng[b] if gens_rng else None) if not done[b] \
                    else self.pad_id
            for b in range(n):
                if done[b]:
                    continue
                tok = int(nxt[b])
                gens[b].append(tok)
                self.stats.generated_tokens += 1
                if tok in eos:
                    done[b] = True
                elif params.stop:
                    text = self.tokenizer.decode(gens[b], skip_special_tokens=True)
                    if any(s in text for s in params.stop):
                        done[b] = True
            if all(done):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            pos = pos[:, -1:] + 1
            res = self.model(input_ids=nxt[:, None].to(dev), attention_mask=mask.to(dev),
                             position_ids=pos.to(dev), **{self._cache_arg: _returned_cache(res)},
                             use_cache=True)
        for b in range(n):
            toks = [t for t in gens[b] if t not in eos]
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            cut = min((text.find(s) for s in params.stop if s and s in text), default=-1)
            texts[b] = text[:cut] if cut >= 0 else text
        return texts

    def _eos_ids(self) -> set[int]:
        ids = set()
        for src in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, (list, tuple)):
                ids.update(int(x) for x in src)
        return ids

    @staticmethod
    def _pick(logits: Any, params: GenerationParams, gen: Any) -> int:
        import torch
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sp, si = torch.sort(probs, descending=True)
            keep = (sp.cumsum(0) - sp) < params.top_p  # always keeps the most likely token
            sp = sp * keep
            probs = torch.zeros_like(probs).scatter_(0, si, sp)
            probs = probs / probs.sum()
        return int(torch.multinomial(probs, 1, generator=gen))


# -- small helpers ---------------------------------------------------------------------------------
@dataclass
class _Ctx:
    requests: list[_Request]
    results: list[Any]


class _ChainRow(NamedTuple):
    """One row of a batched forward pass in :meth:`HFBackend._run_chains`."""

    tokens: list[int]
    """The chain's segments' tokens, concatenated."""
    ends: list[int]
    """Indices of the requests whose prompt ends at the row's last token."""
    chain: list["_Node"]
    """The trie nodes the row computes, in order."""


class _ChainEnd(_Node):
    """The last node of a computed chain, standing for the whole chain on the DFS stack."""

    def __init__(self, node: _Node, chain_len: int) -> None:
        super().__init__(node.key, tuple(range(chain_len)), node.children, node.ends)


def _cat(ts: list[Any]) -> Any:
    import torch
    return torch.cat(ts, dim=-2)


def _cache_keyword(model: Any) -> str:
    """The forward's name for the KV cache: transformers 5.25 renamed ``past_key_values`` to
    ``cache`` (the old name still works but warns on every call, and goes in 5.40); the versions
    before know only ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out: Any) -> Any:
    """The KV cache a forward returned, under either version's field name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _empty_cache() -> Any:
    from transformers import DynamicCache
    return DynamicCache()
