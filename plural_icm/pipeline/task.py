"""The Hydra task: dispatch a composed config to its stage, inside one W&B run.

Lives in an importable module (not ``__main__``) so that submitit can pickle it for SLURM.
"""

from __future__ import annotations

import logging
import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from plural_icm.config.checks import validate_config
from plural_icm.config.schema import check_config
from plural_icm.data.registry import load_claimset
from plural_icm.layout import cell_name
from plural_icm.pipeline.cell import run_cell
from plural_icm.pipeline.models import Backends
from plural_icm.pipeline.searches import run_searches_for
from plural_icm.pipeline.collaborative import run_collaborative
from plural_icm.pipeline.slurm import check_allocation, in_slurm_job
from plural_icm.pipeline.stats_stage import run_data_stats
from plural_icm.pipeline.summary import print_summary
from plural_icm.tracking.wandb_run import cell_run
from plural_icm.utils.values import plain

log = logging.getLogger(__name__)


def _hydra_choices() -> dict:
    try:
        return dict(HydraConfig.get().runtime.choices)
    except Exception:  # not under Hydra (tests calling run_task directly)
        return {}


def wandb_name_and_tags(cfg: DictConfig, stage: str) -> tuple[str, dict]:
    """A readable W&B run name and the tags of one job: model, dataset, fold, the condition of a
    cell, the personas when the dataset is restricted to some."""
    tags = {"model": cfg.model.name, "dataset": cfg.dataset.name, "fold": cfg.fold}
    if stage == "cell":
        name = cell_name(cfg)
        tags["condition"] = plain(cfg.condition.name)
    else:
        name = f"{cfg.model.name}/{cfg.dataset.name}/{stage}/fold{cfg.fold}/seed{cfg.seed}"
    if cfg.dataset.personas:
        tags["persona"] = [str(p) for p in cfg.dataset.personas]
    return name, tags


def _require_icm_preset(cfg: DictConfig) -> None:
    """A model config of one's own may not name an ICM preset: never fall back to the demo one."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg, "icm"):
        raise SystemExit(f"plural_icm: no ICM preset for model {cfg.model.name}: choose one with "
                         "icm=paper (the paper's settings), icm=fork or icm=demo (12-claim laptop demo), "
                         "or add `- /icm@_global_.icm: paper` to the model config's defaults")


def _print_plan(cfg: DictConfig) -> None:
    """stage=plan without -m: the plan of this one cell (with -m the launcher plans the sweep)."""
    from plural_icm.pipeline.plan import PlanError, build_plan, format_plan

    plan = build_plan([([], cfg)])
    print(format_plan(plan), flush=True)
    try:
        plan.refuse_if_infeasible()
    except PlanError as e:
        raise SystemExit(f"plural_icm: {e}") from None
    return None




def run_task(cfg: DictConfig):
    _require_icm_preset(cfg)
    check_config(cfg)  # before anything is loaded or submitted
    validate_config(cfg)  # values (nan, n_folds=0, an empty path...) before anything is written
    if cfg.get("dataset") is not None:  # the fold against what the dataset's loader declares
        from plural_icm.data.registry import check_fold

        check_fold(cfg.dataset, int(cfg.fold))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stage = plain(cfg.stage)
    if stage == "plan":
        return _print_plan(cfg)
    if stage == "data_stats":
        return run_data_stats(cfg)
    if in_slurm_job():
        check_allocation(cfg.model)

    name, tags = wandb_name_and_tags(cfg, stage)
    with cell_run(cfg, job_type=stage, name=name, tags=tags, hydra_choices=_hydra_choices()) as wb:
        if stage == "cell":
            metrics = run_cell(cfg, wb=wb)
            print_summary(cfg, metrics)
            return metrics.get("overall", {}).get("claim_accuracy")  # the paper's metric
        if stage == "search":
            claimset = load_claimset(cfg.dataset, cfg.paths.data_dir)
            backends = Backends(cfg)
            try:
                res = run_searches_for(cfg, claimset, sorted(claimset.personas), backends, wb=wb)
            finally:
                backends.close()
            for pid, s in res.items():
                print(f"{pid}: U={s.summary.U:.2f} label_accuracy={s.summary.label_accuracy} -> {s.path}")
            return None
        if stage == "collaborative":
            return run_collaborative(cfg, wb=wb)
    from plural_icm.errors import ConfigError

    raise ConfigError(f"unknown stage {stage!r}")
