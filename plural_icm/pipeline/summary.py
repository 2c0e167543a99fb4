"""The printed summary table at the end of a cell.

Every score is printed beside what it must be read against: the model's predicted-True rate and
the majority baseline (plural_icm.metrics.baseline, from the cell's ``predictions.jsonl``), and a
plain warning when the model is degenerate on the data (every prediction one class).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from plural_icm.layout import OVERALL_METRIC_KEYS, PREDICTIONS, cell_name, cell_path
from plural_icm.metrics.baseline import degenerate_message, prediction_balance

#: Short column names of the printed table (the metric keys are long for a terminal).
SHORT = {"claim_accuracy": "claim_acc", "claim_accuracy_se": "±se", "question_accuracy": "question_acc",
         "question_accuracy_se": "q±se", "stable_fraction": "stable", "js_distance": "JS",
         "representation_score": "repr", "example_label_accuracy": "example_label_acc",
         "icm_label_accuracy": "icm_label_acc", "icm_mutual_predictability": "icm_P",
         "predicted_true_rate": "pred_True", "majority_baseline": "majority"}
#: Counts: printed as integers.
COUNTS = ("n_claims", "n_questions", "n_predictions")


def _fmt(v, key: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if key in COUNTS:
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def read_predictions(out: Path) -> pd.DataFrame:
    """The cell's predictions (empty when the file is absent)."""
    path = Path(out) / PREDICTIONS
    if not path.is_file():
        return pd.DataFrame()
    return pd.read_json(path, lines=True, dtype=False)


def summary_table(metrics: dict, balance: dict) -> pd.DataFrame:
    """Rows: personas and ``ALL``; columns: the cell's metrics with the predicted-True rate and
    the majority baseline right after the claim accuracy."""
    parts = [metrics.get("overall", {}), *metrics.get("per_persona", {}).values()]
    cols = [c for c in OVERALL_METRIC_KEYS if any(c in m for m in parts)]
    if balance:
        at = cols.index("claim_accuracy_se") + 1 if "claim_accuracy_se" in cols else 1
        cols[at:at] = ["predicted_true_rate", "majority_baseline"]
    rows = {}
    for pid, m in [*metrics.get("per_persona", {}).items(), ("ALL", metrics.get("overall", {}))]:
        b = balance.get(pid, {})
        rows[pid] = {c: m.get(c, b.get(c)) for c in cols}
    df = pd.DataFrame.from_dict(rows, orient="index")[cols]
    df = df.astype(object).apply(lambda col: col.map(lambda v, k=col.name: _fmt(v, k)))
    return df.rename(columns=SHORT)


def summary_notes(metrics: dict, balance: dict) -> list[str]:
    """Plain sentences under the table: degenerate predictions, claims a search never reached."""
    notes = []
    overall = balance.get("ALL")
    if overall and overall.get("degenerate"):
        notes.append(degenerate_message("every persona", overall))
    else:
        for pid, b in balance.items():
            if pid != "ALL" and (msg := degenerate_message(f"persona {pid}", b)):
                notes.append(msg)
    for pid, m in metrics.get("per_persona", {}).items():
        n = m.get("icm_unreached_claims")
        if n:
            notes.append(f"persona {pid}: the ICM search never reached {int(n)} of its claims "
                         f"(labelled by one final prediction; raise icm.max_iters)")
    return notes


def print_summary(cfg: Any, metrics: dict) -> None:
    out = cell_path(cfg)
    balance = prediction_balance(read_predictions(out))
    print(f"\n== {cell_name(cfg)} ==")
    print(summary_table(metrics, balance).to_string())
    print("pred_True: share of held-out claims the model called True; majority: accuracy of "
          "always giving the more frequent gold label")
    for note in summary_notes(metrics, balance):
        print(f"NOTE {note}")
    wall = metrics.get("meta", {}).get("wall_time_s")
    if wall is not None:
        print(f"wall time {wall:.1f} s")
    print(f"results: {out}\n", flush=True)
