"""Few-shot Gold: the examples carry each claim's gold label (the supervised ceiling)."""

from __future__ import annotations

from plural_icm.conditions.base import CellInputs, Condition, ConditionLabels, one_example_set
from plural_icm.conditions.labels import gold_labels
from plural_icm.conditions.registry import register


@register
class Gold(Condition):
    name = "gold"
    uses_base_model = False
    uses_examples = True
    n_example_sets = one_example_set

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        chosen = inputs.chosen(persona_id)
        labels = gold_labels(chosen)
        return ConditionLabels(examples=[(c, labels[c.item_id]) for c in chosen])
