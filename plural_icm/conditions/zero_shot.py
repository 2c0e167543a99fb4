"""Zero-shot (Chat): the instruct model answers with the persona description only."""

from __future__ import annotations

from plural_icm.conditions.base import CellInputs, Condition, ConditionLabels, one_example_set
from plural_icm.conditions.registry import register


@register
class ZeroShot(Condition):
    name = "zero_shot"
    uses_examples = False
    # no examples: neither the searches' settings nor the cap on the claims they label reach it
    ignores = ("icm", "dataset.max_search_claims")
    n_example_sets = one_example_set
    uses_base_model = False

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        return ConditionLabels(examples=[])
