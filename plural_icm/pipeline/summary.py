"""The printed summary table at the end of a cell."""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from plural_icm.layout import OVERALL_METRIC_KEYS, cell_name, cell_path


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_summary(cfg: DictConfig, metrics: dict) -> None:
    # The shared metric keys this cell has (a zero-shot cell has no label accuracy, say).
    parts = [metrics.get("overall", {}), *metrics.get("per_persona", {}).values()]
    cols = [c for c in OVERALL_METRIC_KEYS if any(c in m for m in parts)]
    rows = {pid: {c: m.get(c) for c in cols} for pid, m in metrics.get("per_persona", {}).items()}
    rows["ALL"] = {c: metrics.get("overall", {}).get(c) for c in cols}
    df = pd.DataFrame.from_dict(rows, orient="index")[cols]
    print(f"\n== {cell_name(cfg)} ==")
    print(df.map(_fmt).to_string())
    wall = metrics.get("meta", {}).get("wall_time_s")
    if wall is not None:
        print(f"wall time {wall:.1f} s")
    print(f"results: {cell_path(cfg)}\n", flush=True)
