"""The ICM engine on one GPU, with a real architecture and random weights (no download).

    python -m plural_icm.bench.gpu_check                  # CUDA: Llama-3.1-8B shapes, bf16 + fp32
    python -m plural_icm.bench.gpu_check --cpu-smoke      # CPU: the same steps, scaled-down shapes
    bash scripts/gpu_check.sh                             # the prepared script (logs to $OUT or ./)

It builds a randomly initialised model from ``plural_icm/bench/configs/llama-3.1-8b.json`` (the
published shapes; ``--cpu-smoke`` divides width and depth so the whole check runs in a minute on two
cores) with a byte-level tokenizer trained on the benchmark's claim text, and reports:

1. exactness: every log-probability the cached scorer returns for a search's prompts, against the
   same prompts computed from scratch with the prefix cache off, in fp32 and bf16 (max |difference|;
   bf16 differs by rounding, reported, not asserted);
2. prefill throughput (tokens per second) of full prompts;
3. per-proposal wall time of our engine in the published order (the presets') and in
   ``halving_tail`` against the reference engine at ``--n`` claims (128);
4. the projected wall time of one paper-size search (``--paper-n`` 340 claims, the paper preset's
   iterations) in each order: the measured proposal cost at ``--paper-n`` times the iterations,
   an upper bound since not every iteration changes a label.

Exactness (1.) is checked in both orders.

Random weights give the real cost (shapes, tokens) but not the real decisions; that is why the
proposals are taken from a start state with open claims (see :mod:`plural_icm.bench.search`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from plural_icm.bench.search import (
    ENGINES,
    LABELS,
    TEMPLATE,
    TOPICS,
    measure,
    synthetic_claims,
)
from plural_icm.search.params import CONTEXT_ORDERS

CONFIG = Path(__file__).with_name("configs") / "llama-3.1-8b.json"
PAPER_ITERATIONS = 3000  # conf/icm/paper.yaml max_iters


def claim_words() -> list[str]:
    """Every word of the benchmark's claims and template, for the tokenizer's vocabulary."""
    text = " ".join(f"{c.question} {c.claim}" for c in synthetic_claims(2 * len(TOPICS)))
    text += " " + TEMPLATE + " True False"
    words = []
    for raw in text.replace("\n", " ").split():
        words += [raw, raw.strip(".,:;?'!")]
    return [w for w in words if w]


def architecture(cpu_smoke: bool) -> dict[str, Any]:
    """The shipped config, or (CPU smoke) the same architecture with width and depth cut down."""
    cfg = {k: v for k, v in json.loads(CONFIG.read_text()).items() if not k.startswith("_")}
    if cpu_smoke:
        cfg.update(hidden_size=128, intermediate_size=448, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=32)
    return cfg


def build_model_dir(folder: Path, cfg: dict[str, Any], device: str, seed: int = 0) -> Path:
    """Random weights of ``cfg`` saved (bf16 on CUDA, fp32 on CPU) with a local tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from plural_icm.bench.tokenizer import train_word_tokenizer

    tok = train_word_tokenizer(claim_words())
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")},
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    if len(tok) > config.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens, the architecture {config.vocab_size}")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"model: random LlamaForCausalLM, {n_params / 1e9:.2f} B parameters, "
          f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, built and saved in "
          f"{time.perf_counter() - t0:.0f} s ({folder})", flush=True)
    return folder


