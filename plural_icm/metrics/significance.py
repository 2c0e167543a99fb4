"""Paired significance tests between two conditions (e.g. Few-shot ICM vs Few-shot Gold).

* On the score the report shows (claim accuracy, the paper's metric): :func:`paired_claims_test`,
  paired over claims and clustered by question. Each question's claims share a prompt and a gold
  structure, so they are not independent: the test flips the sign of each question's summed
  difference (claims A got right minus claims B got right), exactly when few questions differ,
  else by 100,000 seeded draws. Where every question holds one claim (OvertonBench) or every
  differing question differs by one claim, it is the exact McNemar test over claims.
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


@dataclass(frozen=True)
class PairedClaimsResult:
    """Outcome of :func:`paired_claims_test`."""

    n_claims: int
    n_clusters: int
    a_only: int
    """Claims A got right and B got wrong."""
    b_only: int
    """Claims B got right and A got wrong."""
    p_value: float
    test: str
    """The test that gave ``p_value``, in words (for the report)."""


#: Questions with a nonzero difference up to which the sign-flip test is enumerated exactly.
EXACT_UP_TO = 20
DRAWS = 100_000


def paired_claims_test(correct_a: Sequence[bool], correct_b: Sequence[bool],
                       clusters: Sequence[object], seed: int = 0) -> PairedClaimsResult:
    """Two-sided paired test of claim correctness, clustered by ``clusters`` (question ids).

    Statistic: T = sum over questions of d_q = (claims right under A) - (under B). Under H0 (the
    conditions are exchangeable within a question) each d_q's sign is a fair coin: p is the share
    of sign assignments with |T*| >= |T|. When every nonzero |d_q| is 1 this is the exact
    McNemar (binomial) test on the discordant claims."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or len(clusters) != a.size:
        raise ValueError(f"paired arrays differ in shape: {a.shape}, {b.shape}, {len(clusters)} clusters")
    frame = pd.DataFrame({"q": list(clusters), "d": a.astype(int) - b.astype(int)})
    d = frame.groupby("q", sort=True)["d"].sum().to_numpy()
    n_clusters = int(d.size)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    nz = d[d != 0]
    if nz.size == 0:
        return PairedClaimsResult(int(a.size), n_clusters, a_only, b_only, 1.0,
                                  "no claim differs: p = 1")
    if np.all(np.abs(nz) == 1):
        k = int((nz > 0).sum())
        p = float(stats.binomtest(k, int(nz.size), 0.5).pvalue)
        return PairedClaimsResult(int(a.size), n_clusters, a_only, b_only, p,
                                  "exact McNemar over claims (each differing question by one claim)")
    t = abs(int(nz.sum()))
    if nz.size <= EXACT_UP_TO:
        signs = ((np.arange(2 ** nz.size)[:, None] >> np.arange(nz.size)) & 1) * 2 - 1
        p = float(np.mean(np.abs(signs @ nz) >= t))
        how = "exact"
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, DRAWS, 10_000):
            signs = rng.integers(0, 2, size=(min(10_000, DRAWS - start), nz.size)) * 2 - 1
            hits += int((np.abs(signs @ nz) >= t).sum())
        p = (hits + 1) / (DRAWS + 1)
        how = f"{DRAWS:,} seeded draws"
    return PairedClaimsResult(int(a.size), n_clusters, a_only, b_only, p,
                              f"paired sign-flip test over claims clustered by question ({how})")


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


__all__ = ["McNemarResult", "mcnemar_exact", "PairedClaimsResult", "paired_claims_test", "paired_question_correctness", "mcnemar_between",
           "paired_t_test", "t_test_undefined"]
