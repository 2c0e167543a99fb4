"""Benchmark: our ICM engine against one faithful to the published cost model.

    python -m plural_icm.bench.search                      # token counts n=32..256 + wall time n=32,64
    python -m plural_icm.bench.search --tokens-only --sizes 32 64 128 256
    python -m plural_icm.bench.search --wall-only --sizes 32

Engines (both run the same algorithm, plural_icm.search.engine):
  fast       recursive-halving + tail layout, backend prefix cache, score memo
  reference  the published cost model: every other claim in one fixed order, every candidate
             labelling fully rescored, no prefix reuse (selectable in runs: icm.engine=reference)

For each engine and claim count n it measures (a) one full evaluation of P(D) from a cold cache
and (b) the mean cost of a label-changing proposal (predict, repair, rescore) over at least
``--proposals`` proposals of a real search started from a random consistent labelling with a few
claims unlabelled (see :func:`start_labellings`), and prints
prompt tokens computed, wall time, and the reference/fast ratios.

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
from plural_icm.search.layout import FixedLayout, TreeTailLayout
from plural_icm.search.prompts import ClaimRenderer

TEMPLATE = "Question: {question}\nClaim: {claim}\nI think this claim is"
LABELS = (" True", " False")
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


def engine_params(engine: str, max_iters: int) -> SearchParams:
    p = SearchParams(alpha=50, num_seed=8, max_iters=max_iters, patience=10**9, schedule="log",
                     checkpoint_every=10**9)
    return replace(p, layout="fixed", memo=False) if engine == "reference" else p


def make_backend(kind: str, engine: str, tiny_dir: Path | None):
    from plural_icm.backends.hf import HFBackend

    spec = str(tiny_dir) if kind == "tiny" else "packaged:smollm2"
    from plural_icm.backends.loading import default_cache_dir

    return HFBackend(spec, cache_dir=default_cache_dir(), dtype="float32",
                     prefix_cache=(engine == "fast"), max_context=32768 if kind == "tiny" else None)


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


def measure(kind: str, engine: str, n: int, proposals: int, tiny_dir: Path | None) -> dict:
    backend = make_backend(kind, engine, tiny_dir)
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
        return (FixedLayout(order=items, canonical=search.published_order()) if engine == "reference"
                else TreeTailLayout(slots=items, max_tail=params.max_tail))

    # (a) one full evaluation of P(D) of the complete labelling, cold cache
    s0 = backend.stats.snapshot()
    t0 = time.perf_counter()
    drive(search._score(complete, layout_of(complete)), backend, LABELS)
    full = backend.stats.since(s0)
    full_wall = time.perf_counter() - t0
    # a proposal of the reference engine at n >= 64 on CPU takes the better part of an hour: say
    # what was measured as it happens, so a long run is visibly alive and a cut-short one not lost
    print(f"  {kind} n={n} {engine}: full evaluation {full.prompt_tokens_computed:,} tok in "
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
            print(f"  {kind} n={n} {engine}: proposal {len(costs)}/{proposals}: "
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
    backend.close()
    return {"kind": kind, "engine": engine, "n": n, "L": L,
            "full_tokens": full.prompt_tokens_computed, "full_cached": full.prompt_tokens_cached,
            "full_wall_s": full_wall,
            "proposal_tokens": float(np.mean([c[0] for c in costs])),
            "proposal_cached": float(np.mean([c[1] for c in costs])),
            "proposal_wall_s": float(np.mean([c[2] for c in costs])), "proposals": len(costs)}


class _Enough(Exception):
    pass


def tiny_model_with_real_tokenizer(folder: Path) -> Path:
    """A tiny random Llama that uses the packaged model's tokenizer (token counts are real)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from plural_icm.backends.loading import default_cache_dir, resolve_model

    real = resolve_model("packaged:smollm2", default_cache_dir())
    tok = AutoTokenizer.from_pretrained(real.path_or_id)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def table(rows: list[dict]) -> str:
    out = ["| model | n | L | engine | full eval tokens | full eval wall s | proposal tokens | proposal wall s | proposals |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['kind']} | {r['n']} | {r['L']:.0f} | {r['engine']} | {r['full_tokens']:,} | "
                   f"{r['full_wall_s']:.1f} | {r['proposal_tokens']:,.0f} | {r['proposal_wall_s']:.2f} | {r['proposals']} |")
    out += ["", "| model | n | full eval tokens ratio | full eval wall ratio | proposal tokens ratio | proposal wall ratio |",
            "|---|---|---|---|---|---|"]
    by = {(r["kind"], r["n"], r["engine"]): r for r in rows}
    for (kind, n, eng), r in sorted(by.items()):
        if eng != "fast" or (kind, n, "reference") not in by:
            continue
        ref = by[(kind, n, "reference")]
        out.append(f"| {kind} | {n} | {ref['full_tokens'] / max(1, r['full_tokens']):.1f}x | "
                   f"{ref['full_wall_s'] / r['full_wall_s']:.1f}x | "
                   f"{ref['proposal_tokens'] / max(1, r['proposal_tokens']):.1f}x | "
                   f"{ref['proposal_wall_s'] / r['proposal_wall_s']:.1f}x |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--wall-sizes", type=int, nargs="*", default=[32, 64])
    ap.add_argument("--proposals", type=int, default=3)
    ap.add_argument("--tokens-only", action="store_true")
    ap.add_argument("--wall-only", action="store_true")
    args = ap.parse_args(argv)
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; claims: synthetic survey items (2 options per question), "
          f"template {TEMPLATE!r}; alpha 50, log schedule, {args.proposals} label-changing proposals "
          "per engine (a search from a random consistent labelling with proposals+2 claims open)", flush=True)
    rows = []
    if not args.wall_only:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = tiny_model_with_real_tokenizer(Path(tmp) / "tiny")
            for n in args.sizes or [32, 64, 128, 256]:
                for engine in ("fast", "reference"):
                    r = measure("tiny", engine, n, args.proposals, tiny)
                    rows.append(r)
                    print(f"  tiny n={n} {engine}: full {r['full_tokens']:,} tok, proposal "
                          f"{r['proposal_tokens']:,.0f} tok", flush=True)
    if not args.tokens_only:
        for n in (args.sizes if args.wall_only and args.sizes else args.wall_sizes):
            for engine in ("fast", "reference"):
                r = measure("smollm2", engine, n, args.proposals, None)
                rows.append(r)
                print(f"  smollm2 n={n} {engine}: full {r['full_wall_s']:.1f} s, proposal "
                      f"{r['proposal_wall_s']:.2f} s", flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
