"""Question-level and claim-level accuracy of in-context predictions, with standard errors.

Input: a *predictions frame*, one row per test claim, with columns

    persona_id   str
    group_id     str    consistency group (one persona x one question / response pair)
    question_id  str    (optional; copied to the output when present)
    option_index int    which option of the question the claim asserts; ``option_key`` is used
                        when ``option_index`` is absent (PT: the ordering "1>2" / "2>1")
    p_true       float  model probability of "True", normalised over the two label tokens
    gold         bool   gold label of the claim (None/NaN when unknown)
    distribution list   (optional) the persona's observed answer shares over the question's
                        options, indexed by ``option_index`` (same list on every row of a group)
    fold         int    (optional)

:func:`predictions_frame` builds it from :class:`~plural_icm.data.records.Claim` objects.

Decision rule for survey questions (GQA, OQA) and preference pairs (PT): the predicted option of a
group is the option whose claim has the highest ``p_true``; it is correct when it equals the gold
(plurality / preferred) option, i.e. the group's only claim with ``gold=True``. Ties go to the
lowest option (deterministic; exact ties of float probabilities are rare in practice).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from plural_icm.data.records import Claim

#: Probability above which a single claim counts as judged True. Exactly 0.5 counts as False so
#: that "stable" (exactly one True) cannot be reached by a model that outputs 0.5 everywhere.
TRUE_THRESHOLD = 0.5


def p_true_from_logprobs(logprob_true: float | np.ndarray, logprob_false: float | np.ndarray):
    """P(True) normalised over the two label tokens: ``exp(lt) / (exp(lt) + exp(lf))``.

    Computed as a logistic of the difference so very negative log-probabilities do not underflow.
    """
    diff = np.asarray(logprob_true, dtype=float) - np.asarray(logprob_false, dtype=float)
    out = 1.0 / (1.0 + np.exp(-diff))
    return float(out) if out.ndim == 0 else out


def predictions_frame(claims: Iterable[Claim], p_true: Mapping[str, float],
                      fold: int | None = None) -> pd.DataFrame:
    """Build a predictions frame from claims and ``item_id -> p_true``.

    Claims without a prediction are skipped (they were not queried). ``option_index`` and
    ``distribution`` come from ``claim.meta`` when present.
    """
    rows = []
    for c in claims:
        if c.item_id not in p_true:
            continue
        row = {"item_id": c.item_id, "persona_id": c.persona_id, "group_id": c.group_id,
               "question_id": c.question_id, "option_key": c.option_key,
               "option_index": c.meta.get("option_index"), "p_true": float(p_true[c.item_id]),
               "gold": c.gold, "distribution": c.meta.get("distribution")}
        if fold is not None:
            row["fold"] = fold
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df) and df["option_index"].isna().all():
        df = df.drop(columns="option_index")
    if len(df) and df["distribution"].isna().all():
        df = df.drop(columns="distribution")
    return df


def with_distributions(df: pd.DataFrame, claims: Iterable[Claim]) -> pd.DataFrame:
    """Add the ``distribution`` column (``claim.meta["distribution"]``, by ``item_id``) to a
    predictions frame written without it, so the JS distance can be computed."""
    dist = {c.item_id: c.meta.get("distribution") for c in claims}
    out = df.copy()
    out["distribution"] = [dist.get(i) for i in out["item_id"]]
    return out


def binomial_se(p: float, n: int) -> float | None:
    """Standard error of a proportion: ``sqrt(p (1 - p) / n)`` (None when n = 0)."""
    if n <= 0:
        return None
    return math.sqrt(p * (1.0 - p) / n)


def accuracy_with_se(correct: Sequence[bool] | np.ndarray) -> tuple[float | None, float | None, int]:
    """(mean, binomial standard error, n) of a 0/1 array; NaN/None entries are dropped.

    The SE is ``sqrt(p (1 - p) / n)``: the standard deviation of a Bernoulli variable over
    sqrt(n). With n = 0 the mean and SE are None.
    """
    arr = pd.Series(correct, dtype="object").dropna().astype(float).to_numpy()
    n = int(arr.size)
    if n == 0:
        return None, None, 0
    p = float(arr.mean())
    return p, binomial_se(p, n), n


def mean_with_se(values: Sequence[float] | np.ndarray) -> tuple[float | None, float | None, int]:
    """(mean, standard error of the mean, n) of real values; SE = sample sd (ddof=1) / sqrt(n).

    Used for per-fold aggregates (SE over folds) and judge scores. NaN/None entries are dropped;
    n = 0 gives (None, None, 0), n = 1 gives an SE of None (undefined).
    """
    arr = pd.Series(values, dtype="object").dropna().astype(float).to_numpy()
    n = int(arr.size)
    if n == 0:
        return None, None, 0
    mean = float(arr.mean())
    se = float(arr.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    return mean, se, n


def claim_correct(df: pd.DataFrame) -> np.ndarray:
    """Per-claim correctness (``p_true > 0.5`` equals gold) for rows with a known gold label.

    A claim without a prediction (``p_true`` NaN: an answer that is neither label) is wrong, as
    the paper's scorer counts it; our own predictions always have one.
    """
    known = df[df["gold"].notna()]
    p = known["p_true"].to_numpy(dtype=float)
    pred = p > TRUE_THRESHOLD
    return (pred == known["gold"].astype(bool).to_numpy()) & ~np.isnan(p)


def claim_accuracy(df: pd.DataFrame) -> tuple[float | None, float | None, int]:
    """Claim-level accuracy with binomial SE: ``p_true > 0.5`` compared with gold.

    This is the paper's metric (each True/False claim counts; see
    :data:`plural_icm.metrics.aggregate.PAPER_ACCURACY`)."""
    return accuracy_with_se(claim_correct(df))


def _option_column(df: pd.DataFrame) -> str:
    if "option_index" in df.columns and df["option_index"].notna().all():
        return "option_index"
    if "option_key" in df.columns:
        return "option_key"
    raise ValueError("predictions frame needs an 'option_index' or 'option_key' column "
                     f"(columns present: {list(df.columns)})")


def _python_scalar(x):
    """numpy scalar -> Python scalar, so downstream JSON and comparisons behave."""
    return x.item() if isinstance(x, np.generic) else x


def question_predictions(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (persona, group): predicted option, gold option, correctness and more.

    Output columns: ``persona_id, group_id`` (+ ``question_id``, ``fold`` when present),
    ``n_options``, ``options`` (list, sorted), ``p_true`` (list aligned with ``options``),
    ``p_option`` (p_true normalised to sum 1 over the group: the model's predicted answer
    distribution), ``predicted_option``, ``gold_option`` (None unless exactly one claim of the
    group is gold True), ``correct`` (None when there is no gold option), ``confidence``
    (``max(p_option)``), ``stable`` (two-option groups only, else None: exactly one claim has
    ``p_true > 0.5``), ``js_distance`` (see :mod:`plural_icm.metrics.distribution`; None without
    an observed distribution).
    """
    from plural_icm.metrics.distribution import js_distance  # local: avoid an import cycle

    if len(df) == 0:
        return pd.DataFrame(columns=["persona_id", "group_id", "n_options", "options", "p_true",
                                     "p_option", "predicted_option", "gold_option", "correct",
                                     "confidence", "stable", "js_distance"])
    opt_col = _option_column(df)
    extra = [c for c in ("question_id", "fold") if c in df.columns]
    rows = []
    for (persona, group), g in df.groupby(["persona_id", "group_id"], sort=True):
        dup = g[opt_col].duplicated()
        if dup.any():
            raise ValueError(f"group {group!r} of persona {persona!r} has several claims for "
                             f"option(s) {sorted(map(str, g.loc[dup, opt_col]))}")
        g = g.sort_values(opt_col, kind="stable")
        options = [_python_scalar(o) for o in g[opt_col]]
        p = g["p_true"].to_numpy(dtype=float)
        if not np.isfinite(p).all():  # argmax would pick the first NaN's option as the answer
            from plural_icm.metrics.finite import NonFiniteMetricError

            raise NonFiniteMetricError(f"group {group!r} of persona {persona!r}: p_true "
                                       f"{p.tolist()} is not finite (NaN or infinite model scores)")
        total = p.sum()
        # All-zero p_true (cannot happen with a softmax, but guard): fall back to uniform.
        p_option = p / total if total > 0 else np.full(p.size, 1.0 / p.size)
        pred = options[int(np.argmax(p))]  # argmax returns the first maximum: lowest option
        golds = g["gold"]
        gold_true = [o for o, v in zip(options, golds) if v is not None and not pd.isna(v) and bool(v)]
        gold_opt = gold_true[0] if len(gold_true) == 1 else None
        stable = None
        if len(options) == 2:
            stable = bool(int((p > TRUE_THRESHOLD).sum()) == 1)
        js = None
        if "distribution" in g.columns and opt_col == "option_index":
            dist = next((d for d in g["distribution"] if d is not None
                         and not (isinstance(d, float) and math.isnan(d))), None)
            if dist is not None:
                js = js_distance(p_option, [dist[int(i)] for i in options])
        row = {"persona_id": persona, "group_id": group}
        for c in extra:
            row[c] = _python_scalar(g[c].iloc[0])
        row.update({"n_options": len(options), "options": options, "p_true": p.tolist(),
                    "p_option": p_option.tolist(), "predicted_option": pred,
                    "gold_option": gold_opt,
                    "correct": None if gold_opt is None else bool(pred == gold_opt),
                    "confidence": float(p_option.max()), "stable": stable, "js_distance": js})
        rows.append(row)
    return pd.DataFrame(rows)


def question_accuracy(qdf: pd.DataFrame) -> tuple[float | None, float | None, int]:
    """(accuracy, binomial SE, n_questions) over the groups of ``question_predictions`` that have
    a gold option."""
    if len(qdf) == 0:
        return None, None, 0
    return accuracy_with_se(qdf["correct"].tolist())


__all__ = ["TRUE_THRESHOLD", "p_true_from_logprobs", "predictions_frame", "binomial_se",
           "with_distributions", "accuracy_with_se", "mean_with_se", "claim_correct", "claim_accuracy",
           "question_predictions", "question_accuracy"]


def stable_fraction(qdf: pd.DataFrame) -> tuple[float | None, int]:
    """(fraction of two-option groups judged stable, number of two-option groups).

    Stability (the paper's Section on consistency): both options' claims of a two-option question
    are queried separately; the answer is stable when exactly one of them is judged True
    (``p_true > 0.5``). Groups with other option counts are not counted. None when there is no
    two-option group.
    """
    if len(qdf) == 0:
        return None, 0
    vals = [bool(v) for v in qdf["stable"] if v is not None and not pd.isna(v)]
    if not vals:
        return None, 0
    return float(np.mean(vals)), len(vals)


__all__.append("stable_fraction")
