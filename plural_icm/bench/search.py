"""Benchmark: our ICM engine against one faithful to the published cost model.

    python -m plural_icm.bench.search                      # token counts n=32..256 + wall time n=32,64
    python -m plural_icm.bench.search --tokens-only --sizes 32 64 128 256
    python -m plural_icm.bench.search --wall-only --sizes 32
    python -m plural_icm.bench.search --backend vllm --tokens-only --sizes 32 64   # vLLM's own counters
    python -m plural_icm.bench.search --memory --sizes 64 128 256 512   # peak prefix-cache size
    python -m plural_icm.bench.search --memory --memory-model llama8b-width --prefix-cache-gb 1

Engines (all run the same algorithm, plural_icm.search.engine):
  published  the fast engine in the published order (icm.context_order=published, the presets'):
             one global order, backend prefix cache, score memo; the published scores exactly
  fast       the fast engine in the halving_tail order (icm.context_order=halving_tail): recursive
             halving + tail, prefix cache, memo; fewer tokens, a different order (so other scores)
  reference  the published cost model: the published order, every candidate labelling fully
             rescored, no prefix reuse (selectable in runs: icm.engine=reference)

For each engine and claim count n it measures (a) one full evaluation of P(D) from a cold cache
and (b) the mean cost of a label-changing proposal (predict, repair, rescore) over at least
``--proposals`` proposals of a real search started from a random consistent labelling with a few
claims unlabelled (see :func:`start_labellings`), and prints
prompt tokens computed, wall time, and the reference/engine ratios.

Token counts do not depend on the weights, so they use a tiny random model with the packaged
model's tokenizer (fast even at n=256); wall times use the packaged model itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.search.engine import ICMSearch, SearchParams, drive, run_searches
from plural_icm.search.context_order import FixedLayout, TreeTailLayout
from plural_icm.search.prompts import ClaimRenderer

TEMPLATE = "Question: {question}\nClaim: {claim}\nI think this claim is"
LABELS = (" True", " False")
# vLLM on CPU: a fixed KV cache (the backend's default is 1 GiB); --vllm-kv-cache-gib lowers it to
# put the prefix cache under eviction pressure.
VLLM_KV_CACHE_GIB = 1.0
# vLLM engine settings of the run (``model.vllm``): --vllm-block-size sets the prefix cache's block
VLLM_ENGINE: dict = {}
TOPICS = ["public transit", "minimum wage", "gun laws", "immigration", "climate policy", "school prayer",
          "nuclear power", "free trade", "police funding", "space exploration", "social media rules",
          "remote work", "rent control", "farm subsidies", "vaccination", "online privacy"]


def synthetic_claims(n: int, seed: int = 0) -> list[Claim]:
    """n claims, two options per question, about 45 tokens per rendered claim (like OpinionQA)."""
    rng = random.Random(seed)
    claims = []
    for q in range(n // 2):
        topic = TOPICS[q % len(TOPICS)]
        question = f"Survey item {q}: thinking about {topic}, should the government do more or less than it does today?"
        for o, opt in enumerate(["Do more", "Do less"]):
            claims.append(Claim(item_id=f"b{q}o{o}", persona_id="p", group_id=f"q{q}",
                                question_id=f"q{q}", option_key=str(o), question=question,
                                claim=f"The majority of respondents would answer: '{opt}'",
                                gold=rng.random() < 0.5))
    return claims


ENGINES = ("published", "fast", "reference")


def engine_params(engine: str, max_iters: int) -> SearchParams:
    p = SearchParams(alpha=50, num_seed=8, max_iters=max_iters, patience=10**9, schedule="log",
                     checkpoint_every=10**9)
    if engine == "reference":
        return replace(p, context_order="published", memo=False)
    return replace(p, context_order="published" if engine == "published" else "halving_tail")


def make_backend(kind: str, engine: str, model_dir: Path | None, backend: str = "hf",
                 dtype: str = "float32", prefix_cache_gb: float | None = 4.0):
    """The model under test: ``hf`` manages its own segment cache (off for the reference engine;
    ``prefix_cache_gb`` is its budget, None unbounded); ``vllm`` keeps its automatic prefix cache
    on for both engines, as the published code's vLLM server would, so its figures are what each
    engine costs on the engine users run."""
    from plural_icm.backends.loading import default_cache_dir

    spec = str(model_dir) if model_dir is not None else "packaged:smollm2"
    max_context = 32768 if model_dir is not None else None
    if backend == "vllm":
        from plural_icm.backends.vllm_backend import VLLMBackend

        return VLLMBackend(spec, cache_dir=default_cache_dir(), dtype=dtype,
                           max_context=max_context or 8192, cpu_kv_cache_gib=VLLM_KV_CACHE_GIB,
                           engine=dict(VLLM_ENGINE))
    from plural_icm.backends.hf import HFBackend

    return HFBackend(spec, cache_dir=default_cache_dir(), dtype=dtype,
                     prefix_cache=(engine != "reference"), max_context=max_context,
                     prefix_cache_gb=prefix_cache_gb)


def start_labellings(claims, n_open: int, rng: random.Random) -> tuple[dict[str, bool], dict[str, bool]]:
    """A random consistent complete labelling, and the search's start state: the same labels with
    one claim of ``n_open`` questions left unlabelled.

    A real model reads a claim's label off its question's other option, so it agrees with every
    leave-one-out label of a consistent labelling and a search from one proposes nothing. The open
    claims are what a search spends its proposals on (the search prefers unlabelled claims whose
    question holds a label): predict, add with repair if inconsistent, rescore, as in a real run.
    """
    groups: dict[str, list[str]] = {}
    for c in claims:
        groups.setdefault(c.group_id, []).append(c.item_id)
    complete = {}
    for ms in groups.values():
        win = rng.choice(ms)
        complete.update({m: m == win for m in ms})
    start = dict(complete)
    for g in rng.sample(sorted(groups), min(n_open, len(groups))):
        del start[rng.choice(groups[g])]
    return complete, start


def measure(kind: str, engine: str, n: int, proposals: int, model_dir: Path | None,
            backend_name: str = "hf", dtype: str = "float32",
            prefix_cache_gb: float | None = 4.0) -> dict:
    """Cost of one full evaluation and of ``proposals`` label-changing proposals (see module doc).

    ``model_dir``: a model folder (the tiny model, the GPU check's random model), or None for the
    packaged model; ``kind`` only names it in the output. ``prefix_cache_gb``: the hf backend's
    segment-cache budget (None: unbounded), reported with its peak and evictions.
    """
    backend = make_backend(kind, engine, model_dir, backend_name, dtype, prefix_cache_gb)
    claims = synthetic_claims(n)
    renderer = ClaimRenderer(backend, TEMPLATE, LABELS)
    params = engine_params(engine, max_iters=200 * n)
    search = ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, renderer, params, seed=1,
                       max_context=backend.max_context)
    complete, start = start_labellings(claims, proposals + 2, random.Random(n))
    order = [c.item_id for c in claims]

    def layout_of(labels):
        items = [j for j in order if j in labels]
        # the published order: by uid, grouped by consistency group, new claims at their place
        return (FixedLayout(order=items, canonical=search.published_order())
                if params.context_order == "published"
                else TreeTailLayout(slots=items, max_tail=params.max_tail, seed=1).compacted())

    # (a) one full evaluation of P(D) of the complete labelling, cold cache
    s0 = backend.stats.snapshot()
    t0 = time.perf_counter()
    drive(search._score(complete, layout_of(complete)), backend, LABELS)
    full = backend.stats.since(s0)
    full_wall = time.perf_counter() - t0
    # a proposal of the reference engine at n >= 64 on CPU takes the better part of an hour: say
    # what was measured as it happens, so a long run is visibly alive and a cut-short one not lost
    print(f"  {kind} {backend_name} n={n} {engine}: full evaluation {full.prompt_tokens_computed:,} tok in "
          f"{full_wall:.1f} s; scoring the start state", flush=True)
    # (b) a real search from the start state (its scores are setup, not measured); the cost of
    # each label-changing proposal
    layout = layout_of(start)
    scores = drive(search._score(start, layout), backend, LABELS)
    state = {"seed": 1, "iteration": 0, "accepted": 0, "since_accept": 0, "labels": start,
             "layout": layout.to_dict(), "scores": {k: list(v) for k, v in scores.items()},
             "rng": np.random.default_rng(7).bit_generator.state, "trajectory": [], "wall_time_s": 0.0}
    costs = []
    mark = {"stats": backend.stats.snapshot(), "t": time.perf_counter(), "iterations": 0}

    def on_iteration(row):
        mark["iterations"] += 1
        if row["proposed_change"]:
            d = backend.stats.since(mark["stats"])
            costs.append((d.prompt_tokens_computed, d.prompt_tokens_cached, time.perf_counter() - mark["t"]))
            print(f"  {kind} {backend_name} n={n} {engine}: proposal {len(costs)}/{proposals}: "
                  f"{costs[-1][0]:,} tok in {costs[-1][2]:.1f} s", flush=True)
        mark["stats"], mark["t"] = backend.stats.snapshot(), time.perf_counter()
        if len(costs) >= proposals:
            raise _Enough()

    run = ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, renderer, params, seed=1,
                    max_context=backend.max_context, resume_state=state, on_iteration=on_iteration)
    try:
        run_searches([run], backend, LABELS)
    except _Enough:
        pass
    if len(costs) < proposals:
        print(f"  warning: {kind} n={n} {engine}: only {len(costs)} label-changing proposals in "
              f"{mark['iterations']} iterations", flush=True)
    L = renderer.mean_block_tokens(claims)
    cache = getattr(backend, "kv_cache", None)
    memory = {} if cache is None or not backend.prefix_cache else {
        "cache_peak_tokens": cache.peak_tokens, "cache_peak_bytes": cache.peak_bytes,
        "cache_evictions": cache.evictions, "cache_budget_gb": prefix_cache_gb,
        "kv_bytes_per_position": kv_bytes_per_position(backend.model.config, dtype),
        # the process's own high-water mark (monotonic: with several sizes in one run, each row's
        # figure covers it and every smaller size before it)
        "process_peak_rss_bytes": peak_rss_bytes()}
    block_size = getattr(backend, "block_size", None)  # vLLM's prefix-cache granularity
    backend.close()
    return {"kind": kind, "backend": backend_name, "engine": engine, "n": n, "L": L, **memory,
            "block_size": block_size,
            "full_tokens": full.prompt_tokens_computed, "full_cached": full.prompt_tokens_cached,
            "full_wall_s": full_wall,
            "proposal_tokens": float(np.mean([c[0] for c in costs])),
            "proposal_cached": float(np.mean([c[1] for c in costs])),
            "proposal_wall_s": float(np.mean([c[2] for c in costs])), "proposals": len(costs)}


class _Enough(Exception):
    pass


def _budget(text: str) -> float | None:
    """``--prefix-cache-gb``: GiB, or none/null for no bound."""
    return None if text.lower() in ("none", "null") else float(text)


#: Tiny random Llamas with the packaged model's tokenizer. ``narrow``: 1,024 key/value bytes per
#: position in fp32 (fast, for token counts); ``llama8b-width``: two layers with Llama-3.1-8B's
#: per-layer key/value width (8 KV heads x head dim 128), so the bytes a segment cache holds per
#: layer are a real model's.
TINY_SHAPES = {
    # head_dim 64: vLLM's CPU attention kernels take no smaller head (16 fails at start-up)
    "narrow": dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
                   num_key_value_heads=1),
    "llama8b-width": dict(hidden_size=1024, intermediate_size=1024, num_hidden_layers=2,
                          num_attention_heads=8, num_key_value_heads=8, head_dim=128),
}


def kv_bytes_per_position(config, dtype: str = "float32") -> int:
    """Key/value bytes one cached position takes: 2 x layers x KV heads x head dim x value bytes."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    width = {"float32": 4, "float16": 2, "bfloat16": 2}.get(dtype, 4)
    return 2 * text.num_hidden_layers * heads * head_dim * width


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports ``ru_maxrss`` in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tiny_model_with_real_tokenizer(folder: Path, shape: str = "narrow") -> Path:
    """A tiny random Llama (:data:`TINY_SHAPES`) that uses the packaged model's tokenizer (token
    counts are real)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from plural_icm.backends.loading import default_cache_dir, resolve_model

    real = resolve_model("packaged:smollm2", default_cache_dir())
    tok = AutoTokenizer.from_pretrained(real.path_or_id)
    cfg = LlamaConfig(vocab_size=len(tok), **TINY_SHAPES[shape], max_position_embeddings=32768,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def hit_rate(computed: float, cached: float) -> float:
    """Share of prompt tokens served from the prefix cache."""
    return cached / (computed + cached) if computed + cached else 0.0


#: Key/value bytes per token, 2 (K and V) x layers x KV heads x head dim x 2 bytes (bf16).
PROJECTED_ARCHS = {"Llama-3.1-8B": 2 * 32 * 8 * 128 * 2, "Llama-3.1-70B": 2 * 80 * 8 * 128 * 2}


def memory_table(rows: list[dict]) -> str:
    """Peak segment-cache size against n, under the row's budget; projected to real architectures
    by cached positions (the positions cached do not depend on the model, only the bytes per
    position do). A projection is of an unbounded cache only when the row's cache never evicted."""
    names = list(PROJECTED_ARCHS)
    out = ["| model | n | L | budget GiB | KV bytes/position | peak cached positions | peak cache MiB | "
           "evictions | process peak RSS MiB | "
           + " | ".join(f"{a} projected GiB" for a in names) + " | proposal positions computed |",
           "|---|---|---|---|---|---|---|---|---|" + "---|" * len(names) + "---|"]
    for r in rows:
        if "cache_peak_tokens" not in r:
            continue
        proj = " | ".join("-" if r["cache_evictions"] else
                          f"{r['cache_peak_tokens'] * PROJECTED_ARCHS[a] / 2**30:.1f}" for a in names)
        budget = "none" if r["cache_budget_gb"] is None else f"{r['cache_budget_gb']:g}"
        out.append(f"| {r['kind']} | {r['n']} | {r['L']:.0f} | {budget} | {r['kv_bytes_per_position']:,} | "
                   f"{r['cache_peak_tokens']:,} | {r['cache_peak_bytes'] / 2**20:,.1f} | "
                   f"{r['cache_evictions']:,} | {r['process_peak_rss_bytes'] / 2**20:,.0f} | {proj} | "
                   f"{r['proposal_tokens']:,.0f} |")
    return "\n".join(out)


def table(rows: list[dict]) -> str:
    out = ["| model | backend | n | L | engine | full eval tokens | full eval hit rate | full eval wall s | "
           "proposal tokens | proposal hit rate | proposal wall s | proposals |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['kind']} | {r['backend']} | {r['n']} | {r['L']:.0f} | {r['engine']} | "
                   f"{r['full_tokens']:,} | {hit_rate(r['full_tokens'], r['full_cached']):.1%} | "
                   f"{r['full_wall_s']:.1f} | {r['proposal_tokens']:,.0f} | "
                   f"{hit_rate(r['proposal_tokens'], r['proposal_cached']):.1%} | "
                   f"{r['proposal_wall_s']:.2f} | {r['proposals']} |")
    out += ["", "reference / engine (how many times fewer tokens and less time the engine takes):", "",
            "| model | backend | n | engine | full eval tokens ratio | full eval wall ratio | "
            "proposal tokens ratio | proposal wall ratio |",
            "|---|---|---|---|---|---|---|---|"]
    by = {(r["kind"], r["backend"], r["n"], r["engine"]): r for r in rows}
    for (kind, be, n, eng), r in sorted(by.items()):
        if eng == "reference" or (kind, be, n, "reference") not in by:
            continue
        ref = by[(kind, be, n, "reference")]
        out.append(f"| {kind} | {be} | {n} | {eng} | {ref['full_tokens'] / max(1, r['full_tokens']):.1f}x | "
                   f"{ref['full_wall_s'] / r['full_wall_s']:.1f}x | "
                   f"{ref['proposal_tokens'] / max(1, r['proposal_tokens']):.1f}x | "
                   f"{ref['proposal_wall_s'] / r['proposal_wall_s']:.1f}x |")
    pairs = [(r, by[(r["kind"], "hf", r["n"], r["engine"])]) for r in rows
             if r["backend"] == "vllm" and (r["kind"], "hf", r["n"], r["engine"]) in by]
    if pairs:
        out += ["", "Tokens the vLLM engine computes (its own counters: prompt tokens minus cached) "
                "over those the transformers backend computes for the same search steps:", "",
                "| model | n | engine | full eval vllm/hf | proposal vllm/hf |", "|---|---|---|---|---|"]
        for v, h in pairs:
            out.append(f"| {v['kind']} | {v['n']} | {v['engine']} | "
                       f"{v['full_tokens'] / max(1, h['full_tokens']):.2f}x | "
                       f"{v['proposal_tokens'] / max(1, h['proposal_tokens']):.2f}x |")
    return "\n".join(out)


def main(argv=None) -> None:
    global VLLM_KV_CACHE_GIB
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--wall-sizes", type=int, nargs="*", default=[32, 64])
    ap.add_argument("--proposals", type=int, default=3)
    ap.add_argument("--tokens-only", action="store_true")
    ap.add_argument("--wall-only", action="store_true")
    ap.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                    help="vllm: the same steps through vLLM (its prefix cache, its token counters), "
                         "beside the transformers backend for the token comparison")
    ap.add_argument("--engines", nargs="*", choices=list(ENGINES), default=list(ENGINES),
                    help="published: ours in the published order; fast: ours in halving_tail; "
                         "reference: the published cost model")
    ap.add_argument("--vllm-kv-cache-gib", type=float, default=VLLM_KV_CACHE_GIB,
                    help="vLLM's KV cache on CPU; smaller values put the prefix cache under eviction")
    ap.add_argument("--vllm-block-size", type=int, default=None,
                    help="vLLM's KV block size (model.vllm.block_size; ours on CPU 32, vLLM's on GPU 16): the "
                         "granularity at which its prefix cache reuses a shared prefix")
    ap.add_argument("--no-hf-baseline", action="store_true",
                    help="with --backend vllm: skip the transformers rows of the token comparison")
    ap.add_argument("--memory", action="store_true",
                    help="peak prefix-cache size of the fast engine against n, projected to "
                         "Llama-3.1-8B/70B; sizes default to 64 128 256 512")
    ap.add_argument("--memory-model", choices=[*TINY_SHAPES, "smollm2"], default="narrow",
                    help="with --memory: a tiny random model (narrow, or two layers of "
                         "Llama-3.1-8B's key/value width) or the packaged SmolLM2-135M")
    ap.add_argument("--prefix-cache-gb", type=_budget, default=4.0,
                    help="the hf backend's segment-cache budget in GiB (its default 4), or 'none' "
                         "for an unbounded cache (the fast engine's exact token counts)")
    args = ap.parse_args(argv)
    VLLM_KV_CACHE_GIB = args.vllm_kv_cache_gib
    if args.vllm_block_size:
        VLLM_ENGINE["block_size"] = args.vllm_block_size

    import torch

    backends = ["hf"] if args.backend == "hf" else ["vllm"] if args.no_hf_baseline else ["hf", "vllm"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; backends {backends}; claims: synthetic survey items "
          f"(2 options per question), template {TEMPLATE!r}; alpha 50, log schedule, {args.proposals} "
          "label-changing proposals per engine (a search from a random consistent labelling with "
          "proposals+2 claims open)", flush=True)
    rows = []
    if args.memory:
        kind = "smollm2" if args.memory_model == "smollm2" else f"tiny-{args.memory_model}"
        with tempfile.TemporaryDirectory() as tmp:
            folder = (None if args.memory_model == "smollm2" else
                      tiny_model_with_real_tokenizer(Path(tmp) / "tiny", args.memory_model))
            for n in args.sizes or [64, 128, 256, 512]:
                t0 = time.perf_counter()
                r = measure(kind, "fast", n, args.proposals, folder,
                            prefix_cache_gb=args.prefix_cache_gb)
                rows.append(r)
                print(f"  {kind} n={n}: peak cache {r['cache_peak_tokens']:,} positions "
                      f"({r['cache_peak_bytes'] / 2**20:,.1f} MiB, {r['cache_evictions']:,} "
                      f"evictions), process peak RSS {r['process_peak_rss_bytes'] / 2**20:,.0f} MiB, "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)
        print()
        print(memory_table(rows))
        return
    if not args.wall_only:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = tiny_model_with_real_tokenizer(Path(tmp) / "tiny")
            for n in args.sizes or [32, 64, 128, 256]:
                for be in backends:
                    for engine in args.engines:
                        r = measure("tiny", engine, n, args.proposals, tiny, be,
                                    prefix_cache_gb=args.prefix_cache_gb)
                        rows.append(r)
                        print(f"  tiny {be} n={n} {engine}: full {r['full_tokens']:,} tok "
                              f"(hit rate {hit_rate(r['full_tokens'], r['full_cached']):.1%}), proposal "
                              f"{r['proposal_tokens']:,.0f} tok", flush=True)
    if not args.tokens_only:
        for n in (args.sizes if args.wall_only and args.sizes else args.wall_sizes):
            for engine in args.engines:
                r = measure("smollm2", engine, n, args.proposals, None, args.backend,
                            prefix_cache_gb=args.prefix_cache_gb)
                rows.append(r)
                print(f"  smollm2 {args.backend} n={n} {engine}: full {r['full_wall_s']:.1f} s, proposal "
                      f"{r['proposal_wall_s']:.2f} s", flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
