"""Tables of the report, each beside the paper's published values where they exist.

Conventions (stated in the report too):

* A *cell* is (model, dataset, condition, n, fold, seed). Seeds are averaged first, giving one
  score per fold; a condition's score is the **unweighted mean over folds** (as in the paper's
  Table 6 "Avg"), its SE the standard error over folds (sd/sqrt(k), k >= 2) or, with a single
  fold, the cell's own binomial SE (``score_se``).
* The score of GQA, OQA and PT is the CLAIM accuracy (the paper's metric: each True/False claim
  against gold); ``question_accuracy`` (highest-P(True) option == plurality option) is a second,
  stricter column with no published counterpart.
* Accuracies are shown in percent; the OvertonBench representation score on its 1-5 scale.
* Missing cells are NaN (shown as "—"), never 0. ``n_folds`` says how many folds a mean covers.
* Paper numbers are for Llama-3.1-70B (``analysis.paper_numbers``); the difference column is
  ours minus the paper, for every model, but only comparable for ``llama70b``.
* Significance: exact McNemar test on paired per-question correctness (pairs = same persona,
  question group, fold and seed in both conditions; question correct iff the option with the
  highest P(True) is the gold option), and a paired t-test over folds on the fold scores.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis import paper_numbers as paper
from plural_icm.metrics.classification import question_predictions
from plural_icm.metrics.significance import mcnemar_exact, paired_claims_test, paired_t_test

GROUP = ["run_tag", "model", "dataset", "condition", "n"]

# -- significance: the project's implementations ------------------------------------------------
def mcnemar_p(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int, int, float]:
    r = mcnemar_exact(a, b)
    return r.a_only, r.b_only, r.n, r.p_value


def paired_t_p(a: Sequence[float], b: Sequence[float]) -> float:
    p = paired_t_test(a, b)
    return np.nan if p is None else float(p)


def declared_metric(frame: pd.DataFrame, where: object = None) -> str | None:
    """The ``score_metric`` the cells of ``frame`` declared (``dataset.score_metric``), None when
    none did. Cells of one group that declare different metrics cannot share a mean: an error
    naming them, not a mixed number."""
    if "score_metric" not in frame.columns:
        return None
    found = sorted({m for m in frame["score_metric"] if isinstance(m, str) and m})
    if len(found) > 1:
        if where is None:
            where = sorted(set(frame["dataset"])) if "dataset" in frame.columns else "?"
        raise ValueError(f"cells of {where} declare different score metrics {found}; "
                         "analyse them separately (one dataset.score_metric per dataset)")
    return found[0] if found else None


def is_accuracy(dataset: str, metric: str | None = None) -> bool:
    """Whether the scores are accuracies (shown in percent): by the cells' declared
    ``score_metric`` when known, else by the dataset's default (``paper.SCORE_METRIC``)."""
    chosen = metric if isinstance(metric, str) and metric else paper.score_metric(dataset)
    return chosen in paper.ACCURACY_METRICS


def display_scale(dataset: str, metric: str | None = None) -> float:
    """Multiply a score by this for display: 100 for accuracies (percent), 1 for a
    representation score."""
    return 100.0 if is_accuracy(dataset, metric) else 1.0


def unit(dataset: str, metric: str | None = None) -> str:
    return "%" if is_accuracy(dataset, metric) else "score (1-5)"


def condition_sort_key(c: str) -> tuple[int, str]:
    order = paper.CONDITION_ORDER
    return (order.index(c) if c in order else len(order), c)


def sort_conditions(conds: Iterable[str]) -> list[str]:
    return sorted(set(conds), key=condition_sort_key)


# ---------------------------------------------------------------------------------------------
# selection and aggregation
# ---------------------------------------------------------------------------------------------

def choose_run_tag(cells: pd.DataFrame, run_tag: str | None = None) -> str | None:
    if cells.empty:
        return run_tag
    if run_tag is not None:
        return run_tag
    tags = sorted(cells["run_tag"].unique())
    return "main" if "main" in tags else tags[0]


def main_n(cells: pd.DataFrame) -> str | None:
    """The n of the main comparison: ``all`` when present, else the largest numeric n."""
    if cells.empty:
        return None
    ns = set(cells["n"].astype(str))
    if "all" in ns:
        return "all"
    return str(max(int(n) for n in ns))


