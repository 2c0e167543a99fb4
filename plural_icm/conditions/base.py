"""The interface of a condition, and what it is given and returns.

A cell asks its condition three things: does it need the ICM searches of the cell's personas
(``needs_search``), which checkpoint answers the in-context prompts (``model_role``), and, per
persona, which labelled examples to show (``examples``), possibly several perturbed sets whose
metrics are averaged. The planner asks two more, which a condition must declare (registration
refuses a condition that does not): ``uses_examples`` and ``n_example_sets``.

A condition reads its own keys of ``condition.*`` as its ``settings_class`` (a frozen dataclass,
a subclass of :class:`ConditionSettings`), built by the registry from the typed condition
section; the other settings it may read are typed parts handed in :class:`CellInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional

from plural_icm.conditions.labels import cap_search_claims, subset_for_n_examples
from plural_icm.data.records import Claim, ClaimSet

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


@dataclass(frozen=True)
class ConditionSettings:
    """The keys of ``condition.*`` every condition has; a condition with keys of its own declares
    a frozen subclass with them (its ``settings_class``). Each field is a key of
    ``conf/condition/<name>.yaml``; the defaults are those of the config schema's
    ``ConditionConfig``, the record's shape (a test checks they agree)."""

    model_role: str = "instruct"
    """Which checkpoint answers: ``instruct`` or ``base`` (zero_shot_base)."""


@dataclass
class CellInputs:
    """What a condition may use, typed: its own settings, the cell's data, the base model (loaded
    on the first call), the best ICM search per persona (present when the condition
    ``needs_search``), and the parts of the job's settings a condition reads."""

    settings: ConditionSettings
    """The condition's own settings (an instance of its ``settings_class``)."""
    claimset: ClaimSet
    base_model: Callable[[], Any]
    searches: Mapping[str, Any] = field(default_factory=dict)
    icm: Any = None
    """The typed ICM settings (``ICMConfig``): the prompt, the labels, the search's parameters
    (``SearchParams.from_settings(icm)``)."""
    dataset: Any = None
    """The typed dataset settings (``max_search_claims``, ``acc_matched_construction``)."""
    fold: int = 0
    seed: int = 0
    n_examples: Optional[int] = None
    """Example claims per persona (``inference.n_examples``); None: every search claim (also under
    a per-query selection, where ``n_examples`` is the number each query is shown)."""
    progress: bool = False

    def search_claims(self, persona_id: str) -> list[Claim]:
        """The persona's training claims a search labels (capped by ``dataset.max_search_claims``)."""
        train, _ = self.claimset.split(self.fold, persona_id)
        return cap_search_claims(train, self.dataset.max_search_claims, self.seed)

    def chosen(self, persona_id: str) -> list[Claim]:
        """The claims shown as examples: the same subset for every condition (:attr:`n_examples`)."""
        return subset_for_n_examples(self.search_claims(persona_id), self.n_examples, self.seed)


def ordered_examples(labels: ConditionLabels, s: Any, persona_id: str) -> ConditionLabels:
    """The examples in the order ``inference.example_order`` asks for: ``shuffled`` (default, as the
    paper's fork) permutes them with a seed of (``seed``, persona), the same permutation of the
    claims for every example set of the persona, so the perturbations differ only in labels;
    ``loader`` keeps the data's order. ``s``: the job's typed settings (``seed``,
    ``inference.example_order``)."""
    import random

    from plural_icm.conditions.labels import _stable_int

    if s.inference.example_order == "loader":  # a str Enum: == its value
        return labels
    ids = sorted(c.item_id for c, _ in labels.examples)
    random.Random(_stable_int(int(s.seed), f"example_order:{persona_id}")).shuffle(ids)
    rank = {i: k for k, i in enumerate(ids)}
    order = lambda ex: sorted(ex, key=lambda cy: rank.get(cy[0].item_id, len(rank)))
    perts = [order(p) for p in labels.perturbations] if labels.perturbations else labels.perturbations
    return ConditionLabels(examples=order(labels.examples), perturbations=perts,
                           metrics=labels.metrics, details=labels.details)


class Condition:
    """A few-shot condition. Subclasses set ``name``, declare ``uses_examples`` and
    ``n_example_sets`` (the planner's cost; :func:`plural_icm.conditions.registry.register`
    refuses a condition that leaves either undeclared) and implement :meth:`examples`."""

    name: ClassVar[str]
    settings_class: ClassVar[type[ConditionSettings]] = ConditionSettings
    """The condition's own keys of ``condition.*``, typed (a frozen :class:`ConditionSettings`)."""
    needs_search: ClassVar[bool] = False
    """True when the ICM searches of every persona must exist before :meth:`examples` runs."""
    uses_examples: ClassVar[bool]
    """False for zero-shot conditions (no in-context examples: the planner's cost model)."""
    ignores: ClassVar[tuple[str, ...]] = ()
    """Dotted config keys the condition never reads, left out of its cells' fingerprint: a cell
    reused under other values of them is the same computation (zero-shot: the ICM settings and the
    search cap), so changing them neither recomputes it nor conflicts with it."""
    uses_base_model: ClassVar[bool] = True
    """Whether :meth:`examples` may call ``inputs.base_model()`` (searches aside). A cell runs such
    work in a child process when it must not hold two engines (``model.engine_per_process``);
    True by default so that a new condition is safe until it says otherwise."""

    def n_example_sets(self, settings: ConditionSettings, dataset: Any) -> int:
        """How many example sets a persona is predicted with (``perturbations``; 1 without), from
        the condition's settings and the typed dataset settings."""
        raise NotImplementedError

    def model_role(self, settings: ConditionSettings) -> str:
        """``instruct`` or ``base``: the checkpoint that answers (``condition.model_role``)."""
        role = settings.model_role
        if role not in ("instruct", "base"):
            raise ValueError(f"condition.model_role must be 'instruct' or 'base', got {role!r}")
        return role

    def examples(self, inputs: CellInputs, persona_id: str) -> ConditionLabels:
        raise NotImplementedError


def one_example_set(self: Condition, settings: ConditionSettings, dataset: Any) -> int:
    """``n_example_sets`` of a condition that shows one example set per persona."""
    return 1
