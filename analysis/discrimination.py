"""Threshold-free scores of each cell's True/False predictions, beside its accuracy.

A small model often answers one label for nearly every claim (SmolLM2-135M on the authors' GQA
claims: 54 of 58 False), so accuracy sits at the share of that label whatever its examples were,
and a change of the prompt (the examples' order, their labels) shows only in the probabilities.
This reports, per complete cell: claim accuracy, the AUC of ``p_true`` against gold (0.5: no
ranking), the mean log-probability of the gold label (two-way softmax), and any config keys asked
for (read from the cell's ``config.yaml``):

    python -m analysis.discrimination <outputs> --config-key inference.example_order
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from analysis import load
from analysis.tables import to_markdown
from plural_icm.layout import CONFIG


def auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (ties count half); NaN when
    either class is absent."""
    s = pd.Series(np.asarray(scores, dtype=float))
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = s.rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gold_logprob(preds: pd.DataFrame) -> pd.Series:
    """Per prediction, ln P(gold label) over the two labels."""
    lt, lf = preds["logp_true"].astype(float), preds["logp_false"].astype(float)
    z = np.logaddexp(lt, lf)
    return pd.Series(np.where(preds["gold"].astype(bool), lt - z, lf - z), index=preds.index)


def config_values(cell_dir: Path, keys: Sequence[str]) -> dict[str, object]:
    """The dotted ``keys`` of the cell's stored config.yaml (read once); None where absent."""
    if not keys:
        return {}
    cfg = OmegaConf.load(cell_dir / CONFIG)
    return {k: OmegaConf.select(cfg, k, default=None) for k in keys}


def discrimination_table(outputs: str | Path, config_keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per complete cell with predictions: its keys, the asked config keys, n_claims, accuracy,
    AUC and the mean log-probability of the gold label."""
    cells = load.load_cells(outputs)
    rows = []
    for _, c in cells.iterrows():
        preds = load.load_predictions(outputs, cells=cells.loc[[c.name]])
        if preds.empty:
            continue
        preds = preds[preds["perturbation"].isna()] if "perturbation" in preds else preds
        row = {k: c[k] for k in load.CELL_KEYS}
        row.update(config_values(Path(c["path"]), config_keys))
        row.update({"n_claims": len(preds),
                    "accuracy": float((preds["pred"].astype(bool) == preds["gold"].astype(bool)).mean()),
                    "auc": auc(preds["p_true"], preds["gold"].astype(bool)),
                    "mean_logp_gold": float(gold_logprob(preds).mean())})
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outputs")
    ap.add_argument("--config-key", action="append", default=[],
                    help="a dotted config key to show per cell (repeatable)")
    args = ap.parse_args(argv)
    t = discrimination_table(args.outputs, args.config_key)
    if t.empty:
        print(f"no complete cells with predictions under {args.outputs}")
        return 1
    print(to_markdown(t, digits=3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
