"""The dataset's settings: the schema Hydra validates (:class:`DatasetConfig`) and the frozen, typed
record every loader receives (:class:`DatasetSettings`).

They live below the config layer, so the data package types its input without importing Hydra
(:mod:`plural_icm.config.schema` re-exports :class:`DatasetConfig` for the config tree). The
defaults live in :class:`DatasetConfig` (and each loader's options dataclass) only:
:class:`DatasetSettings` has none and is built from a validated config by
:func:`plural_icm.data.registry.dataset_settings`, the one boundary from a config to typed settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Optional, TypeVar

from omegaconf import MISSING

from plural_icm.choices import ScoreMetric


@dataclass
class DatasetSizeConfig:
    """Approximate sizes for stage=plan's cost estimate (no data is loaded to plan)."""

    personas: int = 1
    claims_per_persona: int = 100
    """All claims of one persona, before the fold split."""
    tokens_per_claim: int = 45
    """Tokens of one rendered claim (question, claim, label)."""
    max_claims_per_persona: Optional[int] = None
    """The largest persona's claims (the context check sizes its longest prompt by it); None:
    ``claims_per_persona``."""
    max_tokens_per_claim: Optional[int] = None
    """Tokens of the longest rendered claim (the query of the longest prompt); None:
    ``tokens_per_claim``."""


@dataclass
class DatasetConfig:
    name: str = MISSING
    """Short name used in result paths (``gqa``)."""
    loader: str = MISSING
    """A loader of :data:`plural_icm.data.registry.LOADERS` (``demo``, ``gqa``, ``oqa``, ...)."""
    source: str = ""
    """The public source (hub dataset id and file, or release layout) for users with network."""
    path: Optional[str] = None
    """A local copy; takes precedence over downloading."""
    personas: list[str] = field(default_factory=list)
    """Subset of persona ids; empty means all."""
    n_folds: int = 4
    split_seed: int = 0
    max_search_claims: Optional[int] = None
    """Cap on claims per search (per persona and fold); None uses all training claims."""
    open_ended: bool = False
    """Open-ended data (OvertonBench): cells also generate steered answers rated by an LM judge."""
    skip_bad_rows: bool = False
    """Skip malformed rows (with a count in the log) instead of failing on the first one."""
    options: dict[str, Any] = field(default_factory=dict)
    """Loader-specific options, typed and validated by the loader's options dataclass
    (:data:`plural_icm.data.registry.LOADERS`): an unknown key or a wrong type is an error."""
    score_metric: ScoreMetric = ScoreMetric.claim_accuracy
    """The metric the analysis reports as this dataset's score."""
    acc_matched_construction: Optional[str] = None
    """Which of the paper fork's accuracy-matched constructions ``condition=acc_matched`` uses on
    this dataset: ``gold_flip`` (persona datasets: flip as many random training claims of the GOLD
    labels as ICM got wrong) or ``fix_break`` (OpinionQA: fix ICM's errors, break as many of its
    right claims); None: ``gold_flip``."""
    size: DatasetSizeConfig = field(default_factory=DatasetSizeConfig)


Options = TypeVar("Options")


@dataclass(frozen=True)
class DatasetSettings(Generic[Options]):
    """A dataset config after validation: what a loader receives (``load_x(dataset, data_dir)``).

    The fields are :class:`DatasetConfig`'s (a test keeps the two in step), without defaults;
    ``options`` is the loader's own options dataclass instance (``GQAOptions``, ...), validated
    once by :func:`plural_icm.data.registry.validated_options`.
    """

    name: str
    loader: str
    source: str
    path: Optional[str]
    personas: tuple[str, ...]
    n_folds: int
    split_seed: int
    max_search_claims: Optional[int]
    open_ended: bool
    skip_bad_rows: bool
    options: Options
    score_metric: ScoreMetric
    acc_matched_construction: Optional[str]
    size: DatasetSizeConfig


__all__ = ["DatasetConfig", "DatasetSettings", "DatasetSizeConfig"]
