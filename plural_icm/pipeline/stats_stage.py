"""`python launch.py stage=data_stats dataset=<name>`: per-dataset statistics."""

from __future__ import annotations

from typing import Any

from plural_icm.config.settings import Settings, as_settings
from plural_icm.data.stats import data_stats_report


def run_data_stats(settings: Settings | Any):
    s = as_settings(settings)
    print(data_stats_report(s.dataset, s.paths.data_dir), flush=True)
    return None