def fold_scores(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds: one row per (run_tag, model, dataset, condition, n, fold)."""
    if cells.empty:
        return cells.assign(n_seeds=[])
    num = [c for c in ["score", "score_se", "question_accuracy", "ece", "stable_fraction", "js_distance",
                       "representation_score", "icm_label_accuracy", "icm_mutual_predictability",
                       "claim_accuracy", "n_examples", "n_questions"] if c in cells.columns]
    g = cells.groupby(GROUP + ["fold"], sort=True)
    out = g[num].mean()
    out["n_seeds"] = g.size()
    if "score_metric" in cells.columns:
        out["score_metric"] = pd.Series({key: declared_metric(part, dict(zip(GROUP + ["fold"], key)))
                                         for key, part in g})
    return out.reset_index()


def condition_means(folds: pd.DataFrame, metric: str = "score") -> pd.DataFrame:
    """Mean over folds and its SE per (run_tag, model, dataset, condition, n)."""
    rows = []
    for key, g in folds.groupby(GROUP, sort=True):
        vals = g[metric].dropna()
        k = int(vals.size)
        mean = float(vals.mean()) if k else np.nan
        if k >= 2:
            se, se_source = float(vals.std(ddof=1) / math.sqrt(k)), "folds"
        elif k == 1 and metric == "score" and "score_se" in g and g["score_se"].notna().any():
            se, se_source = float(g.loc[vals.index, "score_se"].iloc[0]), "binomial"
        else:
            se, se_source = np.nan, ""
        rows.append({**dict(zip(GROUP, key)), metric: mean, "se": se, "se_source": se_source,
                     "n_folds": k, "folds": ",".join(str(f) for f in sorted(g.loc[vals.index, "fold"])),
                     "score_metric": declared_metric(g)})
    return pd.DataFrame(rows, columns=GROUP + [metric, "se", "se_source", "n_folds", "folds",
                                               "score_metric"])


def paired_on_common_folds(folds: pd.DataFrame, cond: str, ref: str) -> pd.DataFrame:
    """Per (model, dataset): mean score of ``cond`` and of ``ref`` over the folds both have (so a
    missing fold of one condition does not bias a ratio or a difference)."""
    rows = []
    for (rt, m, d, n), g in folds.groupby(["run_tag", "model", "dataset", "n"], sort=True):
        a = g[g.condition == cond].set_index("fold")["score"].dropna()
        b = g[g.condition == ref].set_index("fold")["score"].dropna()
        common = sorted(set(a.index) & set(b.index))
        if not common:
            continue
        da, db = a.loc[common], b.loc[common]
        diffs = (da - db).to_numpy()
        rows.append({"run_tag": rt, "model": m, "dataset": d, "n": n, "condition": cond,
                     "reference": ref, "score": float(da.mean()), "ref_score": float(db.mean()),
                     "diff": float(diffs.mean()),
                     "diff_se": float(np.std(diffs, ddof=1) / math.sqrt(len(diffs)))
                     if len(diffs) >= 2 else np.nan,
                     "ratio": float(da.mean() / db.mean()) if db.mean() else np.nan,
                     "n_folds": len(common)})
    return pd.DataFrame(rows, columns=["run_tag", "model", "dataset", "n", "condition",
                                       "reference", "score", "ref_score", "diff", "diff_se",
                                       "ratio", "n_folds"])


# ---------------------------------------------------------------------------------------------
# significance
# ---------------------------------------------------------------------------------------------

def question_correctness(preds: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, condition, n, fold, seed, persona, group): ``correct`` (bool or NaN).

    Uses ``plural_icm.metrics.classification.question_predictions`` when available (the same
    decision rule as the pipeline's accuracy), else the same rule inline."""
    if preds.empty:
        return pd.DataFrame(columns=GROUP + ["fold", "seed", "persona_id", "group_id", "correct"])
    if "p_true" not in preds.columns:
        lt, lf = preds["logp_true"].astype(float), preds["logp_false"].astype(float)
        preds = preds.assign(p_true=1.0 / (1.0 + np.exp(lf - lt)))
    if "group_id" not in preds.columns:
        preds = preds.assign(group_id=preds["question_id"])
    keys = GROUP + ["fold", "seed"]
    # acc_matched cells hold one prediction set per perturbation: judged separately, then one
    # verdict per question (the majority over perturbations, an odd number) for paired tests.
    per_perturbation = "perturbation" in preds.columns
    if per_perturbation:
        preds = preds.assign(perturbation=preds["perturbation"].fillna(-1).astype(int))
        keys = keys + ["perturbation"]
    frames = []
    for key, g in preds.groupby(keys, sort=True):
        q = question_predictions(g.drop(columns=["fold"], errors="ignore"))
        q = q[["persona_id", "group_id", "correct"]].copy()
        for k, v in zip(keys, key):
            q[k] = v
        frames.append(q)
    out = pd.concat(frames, ignore_index=True)
    if per_perturbation:
        rest = [k for k in keys if k != "perturbation"] + ["persona_id", "group_id"]
        frac = out.assign(correct=out["correct"].astype(float)).groupby(rest, sort=True)["correct"].mean()
        out = frac.map(lambda f: f if np.isnan(f) else bool(f > 0.5)).rename("correct").reset_index()
    return out


def claim_correctness(preds: pd.DataFrame) -> pd.DataFrame:
    """Per claim of every cell: ``correct`` (the claim's prediction, P(True) > 0.5, equals its gold
    label; NaN without gold), with ``question_id`` for clustering: the unit of the claim accuracy
    the report shows (the paper's metric). acc_matched cells hold one prediction per perturbation:
    a claim's verdict is the majority over them (a tie, with an even number, counts as wrong)."""
    cols = GROUP + ["fold", "seed", "persona_id", "question_id", "item_id", "correct"]
    if preds.empty:
        return pd.DataFrame(columns=cols)
    if "p_true" not in preds.columns:
        lt, lf = preds["logp_true"].astype(float), preds["logp_false"].astype(float)
        preds = preds.assign(p_true=1.0 / (1.0 + np.exp(lf - lt)))
    if "question_id" not in preds.columns:
        preds = preds.assign(question_id=preds.get("group_id", preds["item_id"]))
    ok = preds["gold"].notna()
    right = (preds["p_true"].astype(float) > 0.5) == preds["gold"].where(ok, False).astype(bool)
    out = preds.assign(correct=right.astype(float).where(ok))
    keys = [c for c in cols if c != "correct"]
    frac = out.groupby(keys, sort=True, dropna=False)["correct"].mean()
    return frac.map(lambda f: f if np.isnan(f) else bool(f > 0.5)).rename("correct").reset_index()


#: The p-value shown when the paired t-test is undefined (every fold difference the same).
T_UNDEFINED = "undefined"


def _t_folds(a, b):
    """The paired t-test's p over folds, or :data:`T_UNDEFINED` when the fold differences are all
    identical (sd 0: t is 0/0 or x/0), which is not p = 0 or 1."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    if d.size >= 2 and np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        return T_UNDEFINED
    return paired_t_p(a, b)


#: Condition pairs tested (A, B): ICM against every other, and gold against zero-shot.
DEFAULT_PAIRS = [("icm", "zero_shot"), ("icm", "zero_shot_base"), ("icm", "random"),
                 ("icm", "acc_matched"), ("icm", "gold"), ("gold", "zero_shot")]


def significance_table(folds: pd.DataFrame, ccorrect: pd.DataFrame,
                       pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS) -> pd.DataFrame:
    """Per (model, dataset, A, B): the paired claims test (:func:`paired_claims_test`: claims
    paired on fold, seed, persona and item, clustered by question; the exact McNemar test over
    claims where each question has one, as OvertonBench) on the claim accuracy the report shows,
    and the paired t over folds. ``ccorrect``: :func:`claim_correctness`."""
    rows = []
    for (rt, m, d, n), g in folds.groupby(["run_tag", "model", "dataset", "n"], sort=True):
        for a, b in pairs:
            fa = g[g.condition == a].set_index("fold")["score"].dropna()
            fb = g[g.condition == b].set_index("fold")["score"].dropna()
            common = sorted(set(fa.index) & set(fb.index))
            if not common:
                continue
            row = {"run_tag": rt, "model": m, "dataset": d, "n": n, "A": a, "B": b,
                   "mean_A": float(fa.loc[common].mean()), "mean_B": float(fb.loc[common].mean()),
                   "n_folds": len(common),
                   "p_t_folds": _t_folds(fa.loc[common].to_numpy(), fb.loc[common].to_numpy()),
                   "n_claims": 0, "n_questions": 0, "A_only": np.nan, "B_only": np.nan,
                   "p_claims": np.nan, "test": ""}
            if not ccorrect.empty:
                sel = (ccorrect.run_tag == rt) & (ccorrect.model == m) & (ccorrect.dataset == d) \
                    & (ccorrect.n == n)
                qa = ccorrect[sel & (ccorrect.condition == a)]
                qb = ccorrect[sel & (ccorrect.condition == b)]
                k = ["fold", "seed", "persona_id", "question_id", "item_id"]
                mm = qa[k + ["correct"]].merge(qb[k + ["correct"]], on=k, suffixes=("_a", "_b"))
                mm = mm[mm.correct_a.notna() & mm.correct_b.notna()]
                if len(mm):
                    clusters = list(zip(mm.fold, mm.seed, mm.persona_id, mm.question_id))
                    r = paired_claims_test(mm.correct_a.astype(bool).to_numpy(),
                                           mm.correct_b.astype(bool).to_numpy(), clusters)
                    row.update({"n_claims": r.n_claims, "n_questions": r.n_clusters,
                                "A_only": r.a_only, "B_only": r.b_only, "p_claims": r.p_value,
                                "test": r.test})
            rows.append(row)
    return pd.DataFrame(rows, columns=["run_tag", "model", "dataset", "n", "A", "B", "mean_A",
                                       "mean_B", "n_folds", "p_t_folds", "n_claims", "n_questions",
                                       "A_only", "B_only", "p_claims", "test"])


# ---------------------------------------------------------------------------------------------
# the report's tables
# ---------------------------------------------------------------------------------------------

def headline_table(means: pd.DataFrame, sig: pd.DataFrame,
                   question_means: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (model, dataset, condition): our mean score (display units; claim accuracy for the
    accuracy datasets, the paper's metric), SE, folds, paper value (Section 5.1 headline or Table 6
    average), difference, p-values of ICM vs the condition, and, when ``question_means`` is given
    (``condition_means(folds, "question_accuracy")``), our question-level accuracy, which has no
    published counterpart."""
    qacc = {}
    if question_means is not None and not question_means.empty:
        qacc = {tuple(r[k] for k in GROUP): r.question_accuracy for _, r in question_means.iterrows()}
    rows = []
    for _, r in means.iterrows():
        metric = r.get("score_metric")
        s = display_scale(r.dataset, metric)
        pv = paper.headline(r.dataset, r.condition)
        if pv is None and paper.key(r.dataset) == "gqa" and r.condition in paper.TABLE6_GQA:
            pv = paper.TABLE6_GQA[r.condition][1]
        row = {"model": r.model, "dataset": r.dataset, "condition": r.condition, "n": r.n,
               "unit": unit(r.dataset, metric), "ours": r.score * s, "se": r.se * s,
               "n_folds": r.n_folds, "paper": np.nan if pv is None else pv * s,
               "paper_items": paper.items(r.dataset) if pv is not None else ""}
        row["diff"] = row["ours"] - row["paper"]
        p_mc = p_t = np.nan
        if not sig.empty and r.condition != "icm":
            hit = sig[(sig.model == r.model) & (sig.dataset == r.dataset) & (sig.n == r.n)
                      & (sig.A == "icm") & (sig.B == r.condition)]
            if len(hit):
                p_mc, p_t = hit.p_claims.iloc[0], hit.p_t_folds.iloc[0]
        row["p_icm_vs_this_claims"] = p_mc
        row["p_icm_vs_this_t_folds"] = p_t
        q = qacc.get(tuple(r[k] for k in GROUP), np.nan)
        row["question_accuracy"] = q * s if is_accuracy(r.dataset, metric) else np.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=["model", "dataset", "condition", "n", "unit", "ours", "se",
                                     "n_folds", "paper", "paper_items", "diff", "p_icm_vs_this_claims",
                                     "p_icm_vs_this_t_folds", "question_accuracy"])
    return _sort(df)


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "condition" not in df.columns:
        return df.reset_index(drop=True)
    key = df["condition"].map(lambda c: condition_sort_key(c)[0])
    by = [c for c in ["model", "dataset"] if c in df.columns]
    return df.assign(_k=key).sort_values(by + ["_k", "condition"]).drop(columns="_k") \
        .reset_index(drop=True)


