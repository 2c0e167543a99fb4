"""Benchmark: what the context order (``icm.context_order``) does to ICM searches, on the paper
authors' GQA claims with real models.

    python -m plural_icm.bench.order                       # the full spec (issue #24): hours on a CPU
    python -m plural_icm.bench.order --models smollm2 --personas Nigeria --units part \\
        --seeds 8 --max-iters 30 --out order.json          # what docs/benchmark.md ran

For each model, persona and search set (``part``: the first training part of held-out fold 0, the
fork's per-part size; ``training_folds``: the union of fold 0's training parts) it

* scores three labellings under each order, one full leave-one-out evaluation each: the gold
  labels, a random consistent labelling (one True option per question, seeded), and every search's
  final labels (each search's labels under both orders);
* runs ``--seeds`` searches per order (the fork's settings: alpha 50, 8 seed labels, log schedule,
  no early stop; ``--max-iters`` iterations, the fork's 500 by default), seeds 0..S-1 for both
  orders, so search k of each order starts from the same seed labels;

and reports, with 95% confidence intervals (t over seeds; bootstrap over claims for
correlations): final label accuracy against gold per order, the agreement of the two orders'
labels (same seed), the paired accuracy difference, P of the gold, random and ICM labellings under
each order, and the per-claim correlation of the signed log-odds ``s_i * (+1 if y_i else -1)``
between the orders (with how many claims change sign).

Every P is a mean signed log-odds (the published aggregate); scores come from the hf backend in
fp32 with its exact prefix cache.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.search.engine import ICMSearch, SearchParams, SearchResult, labelling_scores, run_searches
from plural_icm.search.params import CONTEXT_ORDERS
from plural_icm.search.prompts import ClaimRenderer

TEMPLATE = "Question: {question}\nClaim: {claim}\nI think this claim is"
LABELS = (" True", " False")
MODELS = {"smollm2": "packaged:smollm2", "gemma270m": "packaged:gemma3-270m"}
ORDERS = CONTEXT_ORDERS  # published first: the correlations compare ORDERS[0] with ORDERS[1]
DEFAULT_PERSONAS = ("Nigeria", "Britain", "Brazil")


def load_claims(path: str | None):
    """The ``gqa_claims`` dataset (its conf/dataset preset), from ``path`` or the preset's default."""
    from hydra import compose, initialize_config_dir

    from plural_icm.config.schema import register_configs
    from plural_icm.data.registry import load_claimset

    register_configs()
    conf = Path(__file__).resolve().parents[2] / "conf"
    overrides = ["dataset=gqa_claims"] + ([f"dataset.path={path}"] if path else [])
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("config", overrides=overrides)
    return load_claimset(cfg.dataset)


def search_set(claimset, persona: str, fold: int, unit: str) -> list[Claim]:
    """The claims of one search: the first training part of held-out ``fold`` (``part``) or the
    union of its training parts (``training_folds``)."""
    from plural_icm.search.units import search_sets

    train, _ = claimset.split(fold, persona)
    sets = search_sets(train, claimset.folds, unit)
    return list(sets[0][1])


def random_consistent(claims: Sequence[Claim], seed: int) -> dict[str, bool]:
    """One True option per consistency group, chosen uniformly (seeded)."""
    rng = random.Random(seed)
    groups: dict[str, list[str]] = {}
    for c in claims:
        groups.setdefault(c.group_id, []).append(c.item_id)
    out = {}
    for members in groups.values():
        win = rng.choice(members)
        out.update({m: m == win for m in members})
    return out


def signed(scores: dict, labels: dict[str, bool], ids: Sequence[str]) -> np.ndarray:
    """Per claim, ``(ln P(True) - ln P(False))`` signed by its label (P is their mean)."""
    return np.array([(scores[j][0] - scores[j][1]) * (1 if labels[j] else -1) for j in ids])


