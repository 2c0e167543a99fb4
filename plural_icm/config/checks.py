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

from plural_icm.config.settings import Settings, typed
from plural_icm.data.registry import declares_kfold
from plural_icm.errors import ConfigError

PATH_KEYS = ("output_dir", "results_dir", "searches_dir", "cache_dir", "root_dir")
SELECTIONS = ("confidence", "random", "active")


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config: {key}={value!r} is not accepted; expected {expected}")


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


def _at(s: Any, key: str) -> Any:
    """The typed value at dotted ``key`` of the settings (attributes of the typed parts)."""
    node = s
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _int(s, key, lo: int | None = None, hi: int | None = None, optional: bool = False) -> None:
    v = _at(s, key)
    if v is None and optional:
        return
    if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or \
            (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise _fail(key, v, f"an integer {rng}" + (" or null" if optional else ""))


def _float(s, key, ok: Callable[[float], bool], expected: str) -> None:
    v = _at(s, key)
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


def check_bounds(s: Settings) -> None:
    """Values that are each fine alone but not together, and upper bounds on counts."""
    if s.icm is not None:
        _int(s, "icm.restarts", 1, MAX_RESTARTS)
        hot, cold = s.icm.initial_temp, s.icm.final_temp
        if hot < cold:
            raise _fail("icm.initial_temp", hot, f"a temperature >= icm.final_temp={cold!r} "
                                                 f"(the schedule cools from initial to final)")
    _int(s, "inference.n_examples", 1, optional=True)


def check_dataset_options(cfg: DictConfig) -> None:
    """The one option shared by loaders that the config check bounds before any data is read
    (``dataset.options`` is typed by each loader's own dataclass, in the data registry)."""
    tol = OmegaConf.select(cfg, "dataset.options.share_sum_tolerance", default=None)
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float))
                            or not math.isfinite(tol) or not 0 <= tol < 1):
        raise _fail("dataset.options.share_sum_tolerance", tol, "a number in [0, 1)")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first key whose value is outside what is accepted:
    the composed tree's leaves (finite numbers, paths, the dataset's options), then the typed
    settings (:func:`check_settings`)."""
    check_finite_numbers(cfg)
    check_paths(cfg)
    check_dataset_options(cfg)
    check_settings(typed(cfg))


def check_settings(s: Settings) -> None:
    """The value checks on typed settings (enumerations are already checked by their types)."""
    check_bounds(s)
    tag = s.run_tag
    if not tag.strip() or "/" in tag or tag in (".", ".."):
        raise _fail("run_tag", tag, "a plain name (it is one directory of the result path)")
    _int(s, "seed", 0)
    _int(s, "fold", 0)
    # Every dataset, by what its config declares (``dataset.n_folds``; OvertonBench's one fixed
    # split declares 1). What the loader itself declares (a fixed split whatever n_folds says,
    # folds carried by the files) is checked where the loaders are known:
    # plural_icm.data.registry.check_fold, called by the task and by stage=plan.
    n_folds = s.dataset.n_folds
    least = 2 if declares_kfold(s.dataset.loader) else 1
    if n_folds < least:
        raise _fail("dataset.n_folds", n_folds, "an integer >= 2 (the folds of a k-fold "
                                                "split), or 1 for a dataset with one fixed split")
    if s.fold >= n_folds:
        raise _fail("fold", s.fold,
                    ("0, the dataset's only fold" if n_folds == 1 else
                     f"one of the dataset's folds 0..{n_folds - 1}")
                    + f" (dataset {s.dataset.name!r} declares n_folds={n_folds})")
    _int(s, "dataset.split_seed", 0)
    _int(s, "dataset.max_search_claims", 1, optional=True)
    if s.icm is not None:
        _float(s, "icm.alpha", lambda v: v > 0, "a finite number > 0")
        _int(s, "icm.num_seed", 0)
        _int(s, "icm.max_iters", 0)
        _float(s, "icm.initial_temp", lambda v: v > 0, "a finite number > 0")
        _float(s, "icm.final_temp", lambda v: v > 0, "a finite number > 0")
        _float(s, "icm.decay", lambda v: 0 < v <= 1, "a number in (0, 1]")
        _float(s, "icm.log_schedule_constant", lambda v: v >= 0, "a finite number >= 0")
        _float(s, "icm.unlabelled_weight", lambda v: v > 0, "a finite number > 0")
        _int(s, "icm.patience", 1, optional=True)  # null: no early stop (the published algorithm)
        _int(s, "icm.restarts", 1)
        _int(s, "icm.fix_max_rounds", 0)
        _int(s, "icm.checkpoint_every", 1)
        _two_labels("icm.labels", s.icm.labels)
    _int(s, "inference.n_examples", 0, optional=True)
    _int(s, "inference.max_new_tokens", 1)
    _two_labels("inference.labels", s.inference.labels)
    _int(s, "condition.n_perturbations", 1)
    _float(s, "condition.accuracy_tolerance", lambda v: v >= 0, "a finite number >= 0")
    _int(s, "condition.max_perturbation_tries", 1)
    if s.condition.model_role not in ("instruct", "base"):
        raise _fail("condition.model_role", s.condition.model_role, "'instruct' or 'base'")
    _int(s, "model.max_context", 1)
    _int(s, "model.batch_size", 1)
    _int(s, "model.tensor_parallel_size", 1)
    _float(s, "model.gpu_memory_utilization", lambda v: 0 < v <= 1, "a number in (0, 1]")
    _int(s, "collaborative.k_per_fold", 1)
    _int(s, "collaborative.rounds", 1)
    sel = list(s.collaborative.selection)
    if not sel or any(x not in SELECTIONS for x in sel):
        raise _fail("collaborative.selection", sel, f"a non-empty list of {list(SELECTIONS)}")


def _two_labels(key: str, labels: Any) -> None:
    labels = list(labels or [])
    if len(labels) != 2 or len(set(labels)) != 2 or not all(str(x).strip() for x in labels):
        raise _fail(key, labels, "two different non-empty strings (True first, then False)")


__all__ = ["validate_config", "check_settings", "check_finite_numbers", "check_paths",
           "check_bounds", "MAX_RESTARTS"]
