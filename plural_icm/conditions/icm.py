"""Few-shot ICM: the labels of the persona's best ICM search (run, resumed or loaded by the cell)."""

from __future__ import annotations

from typing import Any

from plural_icm.conditions.base import CellInputs, Condition, ConditionLabels, one_example_set
from plural_icm.conditions.labels import icm_labels
from plural_icm.conditions.registry import register


def search_metrics(search: Any) -> dict[str, float | None]:
    """What the cell reports about the search behind the examples (accuracy vs gold, P)."""
    return {"icm_label_accuracy": search.summary.label_accuracy,
            "icm_mutual_predictability": search.summary.P}


@register
class ICM(Condition):
    name = "icm"
    needs_search = True
    uses_base_model = False
    uses_examples = True
    n_example_sets = one_example_set

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        search = inputs.searches[persona_id]
        chosen = inputs.chosen(persona_id)
        labels = icm_labels(chosen, search.labels)
        return ConditionLabels(examples=[(c, labels[c.item_id]) for c in chosen if c.item_id in labels],
                               metrics=search_metrics(search),
                               details={"search": str(search.path), "icm_U": search.summary.U,
                                        "icm_inconsistencies": search.summary.I,
                                        # claims the search never reached (labelled by one final
                                        # prediction): the summary says so beside the score
                                        "icm_unreached_claims": search.summary.n_predicted_unlabelled},
                               confidence={j: float(search.confidence[j]) for j in labels
                                           if j in search.confidence})
