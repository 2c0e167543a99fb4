"""The interface of a condition, and what it is given and returns.

A cell asks its condition three things: does it need the ICM searches of the cell's personas
(``needs_search``), which checkpoint answers the in-context prompts (``model_role``), and, per
persona, which labelled examples to show (``examples``), possibly several perturbed sets whose
metrics are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from omegaconf import DictConfig

from plural_icm.conditions.labels import cap_search_claims, subset_for_n_examples
from plural_icm.data.records import Claim, ClaimSet
from plural_icm.selection import per_query

Examples = list[tuple[Claim, bool]]


@dataclass
class ConditionLabels:
    """The in-context examples of one persona under a condition."""

    examples: Examples
    """The labelled examples shown (the first perturbation's, when there are several sets)."""
    perturbations: list[Examples] | None = None
    """Several example sets to average over (each one is predicted and scored on its own)."""
    metrics: dict[str, float | None] = field(default_factory=dict)
    """Scalar values reported per persona and averaged over personas (e.g. ``icm_label_accuracy``)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Per-persona records written beside the metrics, not averaged (e.g. the perturbations)."""
    confidence: dict[str, float] = field(default_factory=dict)
    """item id -> the probability the condition gives its label, where it has one (ICM's search):
    SPICA's label-free group terms read it (plural_icm.selection)."""


@dataclass
class CellInputs:
    """What a condition may use: the cell's config and data, the base model (loaded on the first
    call), and the best ICM search per persona (present when the condition ``needs_search``)."""

    cfg: DictConfig
    claimset: ClaimSet
    base_model: Callable[[], Any]
    searches: Mapping[str, Any] = field(default_factory=dict)

    def search_claims(self, persona_id: str) -> list[Claim]:
        """The persona's training claims a search labels (capped by ``dataset.max_search_claims``)."""
        train, _ = self.claimset.split(self.cfg.fold, persona_id)
        return cap_search_claims(train, self.cfg.dataset.max_search_claims, int(self.cfg.seed))

    def chosen(self, persona_id: str) -> list[Claim]:
        """The claims shown as examples: the same subset for every condition (``inference.n_examples``).
        Under a per-query selection (``selection`` other than ``all``) every search claim is
        labelled, and ``n_examples`` is the number each query is shown (plural_icm.selection)."""
        n = None if per_query(self.cfg) else self.cfg.inference.n_examples
        return subset_for_n_examples(self.search_claims(persona_id), n, int(self.cfg.seed))


def ordered_examples(labels: ConditionLabels, cfg: DictConfig, persona_id: str) -> ConditionLabels:
    """The examples in the order ``inference.example_order`` asks for: ``shuffled`` (default, as the
    paper's fork) permutes them with a seed of (``seed``, persona), the same permutation of the
    claims for every example set of the persona, so the perturbations differ only in labels;
    ``loader`` keeps the data's order."""
    import random

    from plural_icm.conditions.labels import _stable_int

    if cfg.inference.get("example_order", "shuffled") == "loader":  # a str Enum: == its value
        return labels
    ids = sorted(c.item_id for c, _ in labels.examples)
    random.Random(_stable_int(int(cfg.seed), f"example_order:{persona_id}")).shuffle(ids)
    rank = {i: k for k, i in enumerate(ids)}
    order = lambda ex: sorted(ex, key=lambda cy: rank.get(cy[0].item_id, len(rank)))
    perts = [order(p) for p in labels.perturbations] if labels.perturbations else labels.perturbations
    return ConditionLabels(examples=order(labels.examples), perturbations=perts,
                           metrics=labels.metrics, details=labels.details)


class Condition:
    """A few-shot condition. Subclasses set ``name`` and implement :meth:`examples`."""

    name: ClassVar[str]
    needs_search: ClassVar[bool] = False
    """True when the ICM searches of every persona must exist before :meth:`examples` runs."""
    uses_examples: ClassVar[bool] = True
    """False for zero-shot conditions (no in-context examples: the planner's cost model)."""
    uses_base_model: ClassVar[bool] = True
    """Whether :meth:`examples` may call ``inputs.base_model()`` (searches aside). A cell runs such
    work in a child process when it must not hold two engines (``model.engine_per_process``);
    True by default so that a new condition is safe until it says otherwise."""

    def n_example_sets(self, cfg: DictConfig) -> int:
        """How many example sets a persona is predicted with (``perturbations``; 1 without)."""
        return 1

    def model_role(self, cfg: DictConfig) -> str:
        """``instruct`` or ``base``: the checkpoint that answers (``condition.model_role``)."""
        role = cfg.condition.model_role
        if role not in ("instruct", "base"):
            raise ValueError(f"condition.model_role must be 'instruct' or 'base', got {role!r}")
        return role

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        raise NotImplementedError
