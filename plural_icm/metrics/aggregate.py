"""Everything a result cell reports, as JSON-serialisable dicts.

``cell_metrics`` turns one cell's predictions frame (see :mod:`plural_icm.metrics.classification`
for the columns) into ``{"overall": {...}, "per_persona": {pid: {...}}}`` with the keys

    claim_accuracy, claim_accuracy_se, n_claims   THE PAPER'S METRIC: per True/False claim,
                                         P(True) > P(False) vs gold, binomial SE (the fork's
                                         scorer counts claims; see PAPER_ACCURACY)
    question_accuracy, question_accuracy_se, n_questions   question-level (argmax-P(True) option
                                         == gold option), a different, stricter score
    claim_accuracy_persona_mean, question_accuracy_persona_mean   mean of per-persona values
                                         (overall only)
    ece                                  claim-level ECE, 15 bins (see calibration.py for why)
    ece_question                         question-level ECE, 15 bins
    stable_fraction, n_two_option        two-option groups with exactly one claim judged True
    js_distance, n_js                    mean Jensen-Shannon distance (base 2), groups with an
                                         observed distribution; None when there is none

Missing pieces are None, never NaN (``json.dumps`` would write the invalid token ``NaN``).
``aggregate_folds`` averages several cells (one per fold) with the SE over folds, and
``representation_summary`` summarises judge scores of generated answers (OvertonBench).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from plural_icm.data.records import ConsistencyRule
from plural_icm.metrics.calibration import claim_level_ece, question_level_ece
from plural_icm.metrics.classification import (claim_accuracy, mean_with_se, question_accuracy,
                                               question_predictions, stable_fraction)
from plural_icm.metrics.distribution import mean_js_distance

#: The accuracy the paper reports and the report and W&B compare with it: claim-level. The fork's
#: scorer counts a claim correct when its True/False answer equals gold; its released OpinionQA
#: zero-shot predictions give 69.47%, the paper's 69.5% (``python -m analysis.parity``).
PAPER_ACCURACY = "claim_accuracy"

QUESTION_KEYS = ("question_accuracy", "question_accuracy_se", "n_questions", "ece_question", "stable_fraction",
                 "n_two_option", "js_distance", "n_js")


def _json_float(x: Any) -> Any:
    """numpy -> Python. NaN/inf are kept: undefined metrics are None already (n = 0, an SE of one
    value), so a NaN here comes from bad input, and the cell's finite check
    (:func:`plural_icm.metrics.finite.check_metrics_finite`) fails on it rather than writing it
    as "missing"."""
    if x is None:
        return None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return x


def _metrics(df: pd.DataFrame, exactly_one: bool) -> dict[str, Any]:
    c_acc, c_se, n_claims = claim_accuracy(df) if len(df) else (None, None, 0)
    out: dict[str, Any] = {"claim_accuracy": c_acc, "claim_accuracy_se": c_se,
                           "n_claims": n_claims, "ece": claim_level_ece(df) if len(df) else None}
    if exactly_one and len(df):
        qdf = question_predictions(df)
        acc, se, n_q = question_accuracy(qdf)
        stab, n_two = stable_fraction(qdf)
        js, n_js = mean_js_distance(qdf)
        out.update({"question_accuracy": acc, "question_accuracy_se": se, "n_questions": n_q,
                    "ece_question": question_level_ece(qdf), "stable_fraction": stab,
                    "n_two_option": n_two, "js_distance": js, "n_js": n_js})
    else:
        # No exactly-one structure (OvertonBench): there is no "predicted option" per question.
        out.update({k: (0 if k.startswith("n_") else None) for k in QUESTION_KEYS})
    return {k: _json_float(v) for k, v in out.items()}


def cell_metrics(predictions_df: pd.DataFrame,
                 rule: ConsistencyRule | str = ConsistencyRule.EXACTLY_ONE) -> dict[str, Any]:
    """All metrics of one result cell, overall and per persona.

    ``rule`` is the dataset's consistency rule: question-level metrics (accuracy, stability, JS,
    question ECE) need exactly-one groups and are None/0 for ``ConsistencyRule.NONE``.
    When the frame has a ``fold`` column with several folds, ``overall`` also carries
    ``<claim|question>_accuracy_fold_mean`` / ``..._fold_se`` and ``per_fold``.
    """
    exactly_one = ConsistencyRule(rule) == ConsistencyRule.EXACTLY_ONE
    overall = _metrics(predictions_df, exactly_one)
    per_persona = {}
    if len(predictions_df):
        for pid, g in predictions_df.groupby("persona_id", sort=True):
            per_persona[str(pid)] = _metrics(g, exactly_one)
    for key in ("claim_accuracy", "question_accuracy"):
        accs = [m[key] for m in per_persona.values() if m[key] is not None]
        overall[f"{key}_persona_mean"] = _json_float(float(np.mean(accs))) if accs else None
    if "fold" in predictions_df.columns and predictions_df["fold"].nunique() > 1:
        per_fold = {str(_json_float(f)): _metrics(g, exactly_one)
                    for f, g in predictions_df.groupby("fold", sort=True)}
        for key in ("claim_accuracy", "question_accuracy"):
            mean, se, _ = mean_with_se([m[key] for m in per_fold.values()])
            overall.update({f"{key}_fold_mean": _json_float(mean),
                            f"{key}_fold_se": _json_float(se)})
        overall["per_fold"] = per_fold
    return {"overall": overall, "per_persona": per_persona}


def perturbation_mean_metrics(predictions_df: pd.DataFrame,
                              rule: ConsistencyRule | str = ConsistencyRule.EXACTLY_ONE) -> dict[str, Any]:
    """:func:`cell_metrics` of a cell whose rows come from several example sets (a non-null
    ``perturbation`` column, e.g. the accuracy-matched control): metrics per set, then their mean
    (numeric values; others from the first set), with ``n_perturbations``. Plain
    :func:`cell_metrics` when there are no perturbations."""
    if "perturbation" not in predictions_df.columns or predictions_df["perturbation"].isna().all():
        return cell_metrics(predictions_df, rule)
    parts = [cell_metrics(g.drop(columns=["perturbation"]), rule)
             for _, g in predictions_df.groupby("perturbation", sort=True)]
    overall = _mean_of([p["overall"] for p in parts])
    overall["n_perturbations"] = len(parts)
    per = {pid: _mean_of([p["per_persona"][pid] for p in parts if pid in p["per_persona"]])
           for pid in parts[0]["per_persona"]}
    return {"overall": overall, "per_persona": per}


def _mean_of(ds: list[dict]) -> dict:
    out = {}
    for k in ds[0]:
        vals = [d.get(k) for d in ds]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = sum(vals) / len(vals)
        else:
            out[k] = vals[0]
    return out


def aggregate_folds(cells: Sequence[Mapping[str, Any]],
                    keys: Iterable[str] = ("claim_accuracy", "question_accuracy", "ece", "ece_question",
                                           "stable_fraction", "js_distance")) -> dict[str, Any]:
    """Average ``cell_metrics`` outputs of several folds: for each key the mean over folds,
    ``<key>_fold_se`` (sample sd / sqrt(k)) and ``<key>_n_folds`` (folds where it was not None);
    overall and per persona (a persona missing from a fold simply contributes fewer folds)."""
    keys = list(keys)

    def combine(dicts: list[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in keys:
            mean, se, n = mean_with_se([d.get(k) for d in dicts])
            out[k] = _json_float(mean)
            out[f"{k}_fold_se"] = _json_float(se)
            out[f"{k}_n_folds"] = n
        return out

    personas = sorted({p for c in cells for p in c.get("per_persona", {})})
    return {"overall": combine([c["overall"] for c in cells]),
            "per_persona": {p: combine([c["per_persona"][p] for c in cells
                                        if p in c.get("per_persona", {})]) for p in personas}}


def representation_summary(scores_df: pd.DataFrame, score_col: str = "score") -> dict[str, Any]:
    """Mean judge representation score (1-5) with SE, overall and per persona (OvertonBench).

    ``scores_df`` has one row per generated answer with ``persona_id`` and ``score_col``. Missing
    scores (judge output that did not parse) are dropped and counted in ``n_missing``. SE is the
    sample sd (ddof=1) / sqrt(n). ``overall`` has the pooled mean over answers and
    ``persona_mean`` (mean of the per-persona means, each persona weighted equally).
    """
    def summ(s: pd.Series) -> dict[str, Any]:
        mean, se, n = mean_with_se(s.tolist())
        bad = s.dropna()
        if len(bad) and ((bad < 1) | (bad > 5)).any():
            raise ValueError(f"representation scores must lie in [1, 5], got {sorted(set(bad))[:5]}")
        return {"mean": _json_float(mean), "se": _json_float(se), "n": n,
                "n_missing": int(s.isna().sum())}

    scores = pd.to_numeric(scores_df[score_col], errors="coerce") if len(scores_df) else pd.Series(dtype=float)
    overall = summ(scores)
    per_persona = {str(pid): summ(pd.to_numeric(g[score_col], errors="coerce"))
                   for pid, g in scores_df.groupby("persona_id", sort=True)} if len(scores_df) else {}
    means = [m["mean"] for m in per_persona.values() if m["mean"] is not None]
    overall["persona_mean"] = _json_float(float(np.mean(means))) if means else None
    return {"overall": overall, "per_persona": per_persona}


def add_persona_values(metrics: dict, values: Mapping[str, Mapping[str, Any]],
                       details: Mapping[str, Mapping[str, Any]] | None = None,
                       not_averaged: Sequence[str] = ()) -> None:
    """Per persona: its scalar ``values`` and its ``details`` into ``metrics["per_persona"]``;
    overall: the mean of each scalar over the personas that have it (None where none has), but
    for the keys of ``not_averaged``."""
    scalars: dict[str, list[float]] = {}
    for pid, vals in values.items():
        pm = metrics["per_persona"].setdefault(pid, {})
        pm.update(vals)
        pm.update((details or {}).get(pid, {}))
        for k, v in vals.items():
            scalars.setdefault(k, [])
            if v is not None:
                scalars[k].append(float(v))
    for k, vs in scalars.items():
        if k not in not_averaged:
            metrics["overall"][k] = sum(vs) / len(vs) if vs else None


def add_representation(metrics: dict, generations: list[dict]) -> None:
    """Representation score = mean of the persona means (the paper's 4.29 is the plain mean of
    its three persona values; pooling answers weights personas by their question counts), SE of
    that mean from the persona SEs; ``representation_pooled`` keeps the pooled mean. With
    perturbations (acc_matched), each is summarised and the summaries averaged."""
    if not generations:
        return
    df = pd.DataFrame(generations)
    parts = [g for _, g in df.groupby("perturbation")] if df["perturbation"].notna().any() else [df]
    reps = [representation_summary(g) for g in parts]

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    def combined_se(per: dict) -> float | None:
        ses = [r["se"] for r in per.values()]
        if not ses or any(v is None for v in ses):
            return None
        return math.sqrt(sum(v * v for v in ses)) / len(ses)

    metrics["overall"].update({
        "representation_score": mean([r["overall"]["persona_mean"] for r in reps]),
        "representation_se": mean([combined_se(r["per_persona"]) for r in reps]),
        "representation_pooled": mean([r["overall"]["mean"] for r in reps]),
        "representation_missing": sum(r["overall"]["n_missing"] for r in reps),
        "representation_perturbations": len(reps)})
    for pid in reps[0]["per_persona"]:
        rs = [r["per_persona"][pid] for r in reps if pid in r["per_persona"]]
        metrics["per_persona"].setdefault(pid, {}).update(
            {"representation_score": mean([r["mean"] for r in rs]),
             "representation_se": mean([r["se"] for r in rs]),
             "representation_missing": sum(r["n_missing"] for r in rs)})


__all__ = ["PAPER_ACCURACY", "cell_metrics", "aggregate_folds", "representation_summary",
           "add_representation", "add_persona_values"]
