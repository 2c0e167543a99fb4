"""The overview printed at the end of every sweep (``python launch.py -m ...``), by the local and
the SLURM launchers alike: what was done, skipped (complete before the launch) and failed (with
its reason), and the headline scores of the cells in one table, each beside its predicted-True
rate and majority baseline (plural_icm.metrics.baseline).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from plural_icm.layout import COMPLETE, METRICS
from plural_icm.metrics.baseline import prediction_balance
from plural_icm.pipeline.summary import read_predictions

#: The order outcomes are listed in.
OUTCOMES = ("done", "skipped", "failed", "not run", "running")


@dataclass
class SweepJob:
    """One job of a sweep as the launcher saw it end."""

    label: str
    outcome: str                 # one of OUTCOMES
    reason: str = ""             # why it failed / was not run
    cell_dir: Path | None = None  # a cell's result directory (None: a search or another stage)


def skipped_before(cell_dir: Path | None, launched_at: float) -> bool:
    """Whether a cell was complete before the launch (its ``COMPLETE.json`` says when it ended):
    the job then only read its stored metrics."""
    if cell_dir is None or not (Path(cell_dir) / COMPLETE).is_file():
        return False
    try:
        finished = float(json.loads((Path(cell_dir) / COMPLETE).read_text(encoding="utf-8"))["finished"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return finished < launched_at


def _score_row(job: SweepJob) -> dict[str, Any]:
    row: dict[str, Any] = {"outcome": job.outcome, "job": job.label}
    # a failed job's folder holds no result of its own: what is there is another run's (the
    # results of other settings it refused to overwrite, or an earlier complete run)
    if job.outcome == "failed" or job.cell_dir is None or not (Path(job.cell_dir) / METRICS).is_file():
        row["note"] = job.reason
        return row
    overall = json.loads((Path(job.cell_dir) / METRICS).read_text(encoding="utf-8")).get("overall", {})
    balance = prediction_balance(read_predictions(job.cell_dir)).get("ALL", {})
    row |= {"claim_acc": overall.get("claim_accuracy"), "±se": overall.get("claim_accuracy_se"),
            "pred_True": balance.get("predicted_true_rate"),
            "majority": balance.get("majority_baseline"),
            "icm_label_acc": overall.get("icm_label_accuracy"),
            "note": "degenerate: one class only" if balance.get("degenerate") else job.reason}
    return row


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def format_overview(jobs: Sequence[SweepJob], max_rows: int = 200) -> str:
    """A count line per outcome, then one table row per job (failed and not-run jobs first, with
    their reason). Columns a sweep never fills (e.g. ICM label accuracy without ICM) are left out."""
    counts = {o: sum(j.outcome == o for j in jobs) for o in OUTCOMES}
    head = "sweep overview: " + ", ".join(f"{n} {o}" for o, n in counts.items()
                                          if n or o in ("done", "skipped", "failed"))
    if not jobs:
        return head
    order = {o: k for k, o in enumerate(("failed", "not run", "running", "done", "skipped"))}
    rows = [_score_row(j) for j in sorted(jobs, key=lambda j: order.get(j.outcome, 9))]
    df = pd.DataFrame(rows)
    order = ["outcome", "job", "claim_acc", "±se", "pred_True", "majority", "icm_label_acc", "note"]
    df = df[[c for c in order if c in df.columns and df[c].notna().any() and (df[c] != "").any()]]
    shown = df.head(max_rows).astype(object).apply(lambda col: col.map(_fmt))
    for c in ("outcome", "job", "note"):  # text reads left-aligned
        if c in shown:
            width = max(len(c), *(len(v) for v in shown[c]))
            shown[c] = shown[c].str.ljust(width)
            shown = shown.rename(columns={c: c.ljust(width)})
    lines = [head, *(line.rstrip() for line in shown.to_string(index=False).splitlines())]
    if len(df) > max_rows:
        lines.append(f"... {len(df) - max_rows} more rows")
    return "\n".join(lines)


def failure_reason(exc: BaseException | None) -> str:
    """The first line of an exception's message (the reason a job failed)."""
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


__all__ = ["SweepJob", "OUTCOMES", "format_overview", "skipped_before", "failure_reason"]
