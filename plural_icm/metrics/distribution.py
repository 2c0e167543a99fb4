"""Distributional alignment: Jensen-Shannon distance between predicted and observed answers.

For a (persona, question) group the model's predicted answer distribution is its ``p_true`` over
the group's options normalised to sum 1; the observed distribution is the persona's answer shares
(``claim.meta["distribution"]``) over the same options, renormalised to sum 1 when the group
covers only some of the options (e.g. non-substantive options dropped by the loader).

The distance is ``scipy.spatial.distance.jensenshannon`` with ``base=2``: the square root of the
JS divergence measured in bits, so it lies in [0, 1] (0 = identical, 1 = disjoint supports).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

#: Log base of the divergence; base 2 bounds the distance by 1.
JS_BASE = 2.0


def js_distance(predicted: Sequence[float], observed: Sequence[float]) -> float | None:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two distributions over the same options.

    Both inputs are renormalised to sum 1. Returns None when either has no mass (an observed
    distribution of all zeros carries no information), and raises on length mismatch, negative
    or non-finite entries (a NaN is never turned into a distance).
    """
    p = np.asarray(predicted, dtype=float)
    q = np.asarray(observed, dtype=float)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"distributions must be 1-D and of equal length, got {p.shape} and {q.shape}")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError(f"distributions must be finite, got {p.tolist()} and {q.tolist()}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("distributions must be non-negative")
    with np.errstate(over="ignore"):  # an overflowing total is reported just below
        totals = (p.sum(), q.sum())
    if not all(np.isfinite(t) for t in totals):  # finite entries, overflowing total
        raise ValueError("distributions must have a finite total")
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    p, q = p / p.sum(), q / q.sum()
    d = float(jensenshannon(p, q, base=JS_BASE))
    if np.isnan(d):
        # Finite, normalised inputs: only rounding (a divergence of -1e-17 under the square root)
        # gives NaN, and only for (near-)identical distributions, whose distance is 0.
        return 0.0
    return min(max(d, 0.0), 1.0)


def mean_js_distance(qdf: pd.DataFrame) -> tuple[float | None, int]:
    """(mean JS distance over groups that have one, number of such groups) of a
    ``question_predictions`` frame; (None, 0) when no group has an observed distribution."""
    if len(qdf) == 0 or "js_distance" not in qdf.columns:
        return None, 0
    vals = [float(v) for v in qdf["js_distance"] if v is not None and not pd.isna(v)]
    if not vals:
        return None, 0
    return float(np.mean(vals)), len(vals)


__all__ = ["JS_BASE", "js_distance", "mean_js_distance"]
