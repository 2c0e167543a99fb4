"""``load_claimset(cfg)``: the one entry point from a dataset config to a :class:`ClaimSet`.

Dispatches on ``cfg.loader`` (``gqa``, ``oqa``, ``pt``, ``ot``, ``demo``), assigns folds and keeps
the personas of ``cfg.personas`` (empty: all).

Folds are assigned on the *full* dataset before the persona filter, so a run restricted to some
personas sees the same split as a run on all of them. GQA/OQA/PT (and demo when its file carries no
folds): :func:`plural_icm.data.folds.assign_folds` with ``cfg.n_folds`` and ``cfg.split_seed``.
OT: its fixed search/test split (:func:`plural_icm.data.ot.search_test_split`): test questions are
fold 0, search questions -1, so ``ClaimSet.split(0)`` returns (search, test) and 0 is its only fold.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable

from plural_icm.data.folds import assign_folds
from plural_icm.data.reading import option_number
from plural_icm.data.records import ClaimSet
from plural_icm.errors import ConfigError
from plural_icm.data.sources import as_list, cfg_get, cfg_options

log = logging.getLogger(__name__)

#: loader name -> (module, function); imported lazily.
LOADERS: dict[str, tuple[str, str]] = {
    "gqa": ("plural_icm.data.gqa", "load_gqa"),
    "oqa": ("plural_icm.data.oqa", "load_oqa"),
    "pt": ("plural_icm.data.pt", "load_pt"),
    "ot": ("plural_icm.data.ot", "load_ot"),
    "demo": ("plural_icm.data.demo", "load_demo"),
}


def _loader(name: str) -> Callable[..., ClaimSet]:
    if name not in LOADERS:
        raise ConfigError(f"dataset.loader={name!r} is unknown; valid loaders: "
                         f"{sorted(LOADERS)}")
    module, func = LOADERS[name]
    return getattr(importlib.import_module(module), func)


def load_claimset(cfg: Any, data_dir: str | Path | None = None) -> ClaimSet:
    """Load, split and persona-filter the dataset described by ``cfg`` (a DatasetConfig-like)."""
    name = str(cfg_get(cfg, "loader", "") or "")
    load = _loader(name)
    n_folds = cfg_get(cfg, "n_folds", 4)
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 1:
        raise ConfigError(f"dataset.n_folds={n_folds!r} is not accepted; expected an integer >= 1")
    seed = int(cfg_get(cfg, "split_seed", 0) or 0)
    if name == "demo":
        claimset = load(n_folds=n_folds, split_seed=seed)
    else:
        claimset = load(cfg, data_dir)
    if not claimset.claims:
        raise ConfigError(f"dataset {cfg_get(cfg, 'name', name)!r} (loader {name}) produced no "
                         f"claims: {claimset.description}")

    if name == "ot":
        from plural_icm.data.ot import search_test_split

        fraction = option_number(cfg_options(cfg), "search_fraction", 0.3, "ot", lo=0, hi=1,
                                 open_interval=True)
        claimset.folds = search_test_split(claimset.claims, fraction, seed)
    elif name != "demo" or not claimset.folds:
        claimset.folds = assign_folds(claimset.claims, n_folds, seed)
    missing = {c.question_id for c in claimset.claims} - set(claimset.folds)
    if missing:
        raise ConfigError(f"dataset {claimset.name!r}: {len(missing)} question id(s) have no fold, "
                         f"e.g. {sorted(missing)[:3]}")
    return filter_personas(claimset, [str(p) for p in as_list(cfg_get(cfg, "personas", None))])


def filter_personas(claimset: ClaimSet, wanted: list[str]) -> ClaimSet:
    """Keep only ``wanted`` personas (all when empty); unknown ids: an error listing valid ones."""
    if not wanted:
        return claimset
    valid = sorted(claimset.personas)
    unknown = [p for p in wanted if p not in claimset.personas]
    if unknown:
        raise ConfigError(f"dataset {claimset.name!r}: unknown persona(s) {unknown} in "
                         f"dataset.personas; valid persona ids: {valid}")
    keep = set(wanted)
    claims = [c for c in claimset.claims if c.persona_id in keep]
    questions = {c.question_id for c in claims}
    return ClaimSet(name=claimset.name,
                    personas={p: v for p, v in claimset.personas.items() if p in keep},
                    claims=claims, rule=claimset.rule,
                    folds={q: f for q, f in claimset.folds.items() if q in questions},
                    description=claimset.description)
