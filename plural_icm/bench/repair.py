"""Benchmark: what the consistency-repair rule (``icm.repair_rule``) does to ICM searches, on the
paper authors' GQA claims with a real model.

    python -m plural_icm.bench.repair --personas Nigeria --seeds 4 --max-iters 10 \\
        --order halving_tail --out repair.json              # what docs/benchmark.md ran

``improve`` (the ``paper`` preset, Wen et al.'s text: "keep the best if it improves U") adopts a
consistency repair after a proposal only if it raises U; ``first`` (the ``fork`` preset, how the
paper's fork ran) adopts each group's best repair unconditionally. For each persona it runs
``--seeds`` searches per rule from the same seeds (so search k of both rules starts from the same
seed labels) in the published context order (or ``--order``) with the fork's other settings, and
reports with 95% t intervals over seeds: final label accuracy against gold, U, P (mean signed
log-odds), the inconsistencies left, the agreement of the two rules' labels and the paired accuracy
difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Sequence

import numpy as np

from plural_icm.bench.order import (LABELS, MODELS, RATE, RATE_DIFFERENCE, TEMPLATE, IterationMeter,
                                    Progress, add_search_args, claims_of, fmt, machine, open_backend,
                                    save_rows, search_params, search_set, t_interval)
from plural_icm.choices import RepairRule
from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.search.engine import ICMSearch, SearchParams, run_searches
from plural_icm.search.params import CONTEXT_ORDERS
from plural_icm.search.prompts import ClaimRenderer

RULES = tuple(r.value for r in RepairRule)  # improve, first: differences are RULES[0] - RULES[1]


def rule_params(rule: str, max_iters: int, order: str = "published") -> SearchParams:
    """The fork's settings in ``order`` (the presets' published order by default), with ``rule``
    as the repair rule."""
    return dataclasses.replace(search_params(order, max_iters), repair_rule=rule)


def run_rules(backend, claims: list[Claim], seeds: Sequence[int], max_iters: int, prog: Progress,
              order: str = "published") -> dict:
    """Every rule's searches over ``claims``, and how their results compare."""
    renderer = ClaimRenderer(backend, TEMPLATE, LABELS)
    out: dict = {"n_claims": len(claims), "context_order": order, "rules": {}}
    for rule in RULES:
        t0 = time.perf_counter()
        meter = IterationMeter(len(seeds) * max_iters, f"{len(seeds)} searches, repair_rule={rule}")
        searches = [ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, renderer,
                              rule_params(rule, max_iters, order), seed=k,
                              max_context=backend.max_context, on_iteration=meter) for k in seeds]
        results = run_searches(searches, backend, list(LABELS))
        out["rules"][rule] = {"search_wall_s": time.perf_counter() - t0,
                              "labels": [r.labels for r in results],
                              "accuracy": [r.label_accuracy for r in results],
                              "U": [r.U for r in results], "P": [r.P for r in results],
                              "I": [r.I for r in results]}
        prog.step(f"{len(seeds)} searches, repair_rule={rule} "
                  f"({out['rules'][rule]['search_wall_s'] / 60:.1f} min)")
    a, b = (out["rules"][r]["labels"] for r in RULES)
    ids = [c.item_id for c in claims]
    out["agreement"] = [float(np.mean([la[j] == lb[j] for j in ids])) for la, lb in zip(a, b)]
    out["accuracy_difference"] = [x - y for x, y in zip(out["rules"][RULES[0]]["accuracy"],
                                                         out["rules"][RULES[1]]["accuracy"])]
    return out


def table(rows: list[dict]) -> str:
    """One markdown row per (persona, rule), then one per persona comparing the rules."""
    per_rule = ["| model | persona | n | order | repair_rule | accuracy vs gold | U | P | inconsistencies |",
                "|---|---|---|---|---|---|---|---|---|"]
    paired = [f"| model | persona | n | agreement of the rules' labels | accuracy {RULES[0]} - {RULES[1]} |",
              "|---|---|---|---|---|"]
    for r in rows:
        key = f"| {r['model']} | {r['persona']} | {r['n_claims']} |"
        for rule in RULES:
            o = r["rules"][rule]
            per_rule.append(f"{key} {r.get('context_order', 'published')} | {rule} | "
                            f"{fmt(t_interval(o['accuracy'], RATE), True)} | "
                            f"{fmt(t_interval(o['U']))} | {fmt(t_interval(o['P']))} | "
                            f"{fmt(t_interval(o['I']))} |")
        paired.append(f"{key} {fmt(t_interval(r['agreement'], RATE), True)} | "
                      f"{fmt(t_interval(r['accuracy_difference'], RATE_DIFFERENCE), True)} |")
    return "\n".join(per_rule + [""] + paired)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=list(MODELS), default="smollm2")
    ap.add_argument("--personas", nargs="*", default=["Nigeria", "Britain"])
    ap.add_argument("--unit", choices=["part", "training_folds"], default="part",
                    help="part: the first training part of held-out fold 0 (the fork's per-part "
                         "size); training_folds: the union of fold 0's training parts")
    add_search_args(ap, "rule")
    ap.add_argument("--order", choices=list(CONTEXT_ORDERS), default="published",
                    help="the context order of every search (the presets' published by default; "
                         "halving_tail is ~3x cheaper on a CPU and scores another objective)")
    args = ap.parse_args(argv)

    cs = claims_of(args)
    seeds = list(range(args.seeds))
    print(f"{machine()}; model {args.model}; personas {args.personas}; search set {args.unit} of "
          f"held-out fold {args.fold}; seeds {seeds}; {args.max_iters} iterations; repair rules "
          f"{RULES}; {args.order} order, fork settings otherwise", flush=True)
    prog = Progress(total=len(args.personas) * len(RULES))
    backend = open_backend(args.model, args)
    rows: list[dict] = []
    for persona in args.personas:
        claims = search_set(cs, persona, args.fold, args.unit)
        print(f"{args.model} {persona} {args.unit}: {len(claims)} claims", flush=True)
        rows.append({"model": args.model, "persona": persona, "unit": args.unit, "fold": args.fold,
                     "seeds": seeds, "max_iters": args.max_iters,
                     **run_rules(backend, claims, seeds, args.max_iters, prog, args.order)})
        save_rows(args.out, rows)
        print(table(rows[-1:]), flush=True)
    backend.close()
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
