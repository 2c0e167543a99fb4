"""The search algorithm's parameters, with THE defaults of every ICM setting.

:class:`SearchParams` is what :class:`plural_icm.search.engine.ICMSearch` reads. Its defaults are
the only copy: the Hydra schema's ``ICMConfig`` (:mod:`plural_icm.config.schema`) takes its
defaults from here, and :meth:`SearchParams.from_settings` builds the parameters of a run from the
typed ``icm`` settings. This module sits below the config layer: it imports nothing of Hydra or
OmegaConf (the enumerations it reads live in :mod:`plural_icm.choices`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from plural_icm.choices import ContextOrder, Engine

#: The orders a leave-one-out context can take (:class:`plural_icm.choices.ContextOrder`).
CONTEXT_ORDERS = tuple(o.value for o in ContextOrder)


def _value(v: Any) -> Any:
    """An enumerated setting as the string the algorithm compares and stores."""
    return v.value if isinstance(v, Enum) else v


@dataclass
class SearchParams:
    """The algorithm's settings: the ``icm`` settings it reads, plus two of its own (``max_tail``,
    ``memo``). Enumerated settings are held as their string values."""

    alpha: float = 50.0
    num_seed: int = 8
    max_iters: int = 3000
    initial_temp: float = 10.0
    final_temp: float = 0.01
    decay: float = 0.99
    schedule: str = "log"
    log_schedule_constant: float = 2.0
    temperature_index: str = "accepted"  # accepted (the published code) | iteration (Wen Alg. 1)
    aggregate: str = "mean_log_odds"
    patience: int | None = 200  # None: no early stop (the published algorithm)
    fix_max_rounds: int = 10
    unlabelled_weight: float = 100.0
    checkpoint_every: int = 25
    context_order: str = "published"  # published (one global order) | halving_tail (ours, faster)
    max_tail: int = 8
    memo: bool = True           # reuse scores of identical prompts (off for the reference engine)
    seed_labels: str = "random"  # random (balanced, as the paper's text) | gold (one fork script)
    repair_seed_labels: bool = True  # ConsistencyFix on the seed labels first (Wen Alg. 1 line 2)
    # improve: a group's best repair is adopted only if it raises U (ours); first: as the paper's
    # fork, the best-scoring repair of each inconsistent group is adopted whatever U it gives
    # (its running best starts at -1e6, never compared with the unrepaired labelling).
    repair_rule: str = "improve"

    @classmethod
    def from_settings(cls, icm: Any, engine: str | Engine | None = None) -> "SearchParams":
        """The parameters of the typed ``icm`` settings (``ICMConfig``: every field of this class
        that it has; enumerations as their values). ``engine`` overrides ``icm.engine``; the
        reference engine scores the published order without the score memo."""
        kwargs = {f.name: _value(getattr(icm, f.name)) for f in fields(cls) if hasattr(icm, f.name)}
        engine = _value(engine or getattr(icm, "engine", Engine.fast))
        if engine == Engine.reference.value:
            if kwargs.get("context_order", "published") != "published":
                raise ValueError(
                    f"icm.engine=reference scores the published code's order; "
                    f"icm.context_order={kwargs['context_order']!r} is not it. Set "
                    "icm.context_order=published (or icm.engine=fast for the halving layout)")
            kwargs.update(memo=False)
        return cls(**kwargs)

    @property
    def cost_mode(self) -> str:
        """This search's mode in the cost model (:func:`plural_icm.search.cost.cost_mode`): the
        reference engine is the one configuration that scores without the memo."""
        from plural_icm.search.cost import cost_mode

        return cost_mode("fast" if self.memo else "reference", self.context_order)

    def __post_init__(self) -> None:
        if self.context_order not in CONTEXT_ORDERS:
            raise ValueError(f"icm.context_order must be one of {', '.join(CONTEXT_ORDERS)}, "
                             f"got {self.context_order!r}")


#: The algorithm's defaults, read by the config schema (one set of defaults).
DEFAULTS = SearchParams()
