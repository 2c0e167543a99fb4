"""Few-shot Accuracy-Matched: example labels as accurate as ICM's, without its coherence.

Two conditions:

* ``acc_matched`` (the paper's, as its fork built it; the default of the paper presets): the
  construction the dataset declares (``dataset.acc_matched_construction``):
  ``gold_flip`` (persona datasets: the GOLD labels with as many random training claims flipped as
  ICM got wrong; one set per seed of ``condition.seeds``, the fork's 42, 101, 202, 303, 404) or
  ``fix_break`` (OpinionQA: ICM's labels with its errors fixed and as many right ones broken; one
  set, the first seed). Nothing checks coherence: random errors break consistency groups.
* ``acc_matched_swap`` (ours, kept under its own name): ICM's labels randomly perturbed within the
  persona by consistent group swaps until training accuracy matches ICM's within
  ``condition.accuracy_tolerance`` while mutual predictability is lower.

Both report, per persona, every label set of the cell's training claims (gold, random, ICM and
each accuracy-matched set) with its accuracy, its coherence P under the base model (the search's
own scorer, :func:`plural_icm.search.engine.evaluate_labelling`) and its consistency violations:
the paper's claim, coherence beyond accuracy (``details["label_sets"]``, analysis/tables.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from plural_icm.conditions.base import CellInputs, Condition, ConditionLabels, ConditionSettings
from plural_icm.conditions.icm import search_metrics
from plural_icm.conditions.labels import (FORK_SEEDS, accuracy_matched_labels,
                                          consistency_violations, fix_break_labels,
                                          gold_flip_labels, gold_labels, icm_labels,
                                          label_accuracy, random_labels)
from plural_icm.conditions.registry import register
from plural_icm.data.records import Claim


def mutual_predictability_fn(inputs: CellInputs, claims: list[Claim]) -> Callable[[dict], float]:
    """P of a labelling of ``claims`` under the base model, with the search's own scorer.

    The context order is the search's (``icm.*`` settings through SearchParams): once the
    published order is a setting of the ICM config (``icm.context_order``), P here follows it."""
    from plural_icm.search.engine import SearchParams, evaluate_labelling

    params = SearchParams.from_settings(inputs.icm)

    def mutual_predictability(labels: dict[str, bool]) -> float:
        return evaluate_labelling(claims, inputs.claimset.rule, inputs.base_model(), params, labels,
                                  inputs.icm.template, tuple(inputs.icm.labels))[1]
    return mutual_predictability


@dataclass(frozen=True)
class AccMatchedSettings(ConditionSettings):
    """``acc_matched``'s keys."""

    n_perturbations: int = 1
    """How many accuracy-matched label sets are averaged (the paper: 5)."""
    seeds: Optional[list[int]] = None
    """The seeds of its example sets (the paper's fork: 42, 101, 202, 303, 404); None: those."""


@dataclass(frozen=True)
class AccMatchedSwapSettings(ConditionSettings):
    """``acc_matched_swap``'s keys."""

    n_perturbations: int = 1
    accuracy_tolerance: float = 0.005
    """How far a perturbed set's training accuracy may be from ICM's."""
    max_perturbation_tries: int = 2000


def construction(dataset: Any) -> str:
    """The fork's construction for the cell's dataset (``gold_flip`` unless it declares another);
    ``dataset``: the typed dataset settings."""
    name = dataset.acc_matched_construction or "gold_flip"
    if name not in ("gold_flip", "fix_break"):
        raise ValueError(f"dataset.acc_matched_construction={name!r}; expected gold_flip or fix_break")
    return name


def fork_seeds(settings: AccMatchedSettings, dataset: Any) -> list[int]:
    """The seeds of the cell's accuracy-matched sets: ``condition.seeds`` (the fork's five by
    default), the first ``condition.n_perturbations`` of them; one for ``fix_break`` (the fork's)."""
    seeds = [int(s) for s in (settings.seeds or FORK_SEEDS)]
    n = 1 if construction(dataset) == "fix_break" else settings.n_perturbations
    if n > len(seeds):
        raise ValueError(f"condition.n_perturbations={n} but condition.seeds has {len(seeds)} seed(s)")
    return seeds[:n]


def label_set_rows(inputs: CellInputs, claims: list[Claim], sets: dict[str, dict[str, bool]],
                   coherence: Callable[[dict], float]) -> dict[str, dict]:
    """Accuracy, coherence P and consistency violations of each named label set of ``claims``."""
    rule = inputs.claimset.rule
    return {name: {"accuracy": label_accuracy(claims, labels),
                   "coherence_P": float(coherence(dict(labels))),
                   "violations": consistency_violations(claims, labels, rule),
                   "n_labels": len(labels)}
            for name, labels in sets.items()}