def per_fold_table(folds: pd.DataFrame, sig: pd.DataFrame) -> pd.DataFrame:
    """Table 6: score per fold (F1 = fold0 ...) and average, beside the paper's GQA rows."""
    if folds.empty:
        return pd.DataFrame()
    max_fold = int(folds.fold.max())
    cols = [f"F{k + 1}" for k in range(max_fold + 1)]
    rows = []
    for (m, d, c, n), g in folds.groupby(["model", "dataset", "condition", "n"], sort=True):
        s = display_scale(d, declared_metric(g))
        row = {"model": m, "dataset": d, "condition": c, "n": n}
        for k in range(max_fold + 1):
            v = g.loc[g.fold == k, "score"]
            row[f"F{k + 1}"] = float(v.iloc[0]) * s if len(v) and pd.notna(v.iloc[0]) else np.nan
        vals = [row[x] for x in cols if pd.notna(row[x])]
        row["Avg"] = float(np.mean(vals)) if vals else np.nan
        row["n_folds"] = len(vals)
        pub = paper.TABLE6_GQA.get(c) if paper.key(d) == "gqa" else None
        row["paper_items"] = paper.items(d) if pub else ""
        for k in range(4):
            row[f"paper_F{k + 1}"] = pub[0][k] * s if pub else np.nan
        row["paper_Avg"] = pub[1] * s if pub else np.nan
        row["diff_Avg"] = row["Avg"] - row["paper_Avg"]
        p = np.nan
        if not sig.empty and c != "icm":
            hit = sig[(sig.model == m) & (sig.dataset == d) & (sig.n == n) & (sig.A == "icm")
                      & (sig.B == c)]
            if len(hit):
                p = hit.p_t_folds.iloc[0]
        row["p_icm_vs_this_t_folds"] = p
        rows.append(row)
    return _sort(pd.DataFrame(rows))


