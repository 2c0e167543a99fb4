"""Few-shot Accuracy-Matched: ICM's labels randomly perturbed within the persona until training
accuracy matches ICM's (within ``condition.accuracy_tolerance``) while mutual predictability is
lower; the cell averages the metrics of ``condition.n_perturbations`` such sets (the paper: 5)."""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig

from plural_icm.conditions.base import CellInputs, Condition, ConditionLabels
from plural_icm.conditions.icm import search_metrics
from plural_icm.conditions.labels import accuracy_matched_labels, icm_labels
from plural_icm.conditions.registry import register
from plural_icm.data.records import Claim


def mutual_predictability_fn(inputs: CellInputs, claims: list[Claim]) -> Callable[[dict], float]:
    """P of a labelling of ``claims`` under the base model, with the search's own scorer."""
    from plural_icm.search.engine import SearchParams, evaluate_labelling

    cfg = inputs.cfg
    params = SearchParams.from_config(cfg.icm)

    def mutual_predictability(labels: dict[str, bool]) -> float:
        return evaluate_labelling(claims, inputs.claimset.rule, inputs.base_model(), params, labels,
                                  cfg.icm.template, tuple(cfg.icm.labels))[1]
    return mutual_predictability


@register
class AccuracyMatched(Condition):
    name = "acc_matched"
    needs_search = True
    uses_base_model = True  # perturbation coherence is scored by the base model

    def n_example_sets(self, cfg: DictConfig) -> int:
        return int(cfg.condition.n_perturbations)

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        cfg = inputs.cfg
        search = inputs.searches[persona_id]
        chosen = inputs.chosen(persona_id)
        icm = icm_labels(chosen, search.labels)
        chosen = [c for c in chosen if c.item_id in icm]
        perts = accuracy_matched_labels(
            chosen, icm, mutual_predictability_fn(inputs, chosen),
            n_perturbations=int(cfg.condition.n_perturbations),
            tolerance=float(cfg.condition.accuracy_tolerance), seed=int(cfg.seed),
            max_tries=int(cfg.condition.max_perturbation_tries), rule=inputs.claimset.rule)
        sets = [[(c, p.labels[c.item_id]) for c in chosen] for p in perts]
        return ConditionLabels(
            examples=sets[0], perturbations=sets,
            metrics={**search_metrics(search),
                     # ICM's labels rescored with the perturbations' own context orders: the value
                     # each perturbation's P is below (icm_mutual_predictability is the search's).
                     "icm_mutual_predictability_same_orders": perts[0].reference_coherence},
            details={"search": str(search.path),
                     # the order every P here was scored in (P's of two orders do not compare)
                     "context_order": str(cfg.icm.context_order),
                     "perturbations": [{"accuracy": p.accuracy, "mutual_predictability": p.coherence,
                                        "n_changed": p.n_changed, "tries": p.tries} for p in perts]})
