"""Few-shot Bootstrap: the cheap unsupervised baseline ICM must beat to be worth its cost.

Self-labelling with the base model, no search: start from random labels over the persona's
search set, then, for ``condition.passes`` passes, relabel every claim by the base model's
prediction with every *other* claim and its current label in context (leave-one-out, scored
exactly as the ICM search scores a labelling: ``search.engine.labelling_scores``, its prompt blocks,
template, label strings and prefix-sharing context orders), stopping early when a pass changes
nothing. Finally the dataset's consistency rule is enforced: each group gets the consistent
assignment closest to the model's last preferences (``most_preferred_consistent``). The examples
are the usual subset (``inference.n_examples``) of the search set, as for ICM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

from tqdm.auto import tqdm

from plural_icm.conditions.base import (CellInputs, Condition, ConditionLabels, ConditionSettings,
                                        one_example_set)
from plural_icm.conditions.labels import label_accuracy, random_labels
from plural_icm.conditions.registry import register
from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.search.consistency import inconsistencies, most_preferred_consistent
from plural_icm.search.engine import SearchParams, labelling_scores

log = logging.getLogger(__name__)

DEFAULT_PASSES = 3
"""``condition.passes`` when unset (conf/condition/bootstrap.yaml sets it)."""


def leave_one_out_margins(backend, claims: Sequence[Claim], rule: ConsistencyRule,
                          params: SearchParams, labels: dict[str, bool], template: str,
                          label_strings: Sequence[str]) -> dict[str, float]:
    """``ln P(True) - ln P(False)`` of each claim given all others with their labels, scored as
    the ICM search scores a labelling (its prompt blocks and prefix-sharing context orders)."""
    scores = labelling_scores(claims, rule, backend, params, labels, template, label_strings)
    return {j: lt - lf for j, (lt, lf) in scores.items()}


def bootstrap_labels(backend, claims: Sequence[Claim], rule: ConsistencyRule, template: str,
                     label_strings: Sequence[str], passes: int, seed: int,
                     params: SearchParams | None = None,
                     progress: bool = False) -> tuple[dict[str, bool], dict]:
    """(consistent labels, record of the passes) of ``claims`` by self-labelling (see module).

    ``params`` are the search's (``icm.*``: the context layout); the defaults otherwise.
    """
    if passes < 1:
        raise ValueError(f"condition.passes must be >= 1, got {passes}")
    params = params or SearchParams()
    labels = random_labels(claims, seed=seed)
    changed: list[int] = []
    margins: dict[str, float] = {}
    for _ in tqdm(range(passes), desc="bootstrap passes", unit="pass", disable=not progress):
        margins = leave_one_out_margins(backend, claims, rule, params, labels, template, label_strings)
        new = {j: m > 0 for j, m in margins.items()}
        changed.append(sum(new[j] != labels[j] for j in labels))
        labels = new
        if changed[-1] == 0:
            break
    groups: dict[str, list[str]] = {}
    for c in claims:
        groups.setdefault(c.group_id, []).append(c.item_id)
    before = inconsistencies(groups, labels, rule)
    final = most_preferred_consistent(groups, margins, rule)
    record = {"passes_run": len(changed), "changed_per_pass": changed,
              "inconsistencies_before_rule": before,
              "repaired": sum(final[j] != labels[j] for j in labels),
              "context_order": params.context_order}
    return final, record


@dataclass(frozen=True)
class BootstrapSettings(ConditionSettings):
    passes: Optional[int] = None
    """Relabelling passes over the search set before the consistency rule is applied
    (conf/condition/bootstrap.yaml: 3; unset: :data:`DEFAULT_PASSES`)."""


@register
class Bootstrap(Condition):
    name = "bootstrap"
    settings_class = BootstrapSettings
    uses_base_model = True  # the base model labels its own examples
    uses_examples = True
    n_example_sets = one_example_set

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        claims = inputs.search_claims(persona_id)
        passes = inputs.settings.passes
        labels, record = bootstrap_labels(
            inputs.base_model(), claims, inputs.claimset.rule, inputs.icm.template,
            tuple(inputs.icm.labels), passes=DEFAULT_PASSES if passes is None else passes,
            seed=inputs.seed, params=SearchParams.from_settings(inputs.icm),
            progress=inputs.progress)
        log.info("bootstrap %s: %s", persona_id, record)
        chosen = inputs.chosen(persona_id)
        # the label-set row of the report (accuracy, coherence P, violations; acc_matched.py)
        from plural_icm.conditions.acc_matched import label_set_rows, mutual_predictability_fn

        rows = label_set_rows(inputs, claims, {"bootstrap": labels},
                              mutual_predictability_fn(inputs, claims))
        return ConditionLabels(
            examples=[(c, labels[c.item_id]) for c in chosen],
            metrics={"bootstrap_label_accuracy": label_accuracy(claims, labels),
                     "labelset_bootstrap_coherence_P": rows["bootstrap"]["coherence_P"],
                     "labelset_bootstrap_violations": rows["bootstrap"]["violations"]},
            details={"bootstrap": record, "label_sets": rows})