def label_accuracy_table(per_persona: pd.DataFrame) -> pd.DataFrame:
    """Table 4: ICM label accuracy per persona (%), mean over folds, beside the paper's.

    Source: the ``icm_label_accuracy`` the ICM cells record per persona, i.e. the label accuracy of
    the best-of-restarts, unconstrained search each cell used (seeds averaged per fold). Other
    searches on disk are not averaged in: non-best restarts, and the collaborative stage's re-runs
    with human answers fixed (a Nigeria search at 76.92% plus one constrained search would read
    84.46%). When no ``icm`` cell exists, the ``acc_matched`` cells (same searches) are used."""
    cols = ["model", "dataset", "persona", "label_accuracy", "n_folds", "paper", "diff", "source"]
    if per_persona.empty:
        return pd.DataFrame(columns=cols)
    pp = per_persona.rename(columns={"persona_id": "persona"})
    rows = []
    for (m, d), part in pp.groupby(["model", "dataset"], sort=True):
        cond = next((c for c in ("icm", "acc_matched") if
                     part.loc[part.condition == c, "icm_label_accuracy"].notna().any()), None)
        if cond is None:
            continue
        g = part[part.condition == cond].groupby(["persona", "fold"]).icm_label_accuracy.mean()
        for p, vals in g.groupby(level="persona", sort=True):
            vals = vals.dropna()
            ours = float(vals.mean()) * 100 if len(vals) else np.nan
            pub = paper.TABLE4_LABEL_ACCURACY.get(paper.key(d), {}).get(p)
            rows.append({"model": m, "dataset": d, "persona": p, "label_accuracy": ours,
                         "n_folds": int(vals.size), "paper": np.nan if pub is None else pub * 100,
                         "diff": ours - (pub * 100) if pub is not None else np.nan,
                         "source": f"{cond} cells (best-of-restarts search)"})
    return pd.DataFrame(rows, columns=cols)


