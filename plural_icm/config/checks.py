"""Value checks of a composed config, run before anything is written.

The schemas (:mod:`plural_icm.config.schema`) check keys and types; these check values: every
float is finite (``icm.alpha=nan`` is refused), counts are positive, fractions lie in their
interval, ``fold`` is one of the folds the dataset config declares, path settings are not empty. Each error names
the key, the value and what is accepted (:class:`plural_icm.errors.ConfigError`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from plural_icm.data.registry import kfold_loaders
from plural_icm.errors import ConfigError

#: Loaders whose folds are a k-fold split of ``dataset.n_folds`` (OvertonBench has one fixed
#: search/test split: its only fold, 0, is checked against the data when it is loaded).
KFOLD_LOADERS = kfold_loaders()  # the loaders that declare k folds (LoaderSpec.kfold)
PATH_KEYS = ("output_dir", "results_dir", "searches_dir", "cache_dir", "root_dir")
SELECTIONS = ("confidence", "random", "active")


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config: {key}={value!r} is not accepted; expected {expected}")


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _walk(node: Any, prefix: str = ""):
    """(dotted key, value) of every leaf (unresolvable interpolations are skipped)."""
    if isinstance(node, DictConfig):
        for k in node.keys():
            try:
                v = node[k]
            except Exception:  # an interpolation that only resolves inside Hydra
                continue
            yield from _walk(v, f"{prefix}{k}.")
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _walk(node[i], f"{prefix}{i}.")
    else:
        yield prefix[:-1], node


def check_finite_numbers(cfg: DictConfig) -> None:
    """Every float in the config is finite (``nan`` and ``inf`` are never meaningful here)."""
    for key, value in _walk(cfg):
        if key.startswith("hydra."):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(key, value, "a finite number")


def _get(cfg: DictConfig, key: str) -> Any:
    return _plain(OmegaConf.select(cfg, key, default=None))


def _int(cfg, key, lo: int | None = None, hi: int | None = None, optional: bool = False) -> None:
    v = _get(cfg, key)
    if v is None and optional:
        return
    if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or \
            (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise _fail(key, v, f"an integer {rng}" + (" or null" if optional else ""))


def _float(cfg, key, ok: Callable[[float], bool], expected: str) -> None:
    v = _get(cfg, key)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or \
            not math.isfinite(v) or not ok(float(v)):
        raise _fail(key, v, expected)


def check_paths(cfg: DictConfig) -> None:
    """Path settings are non-empty and never the file system's root."""
    for name in PATH_KEYS:
        key = f"paths.{name}"
        try:
            v = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=True)
        except Exception:  # resolvers that only exist inside Hydra
            continue
        if v is None:
            continue
        if not str(v).strip():
            raise _fail(key, v, "a directory (an empty setting is not one; unset the "
                                "environment variable instead of setting it to '')")
        p = Path(str(v)).expanduser()
        if p.is_absolute() and p == Path(p.anchor):
            raise _fail(key, v, "a directory below the file system's root")


#: The most restarts one cell may ask for: each is a separate search (task, directory, model
#: calls); ``icm.restarts=1000000000`` once spent its time building the task list.
MAX_RESTARTS = 1000


