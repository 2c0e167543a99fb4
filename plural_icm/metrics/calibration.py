"""Expected calibration error (ECE) with equal-width bins.

Choice for the paper's Table 9 (GQA/OQA, 15 bins): **claim level**. Each test claim is one binary
prediction; its predicted label is True iff ``p_true > 0.5`` and its confidence is the probability
of that predicted label, ``max(p_true, 1 - p_true)``; it is correct when the predicted label equals
gold. Why claim level: the probabilities the instruct model actually emits are the binary
True/False probabilities of each claim (the option distribution is our normalisation of them),
and the paper's few-shot prompts are True/False claims. ``question_level_ece`` (confidence =
``max(p_option)``, correct = predicted option is gold) is reported alongside as ``ece_question``.

Binning follows Guo et al. (2017): bin b covers ``(b/B, (b+1)/B]`` (the first bin also takes
confidence 0); ECE = sum over bins of ``|bin| / n * |accuracy(bin) - mean confidence(bin)|``.
With binary confidences in [0.5, 1] only the upper half of the 15 bins is ever used; that is
inherent to the definition, not a bug.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from plural_icm.metrics.classification import TRUE_THRESHOLD

N_BINS = 15


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool],
                               n_bins: int = N_BINS) -> float | None:
    """ECE of predictions with the given confidences (in [0, 1]) and 0/1 correctness.

    Returns None for an empty input.
    """
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=float)
    if conf.shape != corr.shape:
        raise ValueError(f"confidence and correct differ in shape: {conf.shape} vs {corr.shape}")
    if conf.size == 0:
        return None
    if (conf < 0).any() or (conf > 1).any():
        raise ValueError("confidences must lie in [0, 1]")
    # Right-closed bins (lo, hi]: a confidence equal to an edge goes to the lower bin, as in the
    # usual implementation (gt lower, le upper); edges from linspace so 0.8 is exactly an edge.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], conf, side="left")
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            ece += mask.sum() / conf.size * abs(corr[mask].mean() - conf[mask].mean())
    return float(ece)


def claim_level_ece(df: pd.DataFrame, n_bins: int = N_BINS) -> float | None:
    """ECE over the claims of a predictions frame that have a gold label (the reported ``ece``)."""
    known = df[df["gold"].notna()] if len(df) else df
    if len(known) == 0:
        return None
    p = known["p_true"].to_numpy(dtype=float)
    pred = p > TRUE_THRESHOLD
    conf = np.where(pred, p, 1.0 - p)
    correct = pred == known["gold"].astype(bool).to_numpy()
    return expected_calibration_error(conf, correct, n_bins)


def question_level_ece(qdf: pd.DataFrame, n_bins: int = N_BINS) -> float | None:
    """ECE over the groups of a ``question_predictions`` frame with a gold option; confidence is
    the normalised probability of the predicted option."""
    if len(qdf) == 0:
        return None
    known = qdf[[c is not None and not pd.isna(c) for c in qdf["correct"]]]
    if len(known) == 0:
        return None
    return expected_calibration_error(known["confidence"].to_numpy(dtype=float),
                                      known["correct"].astype(bool).to_numpy(), n_bins)


__all__ = ["N_BINS", "expected_calibration_error", "claim_level_ece", "question_level_ece"]