def per_persona_table(per_persona: pd.DataFrame, n: str | None) -> pd.DataFrame:
    """Tables 7/8: per (model, dataset, persona) the mean-over-folds score of every condition,
    beside the paper's zero-shot and ICM values (PT accuracy, OT representation score)."""
    if per_persona.empty:
        return pd.DataFrame()
    pp = per_persona if n is None else per_persona[per_persona.n.astype(str) == n]
    f = pp.groupby(["model", "dataset", "condition", "persona_id", "fold"]).score.mean().reset_index()
    conds = sort_conditions(f.condition)
    metrics = {key: declared_metric(part, key) for key, part in pp.groupby(["model", "dataset"])}
    rows = []
    for (m, d, p), g in f.groupby(["model", "dataset", "persona_id"], sort=True):
        metric = metrics.get((m, d))
        s = display_scale(d, metric)
        row = {"model": m, "dataset": d, "persona": p, "unit": unit(d, metric)}
        for c in conds:
            v = g.loc[g.condition == c, "score"].dropna()
            row[c] = float(v.mean()) * s if len(v) else np.nan
        pub = paper.TABLE7_8_PER_PERSONA.get(paper.key(d), {}).get(p, {})
        for c in ("zero_shot", "icm"):
            row[f"paper_{c}"] = pub[c] * s if c in pub else np.nan
            row[f"diff_{c}"] = row.get(c, np.nan) - row[f"paper_{c}"]
        rows.append(row)
    return pd.DataFrame(rows)


