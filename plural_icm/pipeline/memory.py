"""The prefix cache's budget, sized to the model, the machine and the searches it serves.

The ``hf`` backend keeps the key/value states of the prompt segments it computed in an LRU of
``model.prefix_cache_gb`` GiB (4 by default). Every segment it computes is stored, including the
many that are never asked for again (a rejected proposal's, a repair option's), so the LRU fills
whatever budget it has: a budget is what the process holds. Before the searches start the budget
becomes the smallest of

* ``model.prefix_cache_gb`` (the cap; ``null`` keeps the cache unbounded and nothing is sized),
* :data:`AVAILABLE_FRACTION` of the memory available at that moment (free GPU memory on a GPU,
  available RAM on CPU),
* what the searches reuse: :data:`EVALUATIONS_KEPT` full evaluations of each search running at
  once (the positions of one evaluation of P(D) under its context order, ``search.cost``: every
  call of a search shares that trie's prefixes, and the searches of a job run at once in shared
  batches), never more than the positions they compute at all, times the key/value bytes of one
  position of this model,

and one line states it; when the searches end another states what the cache held, evicted and
computed, and the cache is emptied (what follows, the cell's inference, prompts other text).
An evicted prefix is recomputed, so the budget never changes a result, only compute
(docs/benchmark.md, "Memory of the transformers backend's prefix cache", has the measurements
behind :data:`EVALUATIONS_KEPT`).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from plural_icm.search.cost import full_evaluation_tokens, search_tokens

log = logging.getLogger(__name__)

#: Share of the memory available when the searches start that the prefix cache may take.
AVAILABLE_FRACTION = 0.25
#: Full evaluations' worth of positions kept per search running at once (module doc; measured in
#: docs/benchmark.md: the reuse distances of the demo's searches).
EVALUATIONS_KEPT = 6
GIB = 2 ** 30


def kv_bytes_per_position(backend: Any) -> int | None:
    """2 (K and V) x layers x KV heads x head dim x bytes per value of the backend's model
    (None when the backend has no transformers model)."""
    model = getattr(backend, "model", None)
    if model is None or not hasattr(model, "config"):
        return None
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") \
        else model.config
    heads = int(getattr(cfg, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(cfg, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(cfg, "head_dim", 0) or (int(cfg.hidden_size) // heads if heads else 0))
    layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
    itemsize = int(getattr(getattr(backend, "torch_dtype", None), "itemsize", 4) or 4)
    n = 2 * layers * kv_heads * head_dim * itemsize
    return n or None


def available_bytes(device: str) -> tuple[int | None, str]:
    """(bytes available now, where): free memory of the current GPU, else available RAM."""
    if str(device).startswith("cuda"):
        try:
            import torch

            free, _ = torch.cuda.mem_get_info()
            return int(free), "free GPU memory"
        except Exception:  # no CUDA after all: fall through to RAM
            pass
    try:
        import psutil

        return int(psutil.virtual_memory().available), "available RAM"
    except Exception:
        return None, "available memory (unknown)"


def tokens_per_claim(tasks: Sequence[Any], tokenizer: Any = None, sample: int = 32) -> int:
    """Mean tokens of one rendered claim of the searches (a sample; chars / 4 without a
    tokenizer)."""
    claims = [(t.template, c) for t in tasks[:4] for c in t.claims][:sample]
    if not claims:
        return 1
    texts = [tpl.format(question=c.question, claim=c.claim) + "\n\n" for tpl, c in claims]
    if tokenizer is not None:
        try:
            return max(1, round(sum(len(tokenizer.encode(x, add_special_tokens=False)) for x in texts)
                                / len(texts)))
        except Exception:
            pass
    return max(1, round(sum(len(x) for x in texts) / len(texts) / 4))


def search_working_set(tasks: Sequence[Any], tokens: int) -> int:
    """Positions the searches reuse (module doc): :data:`EVALUATIONS_KEPT` full evaluations of
    each, under its own context order, and never more than the search computes at all."""
    return int(sum(min(EVALUATIONS_KEPT * full_evaluation_tokens(len(t.claims), tokens, t.params.cost_mode),
                       search_tokens(len(t.claims), tokens, int(t.params.max_iters), t.params.cost_mode))
                   for t in tasks))


def size_prefix_cache(backend: Any, tasks: Sequence[Any]) -> str | None:
    """Set the backend's prefix-cache budget for ``tasks`` (module doc); returns the line that
    states it (None: the backend has no sized prefix cache, or ``prefix_cache_gb`` is null)."""
    cache = getattr(backend, "kv_cache", None)
    cap_gb = getattr(backend, "prefix_cache_gb", None)
    per_pos = kv_bytes_per_position(backend)
    if cache is None or cap_gb is None or not getattr(backend, "prefix_cache", True) or not per_pos:
        return None
    tokens = tokens_per_claim(tasks, getattr(backend, "tokenizer", None))
    positions = search_working_set(tasks, tokens)
    orders = "/".join(sorted({str(getattr(t.params, "context_order", t.params.cost_mode)) for t in tasks}))
    avail, where = available_bytes(getattr(backend, "device", "cpu"))
    limits = {f"model.prefix_cache_gb={cap_gb:g}": int(cap_gb * GIB),
              f"what {len(tasks)} search(es) at once reuse ({EVALUATIONS_KEPT:g} full evaluations "
              f"of each in the {orders} order, {tokens} tokens per claim: {positions:,} positions x "
              f"{per_pos / 1024:.0f} KiB)": positions * per_pos}
    if avail:
        limits[f"{AVAILABLE_FRACTION:.0%} of {avail / GIB:.1f} GiB {where}"] = int(AVAILABLE_FRACTION * avail)
    why, budget = min(limits.items(), key=lambda kv: kv[1])
    cache.max_bytes = budget
    if hasattr(cache, "sized_by"):
        # evictions are expected when what the searches reuse binds (a dead segment makes room);
        # when the cap or the machine binds, the first one stays a warning
        cache.sized_by = f"{budget / GIB:.2f} GiB = {why.split(' (')[0]}" if why.startswith("what ") else None
    others = "; ".join(f"{k}: {v / GIB:.2f} GiB" for k, v in limits.items() if k != why)
    return f"prefix cache budget {budget / GIB:.2f} GiB = {why} (the least of it and {others})"


def release_prefix_cache(backend: Any) -> str | None:
    """Empty the backend's prefix cache after the searches; returns the line that states what it
    held, evicted and computed (None: the backend has no prefix cache)."""
    cache = getattr(backend, "kv_cache", None)
    if cache is None or not hasattr(cache, "stats"):
        return None
    st = cache.stats()
    budget = "unbounded" if st["max_bytes"] is None else f"{st['max_bytes'] / GIB:.2f} GiB"
    computed = getattr(getattr(backend, "stats", None), "prompt_tokens_computed", None)
    line = (f"prefix cache after the searches: peak {st['peak_bytes'] / GIB:.2f} GiB of {budget} "
            f"({st['peak_tokens']:,} positions), {st['evictions']:,} segments evicted, "
            f"{st.get('recomputed_tokens', 0):,} positions recomputed after eviction"
            + (f" of {computed:,} computed" if computed is not None else "")
            + "; emptied for what follows")
    cache.clear()
    return line


__all__ = ["AVAILABLE_FRACTION", "EVALUATIONS_KEPT", "kv_bytes_per_position", "available_bytes",
           "tokens_per_claim", "search_working_set", "size_prefix_cache", "release_prefix_cache"]
