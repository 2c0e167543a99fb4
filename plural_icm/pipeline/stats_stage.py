"""`python launch.py stage=data_stats dataset=<name>`: per-dataset statistics."""

from __future__ import annotations

from omegaconf import DictConfig

from plural_icm.data.stats import data_stats_report


def run_data_stats(cfg: DictConfig):
    print(data_stats_report(cfg.dataset, cfg.paths.data_dir), flush=True)
    return None