def check_bounds(cfg: DictConfig) -> None:
    """Values that are each fine alone but not together, and upper bounds on counts."""
    if OmegaConf.select(cfg, "icm") is not None:
        _int(cfg, "icm.restarts", 1, MAX_RESTARTS)
        hot, cold = _get(cfg, "icm.initial_temp"), _get(cfg, "icm.final_temp")
        if isinstance(hot, (int, float)) and isinstance(cold, (int, float)) and hot < cold:
            raise _fail("icm.initial_temp", hot, f"a temperature >= icm.final_temp={cold!r} "
                                                 f"(the schedule cools from initial to final)")
    if OmegaConf.select(cfg, "inference") is not None:
        _int(cfg, "inference.n_examples", 1, optional=True)
    tol = OmegaConf.select(cfg, "dataset.options.share_sum_tolerance", default=None)
    if tol is not None:
        _float(cfg, "dataset.options.share_sum_tolerance", lambda v: 0 <= v < 1,
               "a number in [0, 1)")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first key whose value is outside what is accepted."""
    check_finite_numbers(cfg)
    check_paths(cfg)
    check_bounds(cfg)
    tag = _get(cfg, "run_tag")
    if tag is not None and (not str(tag).strip() or "/" in str(tag) or str(tag) in (".", "..")):
        raise _fail("run_tag", tag, "a plain name (it is one directory of the result path)")
    _int(cfg, "seed", 0)
    _int(cfg, "fold", 0)
    if OmegaConf.select(cfg, "dataset") is not None:
        # Every dataset, by what its config declares (``dataset.n_folds``; OvertonBench's one
        # fixed split declares 1). What the loader itself declares (a fixed split whatever
        # n_folds says, folds carried by the files) is checked where the loaders are known:
        # plural_icm.data.registry.check_fold, called by the task and by stage=plan.
        n_folds = _get(cfg, "dataset.n_folds")
        least = 2 if _get(cfg, "dataset.loader") in KFOLD_LOADERS else 1
        if not isinstance(n_folds, int) or isinstance(n_folds, bool) or n_folds < least:
            raise _fail("dataset.n_folds", n_folds, "an integer >= 2 (the folds of a k-fold "
                                                    "split), or 1 for a dataset with one fixed split")
        if _get(cfg, "fold") >= n_folds:
            raise _fail("fold", _get(cfg, "fold"),
                        ("0, the dataset's only fold" if n_folds == 1 else
                         f"one of the dataset's folds 0..{n_folds - 1}")
                        + f" (dataset {_get(cfg, 'dataset.name')!r} declares n_folds={n_folds})")
        _int(cfg, "dataset.split_seed", 0)
        _int(cfg, "dataset.max_search_claims", 1, optional=True)
    if OmegaConf.select(cfg, "icm") is not None:
        _float(cfg, "icm.alpha", lambda v: v > 0, "a finite number > 0")
        _int(cfg, "icm.num_seed", 0)
        _int(cfg, "icm.max_iters", 0)
        _float(cfg, "icm.initial_temp", lambda v: v > 0, "a finite number > 0")
        _float(cfg, "icm.final_temp", lambda v: v > 0, "a finite number > 0")
        _float(cfg, "icm.decay", lambda v: 0 < v <= 1, "a number in (0, 1]")
        _float(cfg, "icm.log_schedule_constant", lambda v: v >= 0, "a finite number >= 0")
        _float(cfg, "icm.unlabelled_weight", lambda v: v > 0, "a finite number > 0")
        _int(cfg, "icm.patience", 1, optional=True)  # null: no early stop (the published algorithm)
        _int(cfg, "icm.restarts", 1)
        _int(cfg, "icm.fix_max_rounds", 0)
        _int(cfg, "icm.checkpoint_every", 1)
        _two_labels(cfg, "icm.labels")
    if OmegaConf.select(cfg, "inference") is not None:
        _int(cfg, "inference.n_examples", 0, optional=True)
        _int(cfg, "inference.max_new_tokens", 1)
        order = _get(cfg, "inference.example_order")
        if order is not None and order not in ("shuffled", "loader"):
            raise _fail("inference.example_order", order, "'shuffled' (the paper's fork) or 'loader'")
        _two_labels(cfg, "inference.labels")
    if OmegaConf.select(cfg, "condition") is not None:
        _int(cfg, "condition.n_perturbations", 1)
        _float(cfg, "condition.accuracy_tolerance", lambda v: v >= 0, "a finite number >= 0")
        _int(cfg, "condition.max_perturbation_tries", 1)
        role = _get(cfg, "condition.model_role")
        if role not in ("instruct", "base"):
            raise _fail("condition.model_role", role, "'instruct' or 'base'")
    if OmegaConf.select(cfg, "model") is not None:
        _int(cfg, "model.max_context", 1)
        _int(cfg, "model.batch_size", 1)
        _int(cfg, "model.tensor_parallel_size", 1)
        _float(cfg, "model.gpu_memory_utilization", lambda v: 0 < v <= 1, "a number in (0, 1]")
    if OmegaConf.select(cfg, "collaborative") is not None:
        _int(cfg, "collaborative.k_per_fold", 1)
        _int(cfg, "collaborative.rounds", 1)
        sel = list(OmegaConf.select(cfg, "collaborative.selection") or [])
        if not sel or any(s not in SELECTIONS for s in sel):
            raise _fail("collaborative.selection", sel, f"a non-empty list of {list(SELECTIONS)}")


def _two_labels(cfg: DictConfig, key: str) -> None:
    labels = list(OmegaConf.select(cfg, key) or [])
    if len(labels) != 2 or len(set(labels)) != 2 or not all(str(x).strip() for x in labels):
        raise _fail(key, labels, "two different non-empty strings (True first, then False)")


__all__ = ["validate_config", "check_finite_numbers", "check_paths", "check_bounds",
           "KFOLD_LOADERS", "MAX_RESTARTS"]
