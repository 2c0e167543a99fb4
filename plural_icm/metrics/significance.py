"""Paired significance tests between two conditions (e.g. Few-shot ICM vs Few-shot Gold).

* Over items: the exact McNemar test on paired per-question correctness. Only discordant pairs
  carry information: with b = #(A right, B wrong) and c = #(A wrong, B right), under H0 b is
  Binomial(b + c, 1/2); the two-sided p-value is ``scipy.stats.binomtest(b, b + c, 0.5)``.
* Over folds: the paired t-test (``scipy.stats.ttest_rel``) on per-fold accuracies.

The analysis report uses **McNemar on pooled per-question correctness** (all personas and folds
of a (model, dataset) pair) as its primary test: it has hundreds of paired items, whereas the
fold-level t-test has only k = 4 pairs (3 degrees of freedom) and little power. The fold-level
t-test is reported next to it because the paper's Table 6 is per fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class McNemarResult:
    """Outcome of an exact McNemar test."""

    a_only: int
    """Items A got right and B got wrong (b)."""
    b_only: int
    """Items B got right and A got wrong (c)."""
    n: int
    """Paired items (concordant and discordant)."""
    p_value: float
    """Two-sided exact p-value; 1.0 when there is no discordant pair."""


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test on two aligned 0/1 arrays of per-item correctness."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    a_only = int((a & ~b).sum())
    b_only = int((~a & b).sum())
    disc = a_only + b_only
    # No discordant pair: the conditions agree on every item, no evidence of a difference.
    p = 1.0 if disc == 0 else float(stats.binomtest(a_only, disc, 0.5).pvalue)
    return McNemarResult(a_only, b_only, int(a.size), p)


def paired_question_correctness(qdf_a: pd.DataFrame, qdf_b: pd.DataFrame,
                                keys: Sequence[str] = ("persona_id", "group_id")
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Align two ``question_predictions`` frames on ``keys`` (inner join, gold-bearing rows only)
    and return the two correctness arrays; add ``"fold"`` to keys when pooling several folds
    whose group ids could repeat."""
    keys = list(keys)

    def known(q: pd.DataFrame) -> pd.DataFrame:
        mask = [c is not None and not pd.isna(c) for c in q["correct"]]
        return q.loc[mask, keys + ["correct"]]

    m = known(qdf_a).merge(known(qdf_b), on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    return m["correct_a"].astype(bool).to_numpy(), m["correct_b"].astype(bool).to_numpy()


def mcnemar_between(qdf_a: pd.DataFrame, qdf_b: pd.DataFrame,
                    keys: Sequence[str] = ("persona_id", "group_id")) -> McNemarResult:
    """McNemar exact test between two conditions' ``question_predictions`` frames."""
    return mcnemar_exact(*paired_question_correctness(qdf_a, qdf_b, keys))


def paired_t_test(scores_a: Sequence[float], scores_b: Sequence[float]) -> float | None:
    """Two-sided p-value of a paired t-test over folds (same fold order in both inputs).

    None with fewer than two pairs, and None when every difference is the same (zero or not):
    their standard deviation is 0, so t is 0/0 or x/0 and the test is undefined; a p of 0.0 or 1.0
    there would be a number the data do not give (the report shows "undefined").
    """
    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    if a.size < 2:
        return None
    d = a - b
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        return None
    return float(stats.ttest_rel(a, b).pvalue)


def t_test_undefined(scores_a: Sequence[float], scores_b: Sequence[float]) -> bool:
    """True when :func:`paired_t_test` is undefined for >= 2 pairs (identical differences)."""
    d = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    return d.size >= 2 and bool(np.allclose(d, d[0], rtol=0.0, atol=1e-12))


__all__ = ["McNemarResult", "mcnemar_exact", "paired_question_correctness", "mcnemar_between",
           "paired_t_test", "t_test_undefined"]