def mark_self_judged(headline: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Add ``paper_comparable``: False for OvertonBench rows whose cells were judged by the model
    under test, or by another judge without a stated validation against OvertonBench's human
    ratings (``inference.judge_validation``; the paper used a judge with rho = 0.88 to humans, and
    our judge prompt is ours), True for other rows with a paper value, NaN without one. Such rows
    also lose their ``diff``: it would compare two judges."""
    if headline.empty:
        return headline
    out = headline.copy()
    selfj = set()
    if "judge_is_model_under_test" in cells.columns:
        hit = cells[cells.judge_is_model_under_test.fillna(False).astype(bool)]
        selfj = {(r.model, r.dataset, r.condition) for r in hit.itertuples()}
        if "judge_validation" in cells.columns:  # another judge, but nothing says it is sound
            other = cells[cells.judge_is_model_under_test.eq(False) & cells.judge_validation.isna()]
            selfj |= {(r.model, r.dataset, r.condition) for r in other.itertuples()}
    comparable = []
    for r in out.itertuples():
        if (r.model, r.dataset, r.condition) in selfj:
            comparable.append(False)
        else:
            comparable.append(True if pd.notna(r.paper) else np.nan)
    out["paper_comparable"] = comparable
    out.loc[out.paper_comparable.eq(False), "diff"] = np.nan
    return out


def js_distance_table(per_persona: pd.DataFrame, preds: pd.DataFrame,
                      n: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Distributional pluralism, the paper's complementary lens.

    Returns (per persona and condition: the mean over folds of the cells' Jensen-Shannon distance
    between predicted and observed answer distributions, base 2, in [0, 1]; per question: the
    observed distribution beside the predicted one, mean over seeds and perturbations). The
    prediction over a question's options is its P(True) values normalised to sum 1, as the
    pipeline computes it (:mod:`plural_icm.metrics.distribution`)."""
    table = pd.DataFrame()
    if not per_persona.empty and per_persona.js_distance.notna().any():
        pp = per_persona if n is None else per_persona[per_persona.n.astype(str) == n]
        f = pp.groupby(["model", "dataset", "persona_id", "condition", "fold"]) \
            .js_distance.mean().reset_index()
        table = f.groupby(["model", "dataset", "persona_id", "condition"]).js_distance \
            .agg(js_distance="mean", n_folds="count").reset_index() \
            .rename(columns={"persona_id": "persona"})
        wide = table.pivot_table(index=["model", "dataset", "persona"], columns="condition",
                                 values="js_distance").reset_index()
        wide.columns.name = None
        conds = [c for c in sort_conditions(table.condition) if c in wide.columns]
        table = wide[["model", "dataset", "persona"] + conds]
    dists = pd.DataFrame()
    if not preds.empty and "distribution" in preds.columns:
        p = preds[preds.distribution.map(lambda d: isinstance(d, list) and len(d) > 0)]
        if len(p):
            p = p.assign(option_index=p.option_index.astype(int))
            keys = ["model", "dataset", "condition", "persona_id", "group_id"]
            g = p.groupby(keys + ["fold", "seed", "option_index"] +
                          (["perturbation"] if "perturbation" in p.columns else []),
                          dropna=False).p_true.mean().reset_index()
            g = g.groupby(keys + ["fold", "seed", "option_index"]).p_true.mean().reset_index()
            rows = []
            observed = p.drop_duplicates(keys).set_index(keys).distribution
            for key, gg in g.groupby(keys + ["fold", "seed"], sort=True):
                gg = gg.sort_values("option_index")
                obs = list(observed.loc[key[:5]])
                sel = [obs[i] for i in gg.option_index if i < len(obs)]
                tot = float(np.nansum(gg.p_true))
                rows.append(dict(zip(keys + ["fold", "seed"], key)) | {
                    "observed": [round(float(x) / sum(sel), 4) for x in sel] if sum(sel) else sel,
                    "predicted": [round(float(x) / tot, 4) for x in gg.p_true] if tot else None})
            d = pd.DataFrame(rows)
            dists = d.groupby(keys).agg(observed=("observed", "first"),
                                        predicted=("predicted", lambda s: [
                                            round(float(v), 4) for v in np.mean(
                                                [x for x in s if x is not None], axis=0)]
                                            if any(x is not None for x in s) else None)
                                        ).reset_index().rename(columns={"persona_id": "persona"})
    return table, dists


LABEL_SET_ORDER = ["gold", "icm", "acc_matched", "bootstrap", "random"]


def label_set_table(sets: pd.DataFrame) -> pd.DataFrame:
    """Coherence beyond accuracy (the paper's central claim): per (model, dataset, the cell's
    condition, label set) the training labels' accuracy (%), coherence P (mean signed log-odds
    under the base model, the search's scorer) and consistency violations, each averaged over
    personas, folds, seeds and an acc-matched set's seeds. ``source`` is the cell that scored the
    sets: ``acc_matched`` (the fork's construction), ``acc_matched_swap`` (ours) or
    ``bootstrap``; gold, random and ICM are rescored inside the acc-matched cells on the same
    claims, so their rows are comparable with the acc-matched ones."""
    cols = ["model", "dataset", "source", "label_set", "accuracy", "coherence_P", "violations",
            "n_labels", "n"]
    if sets.empty:
        return pd.DataFrame(columns=cols)
    per = sets.groupby(["model", "dataset", "condition", "label_set", "fold", "seed", "persona_id"],
                       sort=True)[["accuracy", "coherence_P", "violations", "n_labels"]].mean()
    agg = per.groupby(level=["model", "dataset", "condition", "label_set"]).agg(
        accuracy=("accuracy", "mean"), coherence_P=("coherence_P", "mean"),
        violations=("violations", "mean"), n_labels=("n_labels", "mean"),
        n=("accuracy", "size")).reset_index().rename(columns={"condition": "source"})
    agg["accuracy"] = agg["accuracy"] * 100
    rank = {k: i for i, k in enumerate(LABEL_SET_ORDER)}
    agg = agg.assign(_k=agg.label_set.map(lambda k: rank.get(k, len(rank))))
    return agg.sort_values(["model", "dataset", "source", "_k"]).drop(columns="_k")[cols] \
        .reset_index(drop=True)


def ece_table(means_ece: pd.DataFrame) -> pd.DataFrame:
    """Table 9: ECE per (model, dataset, condition) beside the paper's (GQA/OQA, 15 bins)."""
    rows = []
    for _, r in means_ece.iterrows():
        pub = paper.TABLE9_ECE.get(paper.key(r.dataset), {}).get(r.condition)
        rows.append({"model": r.model, "dataset": r.dataset, "condition": r.condition, "n": r.n,
                     "ece": r.ece, "se": r.se, "n_folds": r.n_folds,
                     "paper": np.nan if pub is None else pub,
                     "diff": r.ece - pub if pub is not None else np.nan})
    return _sort(pd.DataFrame(rows, columns=["model", "dataset", "condition", "n", "ece", "se",
                                             "n_folds", "paper", "diff"]))


def simple_metric_table(means: pd.DataFrame, metric: str, scale: float = 1.0) -> pd.DataFrame:
    out = means.rename(columns={metric: metric}).copy()
    out[metric] = out[metric] * scale
    out["se"] = out["se"] * scale
    return _sort(out[["model", "dataset", "condition", "n", metric, "se", "n_folds"]])


def sample_efficiency_table(folds: pd.DataFrame) -> pd.DataFrame:
    """Figure 7 data: score vs number of in-context examples, per (model, dataset, condition).

    ``n_examples`` is the number in the directory name, or for ``nall`` the mean ``meta.n_examples``
    the cells report (NaN if they report none)."""
    if folds.empty:
        return pd.DataFrame()
    means = condition_means(folds)
    ne = folds.groupby(GROUP).n_examples.mean().rename("meta_n_examples").reset_index()
    t = means.merge(ne, on=GROUP, how="left")
    t["n_examples"] = [float(n) if str(n).isdigit() else me for n, me in zip(t.n, t.meta_n_examples)]
    s = t.dataset.map(display_scale)
    t["score"] = t.score * s
    t["se"] = t.se * s
    return t[["model", "dataset", "condition", "n", "n_examples", "score", "se", "n_folds"]] \
        .sort_values(["model", "dataset", "condition", "n_examples"]).reset_index(drop=True)


def collaborative_table(collab: pd.DataFrame) -> pd.DataFrame:
    """Table 1: per (model, dataset, persona, method) test / label accuracy and U (the paper's
    "coherence", alpha * P - I), before and after, beside the paper's GQA values.

    The paper asks one label per fold over 4 folds (k = 4): each fold's search and test split are
    one cross-validation run, so the row is the mean over the folds present, with ``k`` the labels
    asked in total and ``n_folds`` how many folds it rests on (a partial run shows fewer)."""
    if collab.empty:
        return pd.DataFrame()
    keys = ["model", "dataset", "persona", "method"]
    vals = [c for c in collab.columns if c.endswith(("test_accuracy", "label_accuracy", "U"))]
    # people's answers (an exported web study) and the simulated-gold run: separate rows, side by
    # side, with the people's agreement (columns absent in frames built before they existed)
    if "answers" in collab.columns:
        keys.append("answers")
        collab = collab.assign(answers=collab["answers"].fillna("—"))
    agree = [c for c in ("annotators", "majority_share", "fleiss_kappa", "answers_match_gold")
             if c in collab.columns]
    t = collab.groupby(keys).agg(k=("k", "sum"), n_folds=("fold", "nunique"),
                                 **{v: (v, "mean") for v in vals + agree}).reset_index()
    t["k"] = t["k"].round().astype("Int64")
    pub = {(r.persona, r.method): r for r in paper.TABLE1_COLLABORATIVE}
    human = t["answers"].eq("human") if "answers" in t.columns else pd.Series(False, index=t.index)
    for k in ("test_accuracy", "label_accuracy", "U"):
        # the paper simulated its humans with gold: its numbers sit beside simulated runs only
        t[f"paper_{k}"] = [getattr(pub[(r.persona, r.method)], k)
                           if paper.key(r.dataset) == paper.COLLABORATIVE_DATASET and (r.persona, r.method) in pub
                           and not h else np.nan for r, h in zip(t.itertuples(), human)]
        t[f"diff_{k}"] = t[k] - t[f"paper_{k}"]
    return t.sort_values(keys).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Markdown rendering (no tabulate dependency)
# ---------------------------------------------------------------------------------------------

def fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if float(v).is_integer() and abs(v) < 1e6 and digits == 0:
            return str(int(v))
        return f"{float(v):.{digits}f}"
    return str(v)


def fmt_p(v) -> str:
    if isinstance(v, str):
        return v  # T_UNDEFINED
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.1e}" if v < 1e-3 else f"{v:.3f}"