def _summary_metrics(rows: dict[str, dict]) -> dict[str, float | None]:
    """Per-persona scalars of the label sets (the acc-matched sets averaged) for the cell's metrics."""
    out: dict[str, float | None] = {}
    kinds = {"gold": ["gold"], "random": ["random"], "icm": ["icm"],
             "acc_matched": [k for k in rows if k.startswith("acc_matched")]}
    for kind, names in kinds.items():
        for key in ("accuracy", "coherence_P", "violations"):
            vals = [rows[n][key] for n in names if rows.get(n, {}).get(key) is not None]
            out[f"labelset_{kind}_{key}"] = sum(vals) / len(vals) if vals else None
    return out


class _AccuracyMatchedBase(Condition):
    needs_search = True
    uses_base_model = True  # the label sets' coherence is scored by the base model
    uses_examples = True

    def _sets(self, inputs: CellInputs, persona_id: str, chosen: list[Claim], icm: dict[str, bool],
              coherence: Callable[[dict], float]) -> tuple[list[tuple[dict[str, bool], dict]], dict]:
        """The accuracy-matched label sets, each with its label-set row, and details."""
        raise NotImplementedError

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        search = inputs.searches[persona_id]
        chosen = inputs.chosen(persona_id)
        icm = icm_labels(chosen, search.labels)
        chosen = [c for c in chosen if c.item_id in icm]
        coherence = mutual_predictability_fn(inputs, chosen)
        perts, details = self._sets(inputs, persona_id, chosen, icm, coherence)
        named = {"gold": gold_labels(chosen), "random": random_labels(chosen, inputs.seed),
                 "icm": icm}
        rows = label_set_rows(inputs, chosen, named, coherence)
        for k, (labels, row) in enumerate(perts):
            rows[f"acc_matched_{k}"] = row | {"n_changed_from_icm": sum(labels[i] != icm[i] for i in icm)}
        sets = [[(c, labels[c.item_id]) for c in chosen] for labels, _ in perts]
        return ConditionLabels(
            examples=sets[0], perturbations=sets,
            metrics={**search_metrics(search), **_summary_metrics(rows),
                     **details.pop("metrics", {})},
            details={"search": str(search.path), "label_sets": rows,
                     # the order every P here was scored in (P's of two orders do not compare)
                     "context_order": str(inputs.icm.context_order), **details})


@register
class AccuracyMatched(_AccuracyMatchedBase):
    """The paper fork's construction (module docstring)."""

    name = "acc_matched"
    settings_class = AccMatchedSettings

    def n_example_sets(self, settings: AccMatchedSettings, dataset: Any) -> int:
        return len(fork_seeds(settings, dataset))

    def _sets(self, inputs, persona_id, chosen, icm, coherence):
        how = construction(inputs.dataset)
        build = gold_flip_labels if how == "gold_flip" else fix_break_labels
        out = []
        for seed in fork_seeds(inputs.settings, inputs.dataset):
            labels = build(chosen, icm, seed, salt=f"{persona_id}:fold{inputs.fold}")
            row = label_set_rows(inputs, chosen, {"x": labels}, coherence)["x"]
            out.append((labels, row | {"seed": seed, "construction": how}))
        return out, {"construction": how}


@register
class AccuracyMatchedSwap(_AccuracyMatchedBase):
    """Ours: consistent group swaps of ICM's labels, accepted only when P is lower."""

    name = "acc_matched_swap"
    settings_class = AccMatchedSwapSettings

    def n_example_sets(self, settings: AccMatchedSwapSettings, dataset: Any) -> int:
        return settings.n_perturbations

    def _sets(self, inputs, persona_id, chosen, icm, coherence):
        cfg = inputs.settings
        perts = accuracy_matched_labels(
            chosen, icm, coherence, n_perturbations=cfg.n_perturbations,
            tolerance=float(cfg.accuracy_tolerance), seed=inputs.seed,
            max_tries=cfg.max_perturbation_tries, rule=inputs.claimset.rule)
        rule = inputs.claimset.rule
        out = [(p.labels, {"accuracy": p.accuracy, "coherence_P": p.coherence,
                           "violations": consistency_violations(chosen, p.labels, rule),
                           "n_labels": len(p.labels), "tries": p.tries,
                           "mutual_predictability": p.coherence, "n_changed": p.n_changed})
               for p in perts]
        return out, {
            # ICM's labels rescored with the perturbations' own context orders: the value each
            # perturbation's P is below (icm_mutual_predictability is the search's).
            "metrics": {"icm_mutual_predictability_same_orders": perts[0].reference_coherence},
            "perturbations": [{"accuracy": p.accuracy, "mutual_predictability": p.coherence,
                               "n_changed": p.n_changed, "tries": p.tries} for p in perts]}
