"""``load_claimset(cfg)``: the one entry point from a dataset config to a :class:`ClaimSet`.

Every loader has one signature, ``load(cfg, data_dir) -> ClaimSet``, and one options dataclass (the
typed schema of ``dataset.options``), registered in :data:`LOADERS` by name. ``cfg`` is the dataset
config with ``options`` already validated against that dataclass (an unknown key or a wrong type is
an error naming ``dataset.options.<key>`` and the valid keys) and its defaults filled in.

A loader may return its own folds (OvertonBench's fixed search/test split; a claims file that
carries folds); otherwise folds are assigned here on the *full* dataset, before the persona filter,
so a run restricted to some personas sees the same split as a run on all of them
(:func:`plural_icm.data.folds.assign_folds` with ``cfg.n_folds`` and ``cfg.split_seed``).

Adding a dataset: a module with ``load_x(cfg, data_dir)`` and an ``XOptions`` dataclass, one line
in :data:`LOADERS`, and ``conf/dataset/x.yaml`` (``loader: x``, ``score_metric``, ``options``).
OT's loader brings its fixed search/test split (:func:`plural_icm.data.ot.search_test_split`): test
questions are fold 0, search questions -1, so ``ClaimSet.split(0)`` returns (search, test) and 0 is
its only fold.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
from pathlib import Path
from typing import Any, Callable, NamedTuple

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from plural_icm.data.folds import assign_folds
from plural_icm.data.records import ClaimSet
from plural_icm.errors import ConfigError
from plural_icm.data.sources import as_list, cfg_get, cfg_options

log = logging.getLogger(__name__)


class LoaderSpec(NamedTuple):
    module: str
    function: str
    """``function(cfg, data_dir) -> ClaimSet``."""
    options: str
    """The dataclass (in ``module``) that types and validates ``dataset.options``."""
    kfold: bool = False
    """Its questions are split here into ``dataset.n_folds`` >= 2 folds, so the config check
    refuses ``fold >= n_folds`` before a job runs (:func:`plural_icm.config.checks.validate_config`).
    False: the loader brings its own split (OT). The demo and claim files are k-fold too: with one
    fold a cell would search on nothing and score its test fold against no examples."""
    stats: str | None = None
    """A function of ``module``, ``stats(cfg, data_dir) -> str``: what ``stage=data_stats`` prints
    for this dataset after the common table (:func:`plural_icm.data.stats.data_stats_report`)."""
    folds: str | None = None
    """A function of ``module``, ``folds(cfg) -> int``: how many folds the loader itself brings (a
    fixed split, folds carried by the files), given the validated config. None: ``dataset.n_folds``
    (at least 2 for a ``kfold`` loader: one fold must be left to search)."""


#: loader name -> where its function and options class live (imported lazily), and what it is.
LOADERS: dict[str, LoaderSpec] = {
    "gqa": LoaderSpec("plural_icm.data.gqa", "load_gqa", "GQAOptions", kfold=True,
                      stats="stats_text"),
    "oqa": LoaderSpec("plural_icm.data.oqa", "load_oqa", "OQAOptions", kfold=True),
    "pt": LoaderSpec("plural_icm.data.pt", "load_pt", "PTOptions", kfold=True, stats="stats_text"),
    "ot": LoaderSpec("plural_icm.data.ot", "load_ot", "OTOptions", folds="declared_folds"),
    "demo": LoaderSpec("plural_icm.data.demo", "load_demo", "DemoOptions", kfold=True),
    "claims": LoaderSpec("plural_icm.data.claims", "load_claims", "ClaimsOptions", kfold=True,
                         folds="declared_folds"),
    "oqa_paper": LoaderSpec("plural_icm.data.oqa_paper", "load_oqa_paper", "OQAPaperOptions",
                            folds="declared_folds"),
}


def _loader(name: str) -> tuple[Callable[..., ClaimSet], type]:
    if name not in LOADERS:
        raise ConfigError(f"dataset.loader={name!r} is unknown; valid loaders: "
                         f"{sorted(LOADERS)}")
    spec = LOADERS[name]
    module = importlib.import_module(spec.module)
    return getattr(module, spec.function), getattr(module, spec.options)


_EXPECTED = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string"}


def kfold_loaders() -> tuple[str, ...]:
    """The loaders whose folds are assigned k-fold (:attr:`LoaderSpec.kfold`)."""
    return tuple(name for name, spec in LOADERS.items() if spec.kfold)


def loader_stats_text(cfg: Any, data_dir: str | Path | None = None) -> str | None:
    """The dataset's own statistics text (:attr:`LoaderSpec.stats`), None when it declares none."""
    spec = LOADERS.get(str(getattr(cfg, "loader", "")))
    if spec is None or spec.stats is None:
        return None
    return getattr(importlib.import_module(spec.module), spec.stats)(cfg, data_dir)


