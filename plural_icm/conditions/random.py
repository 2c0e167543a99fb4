"""Few-shot Random: uniformly random, seeded labels (not made consistent; the paper's baseline)."""

from __future__ import annotations

from plural_icm.conditions.base import CellInputs, Condition, ConditionLabels, one_example_set
from plural_icm.conditions.labels import random_labels
from plural_icm.conditions.registry import register


@register
class Random(Condition):
    name = "random"
    uses_base_model = False
    uses_examples = True
    n_example_sets = one_example_set

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        chosen = inputs.chosen(persona_id)
        labels = random_labels(chosen, seed=inputs.seed)
        return ConditionLabels(examples=[(c, labels[c.item_id]) for c in chosen])
