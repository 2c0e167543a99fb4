"""The printed summary table at the end of a cell."""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_summary(cfg: DictConfig, metrics: dict) -> None:
    from plural_icm.pipeline.cell import cell_name, cell_path

    # claim_accuracy is the paper's metric; question_accuracy the stricter question-level one.
    cols = ["claim_accuracy", "claim_accuracy_se", "n_claims", "question_accuracy", "n_questions", "ece", "stable_fraction",
            "js_distance", "icm_label_accuracy", "coherence"]
    rows = {pid: {c: m.get(c) for c in cols} for pid, m in metrics.get("per_persona", {}).items()}
    rows["ALL"] = {c: metrics.get("overall", {}).get(c) for c in cols}
    df = pd.DataFrame.from_dict(rows, orient="index")[cols]
    print(f"\n== {cell_name(cfg)} ==")
    print(df.map(_fmt).to_string())
    wall = metrics.get("meta", {}).get("wall_time_s")
    if wall is not None:
        print(f"wall time {wall:.1f} s")
    print(f"results: {cell_path(cfg)}\n", flush=True)
