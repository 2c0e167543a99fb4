"""`python launch.py stage=data_stats dataset=<name>`: per-dataset statistics."""

from __future__ import annotations

from plural_icm.config.settings import Settings
from plural_icm.data.stats import data_stats_report


def run_data_stats(s: Settings):
    print(data_stats_report(s.dataset, s.paths.data_dir), flush=True)
    return None