def _expected(options_class: type, key: str) -> str:
    """What a field of a loader's options dataclass takes, in words (for error messages)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(options_class)}
    t = types.get(key, "")
    for name, words in _EXPECTED.items():
        if t == name or t.startswith(f"Optional[{name}]") or t.startswith(f"{name} |"):
            return words
    return "a list" if "list" in t else f"a value of type {t or 'unknown'}"


def validated_options(cfg: Any) -> dict[str, Any]:
    """``cfg.options`` checked against its loader's options dataclass, defaults filled in."""
    name = str(cfg_get(cfg, "loader", "") or "")
    _, options_class = _loader(name)
    raw = cfg_options(cfg)
    valid = [f.name for f in dataclasses.fields(options_class)]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"dataset.options.{unknown[0]} is not an option of loader {name!r}"
                         + (f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
                         + f"; valid options: {', '.join(valid) or 'none'}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(options_class), raw)
    except OmegaConfBaseException as e:
        key = str(getattr(e, "full_key", None) or getattr(e, "key", None) or "?")
        raise ConfigError(f"dataset.options.{key}={raw.get(key)!r} (loader {name!r}) is not "
                          f"accepted; expected {_expected(options_class, key)}") from None
    return OmegaConf.to_container(merged, resolve=True)


def _with_options(cfg: Any, options: dict[str, Any]) -> Any:
    """A copy of ``cfg`` whose ``options`` are ``options`` (the caller's config is not changed)."""
    if isinstance(cfg, dict):
        return {**cfg, "options": options}
    if isinstance(cfg, DictConfig):
        out = copy.deepcopy(cfg)
        with open_dict(out):
            out.options = options
        return out
    if dataclasses.is_dataclass(cfg):
        return dataclasses.replace(cfg, options=options)
    out = copy.copy(cfg)
    out.options = options
    return out


def declared_folds(cfg: Any) -> int:
    """How many folds the dataset of ``cfg`` has, by what its loader declares (no data is read):
    the loader's own ``folds`` function when it brings its folds, else ``dataset.n_folds``.
    Raises :class:`ConfigError` when a k-fold split is asked for fewer than 2 folds."""
    name = str(cfg_get(cfg, "loader", "") or "")
    _loader(name)  # an unknown loader: the error listing the valid ones
    spec = LOADERS[name]
    if spec.folds is not None:
        module = importlib.import_module(spec.module)
        return int(getattr(module, spec.folds)(_with_options(cfg, validated_options(cfg))))
    n = cfg_get(cfg, "n_folds", 4)
    least = 2 if spec.kfold else 1
    if isinstance(n, bool) or not isinstance(n, int) or n < least:
        raise ConfigError(f"dataset.n_folds={n!r} is not accepted for loader {name!r}; expected an "
                          f"integer >= {least}" + (" (a k-fold split)" if spec.kfold else ""))
    return n


def check_fold(cfg: Any, fold: int) -> None:
    """``fold`` is one of the folds the dataset declares (:func:`declared_folds`); else a
    :class:`ConfigError` naming the dataset's folds."""
    n = declared_folds(cfg)
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n:
        name = cfg_get(cfg, "name", cfg_get(cfg, "loader", "?"))
        raise ConfigError(f"config: fold={fold!r} is not accepted; dataset {name!r} declares "
                          f"{n} fold(s): expected " + ("0" if n == 1 else f"one of 0..{n - 1}"))


def load_claimset(cfg: Any, data_dir: str | Path | None = None) -> ClaimSet:
    """Load, split and persona-filter the dataset described by ``cfg`` (a DatasetConfig-like)."""
    name = str(cfg_get(cfg, "loader", "") or "")
    n_folds = cfg_get(cfg, "n_folds", 4)
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 1:
        raise ConfigError(f"dataset.n_folds={n_folds!r} is not accepted; expected an integer >= 1")
    load, _ = _loader(name)
    claimset = load(_with_options(cfg, validated_options(cfg)), data_dir)
    if not claimset.claims:
        raise ConfigError(f"dataset {cfg_get(cfg, 'name', name)!r} (loader {name}) produced no "
                         f"claims: {claimset.description}")
    if not claimset.folds:
        claimset.folds = assign_folds(claimset.claims, n_folds, int(cfg_get(cfg, "split_seed", 0) or 0))
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