def exactness(folder: Path, dtype: str, n: int, order: str = "published") -> dict[str, float]:
    """Max |cached - from scratch| over the prompts of one full evaluation of ``n`` claims in the
    context ``order`` (``published``: the presets' one global order; ``halving_tail``)."""
    from plural_icm.backends.base import flatten
    from plural_icm.backends.hf import HFBackend
    from plural_icm.data.records import ConsistencyRule
    from plural_icm.search.context_order import FixedLayout, TreeTailLayout
    from plural_icm.search.engine import ICMSearch, SearchParams, drive
    from plural_icm.search.prompts import ClaimRenderer

    backend = HFBackend(str(folder), dtype=dtype, prefix_cache=True)
    claims = synthetic_claims(n)
    renderer = ClaimRenderer(backend, TEMPLATE, LABELS)
    search = ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, renderer, SearchParams(alpha=50),
                       seed=0, max_context=backend.max_context)
    labels = {c.item_id: i % 2 == 0 for i, c in enumerate(claims)}
    seen: list[tuple[Any, np.ndarray]] = []

    class Recorder:
        def __getattr__(self, name):
            return getattr(backend, name)

        def label_logprobs(self, prompts, label_strings):
            out = backend.label_logprobs(prompts, label_strings)
            seen.extend(zip(prompts, out))
            return out

    ids = [c.item_id for c in claims]
    layout = (FixedLayout(order=ids, canonical=search.published_order()) if order == "published"
              else TreeTailLayout(slots=ids))
    drive(search._score(labels, layout), Recorder(), LABELS)
    cached = np.array([v for _, v in seen])
    backend.prefix_cache = False
    t0 = time.perf_counter()
    full = backend.label_logprobs([(tuple(flatten(p)),) for p, _ in seen], LABELS)
    wall = time.perf_counter() - t0
    tokens = sum(len(flatten(p)) for p, _ in seen)
    backend.close()
    return {"prompts": len(seen), "max_abs_diff": float(np.abs(cached - full).max()),
            "full_prompt_tokens": tokens, "prefill_tokens_per_s": tokens / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run on the CPU with a scaled-down architecture (the CI smoke test)")
    ap.add_argument("--n", type=int, default=None, help="claims for fast vs reference (128; smoke 16)")
    ap.add_argument("--paper-n", type=int, default=None, help="claims of a paper-size search (340; smoke 24)")
    ap.add_argument("--exact-n", type=int, default=None, help="claims for the exactness check (32; smoke 12)")
    ap.add_argument("--proposals", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=PAPER_ITERATIONS)
    args = ap.parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --cpu-smoke for the CPU smoke test")
        return 2
    device = "cpu" if args.cpu_smoke else "cuda"
    n = args.n or (16 if args.cpu_smoke else 128)
    paper_n = args.paper_n or (24 if args.cpu_smoke else 340)
    exact_n = args.exact_n or (12 if args.cpu_smoke else 32)
    if device == "cuda":
        print(f"device: {torch.cuda.get_device_name(0)}, "
              f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB; torch {torch.__version__}",
              flush=True)
    else:
        print(f"device: CPU ({torch.get_num_threads()} threads), scaled-down architecture; "
              f"torch {torch.__version__}", flush=True)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"device": device, "n": n, "paper_n": paper_n}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model_dir(Path(tmp) / "model", architecture(args.cpu_smoke), device)
        for order in CONTEXT_ORDERS:
            for dtype in ("float32", "bfloat16"):
                r = exactness(folder, dtype, exact_n, order)
                results[f"exact_{order}_{dtype}"] = r
                print(f"exactness {order} {dtype}: {r['prompts']} prompts of a full evaluation "
                      f"(n={exact_n}), max |cached - from scratch| = {r['max_abs_diff']:.2e}; prefill "
                      f"{r['prefill_tokens_per_s']:,.0f} tokens/s", flush=True)
        dtype = "bfloat16" if device == "cuda" else "float32"
        for engine in ENGINES:
            r = measure("gpu_check", engine, n, args.proposals, folder, "hf", dtype)
            results[engine] = r
            print(f"{engine} n={n}: full evaluation {r['full_tokens']:,.0f} tokens; proposal "
                  f"{r['proposal_wall_s']:.2f} s, {r['proposal_tokens']:,.0f} tokens computed", flush=True)
        for engine in ("published", "fast"):
            ratio = results["reference"]["proposal_wall_s"] / results[engine]["proposal_wall_s"]
            print(f"per-proposal wall, reference / {engine} at n={n}: {ratio:.1f}x", flush=True)
        # The presets' order (published) is what a paper-size search costs; halving_tail beside it.
        for engine in ("published", "fast"):
            paper = measure("gpu_check", engine, paper_n, args.proposals, folder, "hf", dtype)
            results[f"paper_{engine}"] = paper
            hours = paper["proposal_wall_s"] * args.iterations / 3600
            print(f"projected paper-size search (n={paper_n}, {args.iterations} iterations, {engine} "
                  f"engine, {dtype}): {hours:.2f} h at most ({paper['proposal_wall_s']:.2f} s per "
                  f"label-changing proposal, every iteration counted as one)", flush=True)
    print(f"gpu_check: done in {time.perf_counter() - t_start:.0f} s", flush=True)
    print("RESULTS " + json.dumps(results, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
