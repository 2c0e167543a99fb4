"""The ICM searches of a job, for every stage that needs them (a cell's condition, a ``stage=search``
job, collaborative elicitation, the planner's search identities): which searches (per persona,
restart and search set), the base model's identity in their content address, and running,
resuming or loading them with progress and W&B rows."""

from __future__ import annotations

import logging
from typing import Any

from plural_icm.backends.settings import result_engine_settings
from plural_icm.config.settings import Settings, expect_settings
from plural_icm.conditions.labels import cap_search_claims
from plural_icm.data.records import ClaimSet
from plural_icm.pipeline.models import Backends
from plural_icm.search.engine import SearchParams
from plural_icm.pipeline.search_start import base_model_for_searches
from plural_icm.search.progress import SearchProgress
from plural_icm.search.store import SearchTask, all_on_disk, run_or_load
from plural_icm.search.units import best_per_persona, search_sets
from plural_icm.tracking.searches import SearchTracker

log = logging.getLogger(__name__)

__all__ = ["search_tasks", "model_identity", "run_searches_for", "searches_on_disk", "icm_protocol"]


# -- ICM searches -----------------------------------------------------------------------------

def search_tasks(settings: Settings, claimset: ClaimSet, backend_identity: dict,
                 personas: list[str], fold: int, fixed: dict[str, dict[str, bool]] | None = None):
    """The ICM searches a cell needs: per persona, restart and search set (icm.search_unit: the
    training claims, or each training fold part of them; plural_icm.search.units)."""
    s = expect_settings(settings, "search_tasks")
    icm = s.icm
    params = SearchParams.from_settings(icm)
    unit = icm.search_unit.value
    tasks = []
    for pid in personas:
        train, _ = claimset.split(fold, pid)
        train = cap_search_claims(train, s.dataset.max_search_claims, s.seed)
        if not train:  # all its items are in the held-out fold: nothing to search (the cell warns)
            log.warning("%s fold %s: persona %r has no training claims; no ICM search for it",
                        s.dataset.name, fold, pid)
            continue
        pid_fixed = (fixed or {}).get(pid, {})
        for part, claims in search_sets(train, claimset.folds, unit):
            ids = {c.item_id for c in claims}
            for r in range(icm.restarts):
                tasks.append(SearchTask(
                    model=s.model.name, dataset=s.dataset.name,
                    fold=fold if part is None else part, persona=pid, claims=claims,
                    rule=claimset.rule, params=params, seed=s.seed * 1000 + r,
                    template=icm.template, labels=tuple(icm.labels),
                    model_identity=backend_identity,
                    fixed={k: v for k, v in pid_fixed.items() if k in ids},
                    search_unit=unit, part=part))
    return tasks


def model_identity(settings: Settings) -> dict:
    """What identifies the base model for search hashing, without loading it."""
    model = expect_settings(settings, "model_identity").model
    return {"backend": model.backend.value, "model": model.base,
            "revision": model.revision, "dtype": model.dtype,
            **result_engine_settings(model)}


def run_searches_for(settings: Settings, claimset: ClaimSet, personas: list[str],
                     backends: Backends, fixed: dict[str, dict[str, bool]] | None = None,
                     desc: str = "ICM search", wb: Any = None) -> dict[str, Any]:
    """Best-of-restarts ICM search result per persona (run, resumed or loaded; the parts of a
    persona merged when icm.search_unit=part)."""
    s = settings
    tasks = search_tasks(s, claimset, model_identity(s), personas, s.fold, fixed)
    progress = SearchProgress(tasks, s.paths.searches_dir, desc, enabled=s.progress)
    tracker = SearchTracker(wb, s.paths.searches_dir)

    def on_iteration(task, row):
        progress(task, row)
        tracker.on_iteration(task, row)

    # the bar names the phase, the prefix cache is sized (one line): pipeline/search_start.py
    base_model, release = base_model_for_searches(lambda: backends.get("base"), tasks, progress)

    try:
        stored = run_or_load(tasks, s.paths.searches_dir, base_model, on_iteration)
    finally:
        progress.close()
        release()
    tracker.finished(stored)
    by_persona: dict[str, list] = {}
    for got in stored:
        by_persona.setdefault(got.task.persona, []).append(got)
    for pid, ss in by_persona.items():
        for got in ss:
            log.info("search %s fold %d seed %d: %s (%s)", pid, s.fold, got.task.seed,
                     "computed" if got.computed else "loaded", got.path)
            if got.summary.warning:
                log.warning("search %s (%s): %s", pid, got.path, got.summary.warning)
    return best_per_persona(stored)


def searches_on_disk(settings: Settings, claimset: ClaimSet, personas: list[str]) -> bool:
    """Whether every search of these personas (no fixed labels) is complete on disk: loading them
    needs no model."""
    s = settings
    tasks = search_tasks(s, claimset, model_identity(s), personas, s.fold, None)
    return all_on_disk(tasks, s.paths.searches_dir)


def icm_protocol(settings: Settings) -> dict:
    """The ICM settings a number depends on beyond the hyperparameters, for the result's meta."""
    icm = settings.icm
    return {"icm_preset": icm.preset, "search_unit": icm.search_unit.value,
            "seed_labels": icm.seed_labels.value, "context_order": icm.context_order.value}
