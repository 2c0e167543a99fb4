"""Inference time of a per-query selection: each held-out question's prompts scored alone (one
``label_logprobs`` call per question, as before issue #26's fix) or all of a persona's questions
in one call (:func:`plural_icm.inference.predict.predict_groups`, which lets the backend batch the
distinct prefixes).

    python -m plural_icm.bench.per_query                      # gqa_claims, Britain, fold 0, k=2
    python -m plural_icm.bench.per_query --k 4 --repeats 3 --persona Japan
    python -m plural_icm.bench.per_query --dataset demo --persona progressive

The examples of each held-out question are ``k`` claims of training questions in a seeded random
order per question (``selection=random``'s order, gold labels): what is measured is the shape of
the work (one distinct prefix per question), not which examples. The two modes alternate
``--repeats`` times (ABBA order) on one loaded model after an untimed warm-up call, the prefix
cache cleared before each run, and the largest difference between their probabilities is printed (float rounding only).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[2] / "conf"


def _config(dataset: str, persona: str, model: str) -> Any:
    from hydra import compose, initialize_config_dir

    from plural_icm.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=[f"dataset={dataset}", f"model={model}",
                                                        f"dataset.personas=[{persona}]", "logger=none"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="gqa_claims")
    ap.add_argument("--persona", default="Britain")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--k", type=int, default=2, help="claims shown per held-out question")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--questions", type=int, default=None,
                    help="only the first N held-out questions (default: all of the persona's)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the model config's")
    args = ap.parse_args(argv)

    import numpy as np

    from plural_icm.backends.registry import backend_from_model_config
    from plural_icm.config.settings import as_settings
    from plural_icm.data.registry import load_claimset
    from plural_icm.inference.predict import predict, predict_groups
    from plural_icm.selection.retrieve import by_question, random_order, take_k

    s = as_settings(_config(args.dataset, args.persona, args.model))
    claimset = load_claimset(s.dataset, s.paths.data_dir)
    train, test = claimset.split(args.fold, args.persona)
    bank = by_question(train)
    labels = {c.item_id: bool(c.gold) for c in train}
    queries = dict(list(by_question(test).items())[:args.questions])
    test = [c for cs in queries.values() for c in cs]
    groups = [(take_k(random_order(list(bank), 0, args.persona, q), bank, labels, args.k,
                      "contrastive")[0], claims) for q, claims in queries.items()]
    persona = claimset.personas[args.persona]
    extra = {} if args.batch_size is None else {"batch_size": args.batch_size}
    backend = backend_from_model_config(s.model, "instruct", s.paths.cache_dir, **extra)
    print(f"{args.dataset} {args.persona} fold {args.fold}: {len(test)} held-out claims in "
          f"{len(groups)} questions, k={args.k}; {s.model.name} on {s.model.backend.value}, "
          f"batch_size {backend.batch_size}")

    def alone():
        return [r for ex, t in groups for r in predict(backend, s.inference, persona, ex, t)[0]]

    def together():
        return [r for rows, _ in predict_groups(backend, s.inference, persona, groups) for r in rows]

    predict(backend, s.inference, persona, *groups[0])  # warm-up (first-call costs), not timed
    times: dict[str, list[float]] = {"per question": [], "batched": []}
    probs: dict[str, np.ndarray] = {}
    modes = [("per question", alone), ("batched", together)]
    for rep in range(args.repeats):
        for name, run in modes if rep % 2 == 0 else modes[::-1]:  # ABBA: drift hits both alike
            backend.kv_cache.clear()
            t0 = time.perf_counter()
            rows = run()
            times[name].append(time.perf_counter() - t0)
            probs[name] = np.array([r.p_true for r in rows])
            print(f"  {name:>12}: {times[name][-1]:7.1f} s", flush=True)
    for name, ts in times.items():
        print(f"{name:>12}: median {np.median(ts):.1f} s over {len(ts)} run(s) "
              f"({len(test) / np.median(ts):.2f} claims/s)")
    print(f"speed-up (median per question / median batched): "
          f"{np.median(times['per question']) / np.median(times['batched']):.2f}x; "
          f"max |p_true difference|: {np.max(np.abs(probs['per question'] - probs['batched'])):.2e}")
    backend.close()


if __name__ == "__main__":
    main()
