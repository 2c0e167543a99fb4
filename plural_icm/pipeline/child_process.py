"""A cell's base-model work in a child process of its own (``model.engine_per_process``): the
child's exit frees every byte its engine held, which closing a vLLM engine does not reliably do.
Only needed when the cell then loads a different (instruct) checkpoint, and started only when the
condition's examples need the base model (a search not on disk, or a condition that scores with it).
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from omegaconf import DictConfig, OmegaConf

from plural_icm.backends.registry import backend_info
from plural_icm.conditions.base import Condition
from plural_icm.config.settings import Settings, expect_settings, typed
from plural_icm.data.records import ClaimSet
from plural_icm.pipeline.searches import searches_on_disk

log = logging.getLogger(__name__)

__all__ = ["base_work_in_child_process", "base_model_work_due", "run_in_child_process"]

T = TypeVar("T")


def base_work_in_child_process(settings: Settings, role: str) -> bool:
    """Whether the base model's work runs in a child process (``model.engine_per_process``; null:
    what the backend declares, e.g. vLLM, which does not reliably free GPU memory when an engine is
    closed). Only needed when the cell then loads a different (instruct) checkpoint."""
    model = expect_settings(settings, "base_work_in_child_process").model
    if role == "base" or str(model.base) == str(model.instruct):
        return False
    flag = model.engine_per_process
    return backend_info(model.backend).engine_per_process if flag is None else bool(flag)


def base_model_work_due(settings: Settings, condition: Condition, claimset: ClaimSet,
                        personas: list[str]) -> bool:
    """Whether the condition's examples need the base model: it says it uses it, or a search it
    needs is not complete on disk. Otherwise the cell never starts a child process for nothing."""
    if condition.uses_base_model:
        return True
    if not condition.needs_search:
        return False
    return not searches_on_disk(settings, claimset, personas)


def run_in_child_process(job: Callable[[Settings], T], s: Settings) -> T:
    """``job(s)`` in a fresh (spawned) process, whose exit frees every byte its engine held.
    ``job`` is a module-level function (the child imports it by name); the child gets the composed
    config, resolved, and types it again. What ``job`` writes to disk is there for the parent; its
    W&B rows are not live."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    resolved = s.composed.copy()
    OmegaConf.resolve(resolved)  # ${hydra:...} interpolations cannot resolve in the child
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_typed_job, job, resolved).result()


def _typed_job(job: Callable[[Settings], T], cfg: DictConfig) -> T:
    """The child's entry: its log format, the settings typed (the parent validated them), the job."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    return job(typed(cfg))  # the child's boundary