#: Columns holding counts (printed as integers, never "12.00").
COUNT_COLUMNS = {"n_folds", "n_questions", "A_only", "B_only", "n_seeds", "fold", "k", "n",
                 "iterations", "accepted", "asked", "elicited", "inconsistencies", "I",
                 "n_claims", "n_examples", "n_labelled", "n_personas", "n_cells", "seed"}


def is_count_column(name: str) -> bool:
    """Whether a table column holds counts: a known count, or ``n_<what>``/``<what>_count``."""
    return name in COUNT_COLUMNS or name.startswith("n_") or name.endswith("_count")


def to_markdown(df: pd.DataFrame, digits: int | dict[str, int] = 2) -> str:
    """A GitHub Markdown table; NaN as "—"; columns starting with ``p_`` as p-values."""
    if df is None or df.empty:
        return "_(no data)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c.startswith("p_"):
                cells.append(fmt_p(v))
            elif is_count_column(c):
                # a mean of counts over folds may be fractional: then one decimal, never hidden
                frac = isinstance(v, (float, np.floating)) and not math.isnan(v) \
                    and not float(v).is_integer()
                cells.append(fmt(v, 1 if frac else 0))
            else:
                d = digits.get(c, 2) if isinstance(digits, dict) else digits
                cells.append(fmt(v, d))
        # a "|" inside a value (an id) would split the cell
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines) + "\n"
