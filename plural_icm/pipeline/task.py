"""The Hydra task: resolve the composed config once, dispatch it to its stage, inside one W&B run.

:func:`run_task` is every stage's entry: it hands the composed config to
:func:`plural_icm.config.settings.resolve_settings` (THE place it is validated and typed) and
passes the typed :class:`~plural_icm.config.settings.Settings` down.

Lives in an importable module (not ``__main__``) so that submitit can pickle it for SLURM.
"""

from __future__ import annotations

import logging
import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from plural_icm.config.settings import Settings, resolve_settings
from plural_icm.data.registry import load_claimset
from plural_icm.layout import cell_name
from plural_icm.pipeline.cell import run_cell
from plural_icm.pipeline.models import Backends
from plural_icm.pipeline.searches import run_searches_for
from plural_icm.pipeline.collaborative import run_collaborative
from plural_icm.pipeline.slurm import check_allocation, in_slurm_job
from plural_icm.pipeline.stats_stage import run_data_stats
from plural_icm.pipeline.summary import print_summary
from plural_icm.tracking.wandb_run import TrackingSettings, config_to_dict, job_run

log = logging.getLogger(__name__)


def _hydra_choices() -> dict:
    try:
        return dict(HydraConfig.get().runtime.choices)
    except Exception:  # not under Hydra (tests calling run_task directly)
        return {}


def wandb_name_and_tags(s: Settings, stage: str) -> tuple[str, dict]:
    """A readable W&B run name and the tags of one job: model, dataset, fold, the condition of a
    cell, the personas when the dataset is restricted to some."""
    tags = {"model": s.model.name, "dataset": s.dataset.name, "fold": s.fold}
    if stage == "cell":
        name = cell_name(s)
        tags["condition"] = s.condition.name
    else:
        name = f"{s.model.name}/{s.dataset.name}/{stage}/fold{s.fold}/seed{s.seed}"
    if s.dataset.personas:
        tags["persona"] = [str(p) for p in s.dataset.personas]
    return name, tags


def tracking_settings(s: Settings) -> TrackingSettings:
    """The tracking's part of the typed settings; the run's logged config is the composed record."""
    return TrackingSettings(name=s.logger.name, mode=s.logger.mode, project=s.logger.project,
                            entity=s.logger.entity, group=s.logger.group, dir=s.logger.dir,
                            run_tag=s.run_tag, output_dir=s.paths.output_dir,
                            config=config_to_dict(s.composed))


def _print_plan(s: Settings) -> None:
    """stage=plan without -m: the plan of this one cell (with -m the launcher plans the sweep)."""
    from plural_icm.pipeline.plan import PlanError, build_plan, format_plan

    plan = build_plan([([], s)])
    print(format_plan(plan), flush=True)
    try:
        plan.refuse_if_infeasible()
    except PlanError as e:
        raise SystemExit(f"plural_icm: {e}") from None
    return None




def run_task(cfg: DictConfig):
    """Every stage's entry: the composed ``cfg`` resolved once (checked before anything is loaded,
    submitted or written, and typed), then the stage run on the typed settings."""
    s = resolve_settings(cfg)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stage = s.stage.value
    if stage == "plan":
        return _print_plan(s)
    if stage == "data_stats":
        return run_data_stats(s)
    if in_slurm_job():
        check_allocation(s.model)

    name, tags = wandb_name_and_tags(s, stage)
    with job_run(tracking_settings(s), job_type=stage, name=name, tags=tags,
                 hydra_choices=_hydra_choices()) as wb:
        if stage == "cell":
            metrics = run_cell(s, wb=wb)
            print_summary(s, metrics)
            return metrics.get("overall", {}).get("claim_accuracy")  # the paper's metric
        if stage == "search":
            claimset = load_claimset(s.dataset, s.paths.data_dir)
            backends = Backends(s)
            try:
                res = run_searches_for(s, claimset, sorted(claimset.personas), backends, wb=wb)
            finally:
                backends.close()
            for pid, got in res.items():
                print(f"{pid}: U={got.summary.U:.2f} label_accuracy={got.summary.label_accuracy} -> {got.path}")
            return None
        if stage == "collaborative":
            return run_collaborative(s, wb=wb)
    from plural_icm.errors import ConfigError

    raise ConfigError(f"unknown stage {stage!r}")
