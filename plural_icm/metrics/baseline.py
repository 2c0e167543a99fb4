"""What a claim accuracy must be read against: the model's predicted-True rate and the majority
baseline, and whether the model is degenerate on the data (every prediction one class).

A claim accuracy of 0.500 means nothing on its own: on data with one True claim per two-option
question, a model that answers False everywhere scores exactly that. The summary of a cell and the
sweep overview print these beside every score (:func:`prediction_balance`).

Input: a predictions frame (``predictions.jsonl``: ``persona_id``, ``p_true``, ``pred``, ``gold``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

#: Columns :func:`prediction_balance` adds for each row (persona, and ``ALL``).
BALANCE_KEYS = ("predicted_true_rate", "majority_baseline")


def _balance(df: pd.DataFrame) -> dict[str, Any]:
    pred = df["pred"].astype(bool)
    gold = df["gold"].dropna().astype(bool) if "gold" in df else pd.Series([], dtype=bool)
    share_true = float(gold.mean()) if len(gold) else math.nan
    p = df["p_true"].astype(float)
    return {
        "n_predictions": int(len(df)),
        "predicted_true_rate": float(pred.mean()) if len(df) else math.nan,
        "majority_baseline": max(share_true, 1.0 - share_true) if len(gold) else math.nan,
        "majority_label": (share_true >= 0.5) if len(gold) else None,
        "p_true_min": float(p.min()) if len(p) else math.nan,
        "p_true_max": float(p.max()) if len(p) else math.nan,
        "degenerate": bool(len(df)) and pred.nunique() == 1,
    }


def prediction_balance(predictions: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per persona and overall (key ``ALL``): ``n_predictions``, ``predicted_true_rate``,
    ``majority_baseline`` (the accuracy of always answering the more frequent gold label),
    ``majority_label``, the range of P(True) and ``degenerate`` (every prediction one class)."""
    if predictions.empty:
        return {}
    out = {str(pid): _balance(g) for pid, g in predictions.groupby("persona_id", sort=True)}
    out["ALL"] = _balance(predictions)
    return out


def degenerate_message(who: str, b: dict[str, Any]) -> str | None:
    """One plain sentence when ``b`` (a :func:`prediction_balance` row) is degenerate, else None."""
    if not b.get("degenerate"):
        return None
    label = "True" if b["predicted_true_rate"] >= 0.5 else "False"
    return (f"{who}: all {b['n_predictions']} predictions are {label} (P(True) "
            f"{b['p_true_min']:.2f}-{b['p_true_max']:.2f}); the model does not separate these "
            f"claims, so its claim accuracy is that of a constant answer (majority baseline "
            f"{b['majority_baseline']:.3f}), not evidence about the condition")


__all__ = ["BALANCE_KEYS", "prediction_balance", "degenerate_message"]
