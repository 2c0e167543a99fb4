"""SPICA's group terms (Chen et al., Findings of ACL 2025), as plain arrays.

A *scenario* is one question; its *responses* are the question's options (claim datasets) or its
rated answers (OvertonBench). Ratings are arrays over responses, aligned by response index:

* ``member_ratings``: one row per member of the group, one column per response (OT: each
  participant's 1-5 rating; survey data: a member's answer as a 0/1 indicator per option);
* ``population_mean``: the mean rating of every annotator, all groups together, per response.

Terms (the paper's definitions):

* ``stability(x', y') = -Var_members r(x', y')``; ``g_stability(x') = mean_y stability`` (variance
  with ``ddof=0``: the spread of the group's own ratings);
* ``contrast(x', r_p) = mean_y (r_p(x', y') - mean rating(x', y'))^2``;
  ``g_contrast(x')``: the paper's prose and its formula disagree on which mean is taken. We average
  the contrast of each member (``contrast_mean="members"``, the default: the formula), and offer
  the contrast of the group's mean rating (``contrast_mean="group"``, the prose's "how the group's
  view differs from everyone's"). The two differ by the group's own variance:
  ``members = group + mean_y Var_members`` (bias-variance identity, tested);
* ``L(r(x), r(x')) = sqrt(sum_y (r(x, y) - r(x', y))^2)``: the mismatch the weights are fitted to
  and the retrieval error.

Where per-member ratings exist but not aligned across responses (OvertonBench: each answer's
raters), each response's mean and variance suffice (:func:`terms_from_moments`). Where a dataset
has only a group's answer distribution (shares ``p_y`` of the group choosing each
option), each member's answer is an indicator, so the same terms follow in closed form without
members: ``Var = p_y (1 - p_y)``, ``members contrast = mean_y [p_y (1 - p_y) + (p_y - pbar_y)^2]``
(:func:`terms_from_shares`). A gold 0/1 label is a share of 0 or 1 (no variance: stability 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTRAST_MEANS = ("members", "group")


@dataclass(frozen=True)
class GroupTerms:
    """A scenario's group terms for one group."""

    g_stability: float
    g_contrast: float


def stability(member_ratings: np.ndarray) -> np.ndarray:
    """Per response: minus the variance of the group members' ratings (ddof=0)."""
    r = np.asarray(member_ratings, dtype=float)
    return -r.var(axis=0)


def contrast(member_rating: np.ndarray, population_mean: np.ndarray) -> float:
    """One member's contrast: mean over responses of the squared gap to the population's mean."""
    d = np.asarray(member_rating, dtype=float) - np.asarray(population_mean, dtype=float)
    return float(np.mean(d * d))


def terms_from_members(member_ratings: np.ndarray, population_mean: np.ndarray,
                       contrast_mean: str = "members") -> GroupTerms:
    """``g_stability`` and ``g_contrast`` of a scenario from its members' ratings."""
    _check_mean(contrast_mean)
    r = np.asarray(member_ratings, dtype=float)
    if r.ndim != 2 or r.shape[0] == 0:
        raise ValueError(f"member ratings must be a (members x responses) array, got shape {r.shape}")
    g_stab = float(np.mean(stability(r)))
    if contrast_mean == "members":
        g_con = float(np.mean([contrast(row, population_mean) for row in r]))
    else:
        g_con = contrast(r.mean(axis=0), population_mean)
    return GroupTerms(g_stab, g_con)


def terms_from_moments(mean: np.ndarray, variance: np.ndarray, population_mean: np.ndarray,
                       contrast_mean: str = "members") -> GroupTerms:
    """The terms from each response's mean rating and variance across the group's members (no
    member rows needed): ``g_stability = -mean_y Var``; members' mean contrast
    ``= mean_y [Var + (mean - pbar)^2]`` (bias-variance identity); the group's ``mean_y (mean - pbar)^2``."""
    _check_mean(contrast_mean)
    m, var = np.asarray(mean, dtype=float), np.asarray(variance, dtype=float)
    gap = (m - np.asarray(population_mean, dtype=float)) ** 2
    g_con = float(np.mean(var + gap)) if contrast_mean == "members" else float(np.mean(gap))
    return GroupTerms(float(np.mean(-var)), g_con)


def terms_from_shares(shares: np.ndarray, population_mean: np.ndarray,
                      contrast_mean: str = "members") -> GroupTerms:
    """The same terms from the group's answer shares (each member answers one option: a 0/1
    indicator per option, variance ``p (1 - p)``), in closed form; equal to
    :func:`terms_from_members` on the expanded indicator matrix."""
    p = np.asarray(shares, dtype=float)
    return terms_from_moments(p, p * (1.0 - p), population_mean, contrast_mean)


def mismatch(r_query: np.ndarray, r_other: np.ndarray) -> float:
    """SPICA's L: the Euclidean distance of two rating vectors (responses aligned by index; a
    shorter vector is padded with zeros, e.g. a question with fewer options)."""
    a, b = np.asarray(r_query, dtype=float), np.asarray(r_other, dtype=float)
    n = max(a.size, b.size)
    a, b = np.pad(a, (0, n - a.size)), np.pad(b, (0, n - b.size))
    return float(np.sqrt(np.sum((a - b) ** 2)))


def fit_weights(features: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares ``(w_d, w_s, w_c, c)`` with ``target ~ features @ w[:3] + c`` (SPICA's
    per-group linear regression of the observed mismatch L on sim, g_stability, g_contrast).
    A constant feature (e.g. stability on 0/1 labels) gets weight 0 (minimum-norm solution)."""
    x = np.asarray(features, dtype=float)
    y = np.asarray(target, dtype=float)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (pairs x 3) matching the targets, got {x.shape} and {y.shape}")
    # centre the features so a constant column carries no weight and the intercept takes the mean
    mu = x.mean(axis=0)
    w, *_ = np.linalg.lstsq(x - mu, y - y.mean(), rcond=None)
    c = float(y.mean() - mu @ w)
    return np.array([*w, c])


def composite_distance(weights: np.ndarray, sim: np.ndarray, g_stab: np.ndarray,
                       g_con: np.ndarray) -> np.ndarray:
    """``d = w_d * sim + w_s * g_stability + w_c * g_contrast + c`` per candidate (smaller first)."""
    w = np.asarray(weights, dtype=float)
    return w[0] * np.asarray(sim) + w[1] * np.asarray(g_stab) + w[2] * np.asarray(g_con) + w[3]


def _check_mean(contrast_mean: str) -> None:
    if contrast_mean not in CONTRAST_MEANS:
        raise ValueError(f"selection.contrast_mean must be one of {CONTRAST_MEANS}, got {contrast_mean!r}")