# The range a rate or a difference of rates can take: a t interval over a few seeds near 100%
# otherwise reaches past it (an agreement of 79.7% [57.6%, 101.7%] over 4 seeds).
RATE = (0.0, 1.0)
RATE_DIFFERENCE = (-1.0, 1.0)


def t_interval(values: Sequence[float],
               bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and 95% t interval (0 width for one value), clipped to ``bounds`` when given."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return m, lo, hi


def corr_interval(x: np.ndarray, y: np.ndarray, seed: int = 0, n_boot: int = 2000):
    """Pearson correlation and its 95% bootstrap interval over claims."""
    r = float(np.corrcoef(x, y)[0, 1])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if np.std(x[idx]) > 0 and np.std(y[idx]) > 0:
            boots.append(np.corrcoef(x[idx], y[idx])[0, 1])
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (r, r)
    return r, float(lo), float(hi)


def fmt(ci: tuple[float, float, float], pct: bool = False) -> str:
    m, lo, hi = ci
    if pct:
        return f"{m:.1%} [{lo:.1%}, {hi:.1%}]"
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def search_params(order: str, max_iters: int) -> SearchParams:
    """The fork's settings (conf/icm/fork.yaml) in ``order``, ``max_iters`` iterations."""
    return SearchParams(alpha=50, num_seed=8, max_iters=max_iters, initial_temp=10, final_temp=0.01,
                        decay=0.99, schedule="log", log_schedule_constant=2.0,
                        temperature_index="accepted", patience=None, seed_labels="random",
                        repair_seed_labels=True, context_order=order, checkpoint_every=10**9)


class Progress:
    """One line per finished step: elapsed, rate, and time left at that rate."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def step(self, what: str, n: int = 1) -> None:
        self.done += n
        el = time.perf_counter() - self.t0
        left = el / self.done * (self.total - self.done) if self.done else float("nan")
        print(f"  [{self.done}/{self.total}] {what}: {el / 60:.1f} min elapsed, "
              f"~{left / 60:.1f} min left", flush=True)


class IterationMeter:
    """Counts the iterations of a batch of searches (their ``on_iteration`` callback) and prints
    one line every ``every`` seconds: done of total, rate, time left at that rate. The searches of
    one order run together in shared batches, so without it a cell is silent for its longest part."""

    def __init__(self, total: int, what: str, every: float = 60.0):
        self.total, self.what, self.every = total, what, every
        self.done, self.t0 = 0, time.perf_counter()
        self.last = self.t0

    def __call__(self, _row: dict) -> None:
        self.done += 1
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate else float("nan")
            print(f"    {self.what}: {self.done}/{self.total} iterations, {rate * 60:.1f}/min, "
                  f"~{left / 60:.1f} min left", flush=True)


def run_cell(backend, claims: list[Claim], seeds: Sequence[int], max_iters: int, prog: Progress) -> dict:
    """Everything the table reports for one (model, persona, search set)."""
    ids = [c.item_id for c in claims]
    gold = {c.item_id: bool(c.gold) for c in claims}
    rand = random_consistent(claims, seed=0)
    rule = ConsistencyRule.EXACTLY_ONE
    renderer = ClaimRenderer(backend, TEMPLATE, LABELS)

    def scores(order: str, labels: dict[str, bool]) -> dict:
        return labelling_scores(claims, rule, backend, SearchParams(context_order=order), labels,
                                TEMPLATE, LABELS)

    out: dict = {"n_claims": len(claims), "orders": {o: {} for o in ORDERS}}
    fixed_labellings = {"gold": gold, "random": rand}
    per_claim: dict = {}
    for order in ORDERS:
        for name, lab in fixed_labellings.items():
            s = signed(scores(order, lab), lab, ids)
            per_claim[(order, name)] = s
            out["orders"][order][f"P_{name}"] = float(s.mean())
        prog.step(f"P of gold and random labels, {order}")
    out["correlation"] = {}
    for name in fixed_labellings:
        x, y = per_claim[(ORDERS[0], name)], per_claim[(ORDERS[1], name)]
        out["correlation"][name] = {"r": corr_interval(x, y),
                                    "sign_disagreements": int(np.sum(np.sign(x) != np.sign(y))),
                                    "mean_abs_difference": float(np.mean(np.abs(x - y))),
                                    "P": {o: float(per_claim[(o, name)].mean()) for o in ORDERS}}
        # printed now: the searches below take far longer, and a cut-short run keeps this
        print(f"  {name} labels: P {out['correlation'][name]['P']}, per-claim correlation "
              f"{fmt(out['correlation'][name]['r'])}, sign flips "
              f"{out['correlation'][name]['sign_disagreements']}/{len(ids)}, mean |diff| "
              f"{out['correlation'][name]['mean_abs_difference']:.3f}", flush=True)
    for order in ORDERS:
        o = out["orders"][order]
        t0 = time.perf_counter()
        meter = IterationMeter(len(seeds) * max_iters, f"{len(seeds)} searches, {order}")
        searches = [ICMSearch(claims, rule, renderer, search_params(order, max_iters), seed=k,
                              max_context=backend.max_context, on_iteration=meter) for k in seeds]
        results: list[SearchResult] = run_searches(searches, backend, list(LABELS))
        o["search_wall_s"] = time.perf_counter() - t0
        o["labels"] = [r.labels for r in results]
        o["accuracy"] = [r.label_accuracy for r in results]
        o["P_own"] = [r.P for r in results]
        o["I"] = [r.I for r in results]
        o["nearest_example"] = [r.nearest_example for r in results]
        prog.step(f"{len(seeds)} searches, {order} ({o['search_wall_s'] / 60:.1f} min)")
    # Every search's labels under the other order (its own order's P is the search's).
    for order in ORDERS:
        other = [x for x in ORDERS if x != order][0]
        out["orders"][order]["P_icm_under_" + other] = [
            float(signed(scores(other, lab), lab, ids).mean()) for lab in out["orders"][order]["labels"]]
        prog.step(f"{order} searches' labels scored under {other}")
    a, b = (out["orders"][x]["labels"] for x in ORDERS)
    out["agreement"] = [float(np.mean([la[j] == lb[j] for j in ids])) for la, lb in zip(a, b)]
    return out


def table(rows: list[dict]) -> str:
    """Markdown tables of the measured cells."""
    head = ["| model | persona | search set | n | order | accuracy vs gold | P(gold) | P(random) | "
            "P(ICM), own order | P(ICM), other order | nearest example same group / recently changed |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    cross = ["| model | persona | search set | n | agreement of the orders' labels | accuracy "
             "published - halving_tail | corr. per claim, gold (sign flips, mean abs diff) | "
             "corr. per claim, random (sign flips, mean abs diff) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        key = f"| {r['model']} | {r['persona']} | {r['unit']} | {r['n_claims']} |"
        for order in ORDERS:
            o = r["orders"][order]
            other = [x for x in ORDERS if x != order][0]
            ne = o["nearest_example"]
            q = sum(x["queries"] for x in ne) or 1
            head.append(f"{key} {order} | {fmt(t_interval(o['accuracy'], RATE), True)} | {o['P_gold']:.3f} | "
                        f"{o['P_random']:.3f} | {fmt(t_interval(o['P_own']))} | "
                        f"{fmt(t_interval(o['P_icm_under_' + other]))} | "
                        f"{sum(x['same_group'] for x in ne) / q:.1%} / "
                        f"{sum(x['recently_changed'] for x in ne) / q:.1%} |")
        acc = [x - y for x, y in zip(r["orders"][ORDERS[0]]["accuracy"], r["orders"][ORDERS[1]]["accuracy"])]
        cells = []
        for name in ("gold", "random"):
            c = r["correlation"][name]
            cells.append(f"{fmt(c['r'])} ({c['sign_disagreements']}/{r['n_claims']}, "
                         f"{c['mean_abs_difference']:.2f})")
        cross.append(f"{key} {fmt(t_interval(r['agreement'], RATE), True)} | "
                     f"{fmt(t_interval(acc, RATE_DIFFERENCE), True)} | {cells[0]} | {cells[1]} |")
    return "\n".join(head + [""] + cross)


def add_search_args(ap: argparse.ArgumentParser, what: str) -> None:
    """The options of every search benchmark on the authors' GQA claims (this one, bench.repair)."""
    ap.add_argument("--seeds", type=int, default=8, help=f"searches per {what} (seeds 0..S-1)")
    ap.add_argument("--max-iters", type=int, default=500, help="iterations per search (the fork's 500)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--data", default=None, help="the gqa_claims folder (default: the preset's path)")
    ap.add_argument("--out", default=None, help="write every measured value as JSON here")
    ap.add_argument("--prefix-cache-gb", type=float, default=4.0,
                    help="the hf backend's prefix-cache budget (GiB). Searches run in shared "
                         "batches, so their working sets add up; past the budget the cache evicts "
                         "and recomputes (same scores, more compute)")


def machine() -> str:
    """The machine a benchmark ran on, for its first line: architecture, torch, threads."""
    import torch

    return (f"machine: {platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def claims_of(args: argparse.Namespace):
    """The ``gqa_claims`` claim set, refusing personas it does not hold (``args.personas``)."""
    cs = load_claims(args.data)
    missing = [p for p in args.personas if p not in cs.personas]
    if missing:
        sys.exit(f"personas {missing} are not in the data (have {sorted(cs.personas)})")
    return cs


def open_backend(model: str, args: argparse.Namespace):
    """The hf backend of ``model`` (a key of :data:`MODELS`) in fp32 with the asked cache budget."""
    from plural_icm.backends.hf import HFBackend
    from plural_icm.backends.loading import default_cache_dir

    return HFBackend(MODELS[model], cache_dir=default_cache_dir(), dtype="float32",
                     prefix_cache_gb=args.prefix_cache_gb)


def save_rows(out: str | None, rows: list[dict]) -> None:
    """Every measured row so far to ``out`` (atomically), after each cell: a cut-short run keeps
    what it measured."""
    if out:
        tmp = Path(out + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(out)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--personas", nargs="*", default=list(DEFAULT_PERSONAS),
                    help="GQA countries (Nigeria, Britain and one more by default)")
    ap.add_argument("--units", nargs="*", choices=["part", "training_folds"],
                    default=["part", "training_folds"],
                    help="part: the first training part of held-out fold 0 (the fork's per-part "
                         "size, 12-28 claims); training_folds: the union of fold 0's training parts")
    add_search_args(ap, "order")
    args = ap.parse_args(argv)

    cs = claims_of(args)
    seeds = list(range(args.seeds))
    print(f"{machine()}; models {args.models}; personas {args.personas}; search sets {args.units} of "
          f"held-out fold {args.fold}; seeds {seeds}; {args.max_iters} iterations; orders {ORDERS}; "
          f"fork settings (alpha 50, num_seed 8, log schedule, T0 10, no early stop)", flush=True)
    cells = [(m, p, u) for m in args.models for p in args.personas for u in args.units]
    # per cell and order: the fixed labellings, the searches, their labels under the other order
    prog = Progress(total=len(cells) * 3 * len(ORDERS))
    rows: list[dict] = []
    for model in args.models:
        backend = open_backend(model, args)
        for persona in args.personas:
            for unit in args.units:
                claims = search_set(cs, persona, args.fold, unit)
                print(f"{model} {persona} {unit}: {len(claims)} claims", flush=True)
                r = run_cell(backend, claims, seeds, args.max_iters, prog)
                rows.append({"model": model, "persona": persona, "unit": unit, "fold": args.fold,
                             "seeds": seeds, "max_iters": args.max_iters, **r})
                save_rows(args.out, rows)
                print(table(rows[-1:]), flush=True)
        backend.close()
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
