"""The report's example-selection section (``selection`` axis, plural_icm.selection): a table of
selection x condition per dataset, per-persona retrieval error and gain over zero-shot with an
equity check, and a figure of both per persona.

Cells of a non-default selection live under ``<condition>+<selection>`` (plural_icm.layout); the
selection's scalars (``retrieval_error``, SPICA's fitted weights) and whether it read gold
(``meta.selection_supervised``) are read from each cell's ``metrics.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from plural_icm.layout import METRICS, split_condition  # noqa: E402

PERSONA_KEYS = ["run_tag", "model", "dataset", "n", "fold", "seed"]
#: The second metric the equity check is reported on (argmax of P(True) over a question's options).
QUESTION_METRIC = "question_accuracy"
WEIGHTS = ("spica_w_sim", "spica_w_stability", "spica_w_contrast", "spica_intercept")
#: How the weights were fitted: dev pairs (under 4: no fit, similarity only) and the fit's R^2.
FIT = ("spica_fit_pairs", "spica_fit_r2")


def _read(path: Path) -> dict:
    try:
        return json.loads((Path(path) / METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def selection_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with ``base_condition``, ``selection``, ``retrieval_error`` and ``supervised``."""
    if cells.empty:
        return cells.assign(base_condition=[], selection=[], retrieval_error=[], supervised=[])
    rows = []
    for _, r in cells.iterrows():
        cond, sel = split_condition(r["condition"])
        m = _read(r["path"])
        meta = m.get("meta") or {}
        rows.append({**r.to_dict(), "base_condition": cond, "selection": sel,
                     "retrieval_error": (m.get("overall") or {}).get("retrieval_error"),
                     # gold conditions read gold anyway; for the others only a gold-reading selection does
                     "supervised": bool(meta.get("selection_supervised")) or cond in ("gold",)})
    return pd.DataFrame(rows)


def selection_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, n): one row per condition, one score column per selection (mean over
    folds and seeds, ``*`` where the selection read gold labels) and its retrieval error."""
    sc = selection_cells(cells)
    if sc.empty or (sc.selection == "all").all():
        return pd.DataFrame()
    out = []
    for (m, d, n, cond, sel), g in sc.groupby(["model", "dataset", "n", "base_condition", "selection"]):
        err = pd.to_numeric(g.retrieval_error, errors="coerce")
        out.append({"model": m, "dataset": d, "n": n, "condition": cond, "selection": sel,
                    "score": float(g.score.mean()), "folds": int(g.fold.nunique()),
                    "retrieval_error": float(err.mean()) if err.notna().any() else np.nan,
                    "supervised": bool(g.supervised.any())})
    return pd.DataFrame(out)


def persona_gains(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (cell of a non-default selection, persona): its score, the zero-shot cell's score of
    the same model/dataset/fold/seed, the gain, and the retrieval error."""
    sc = selection_cells(cells)
    if sc.empty:
        return pd.DataFrame()
    zs = {tuple(r[k] for k in ("run_tag", "model", "dataset", "fold", "seed")): _read(r["path"])
          for _, r in sc[sc.condition == "zero_shot"].iterrows()}
    rows = []
    for _, r in sc[sc.selection != "all"].iterrows():
        m = _read(r["path"])
        base = zs.get(tuple(r[k] for k in ("run_tag", "model", "dataset", "fold", "seed")))
        metric = (m.get("meta") or {}).get("score_metric") or "claim_accuracy"
        for pid, pm in (m.get("per_persona") or {}).items():
            zp = ((base or {}).get("per_persona") or {}).get(pid, {})
            z, s = zp.get(metric), pm.get(metric)
            qz, qs = zp.get(QUESTION_METRIC), pm.get(QUESTION_METRIC)
            rows.append({"model": r.model, "dataset": r.dataset, "condition": r.base_condition,
                         "selection": r.selection, "fold": r.fold, "seed": r.seed, "persona_id": pid,
                         "score": s, "zero_shot": z,
                         "gain": (s - z) if s is not None and z is not None else np.nan,
                         # the question-level metric too: the claim score can sit at chance for every
                         # cell (a model giving both options of each question the same label)
                         "question_gain": (qs - qz) if qs is not None and qz is not None else np.nan,
                         "retrieval_error": pm.get("retrieval_error"),
                         **{k: pm.get(k) for k in (*WEIGHTS, *FIT)},
                         "group_source": pm.get("selection_group_source")})
    return pd.DataFrame(rows)


def equity_table(gains: pd.DataFrame, column: str = "gain") -> pd.DataFrame:
    """SPICA's equity check per (model, dataset, condition, selection): how many personas gain
    over zero-shot, the smallest and largest mean gain, their gap, and (with at least two folds
    per persona) a Kruskal-Wallis p-value for a difference in gains between personas (NaN when
    every gain is equal). ``column``: ``gain`` (the score metric) or ``question_gain``."""
    if gains.empty or column not in gains or gains[column].isna().all():
        return pd.DataFrame()
    from scipy.stats import kruskal

    out = []
    for key, g in gains.dropna(subset=[column]).groupby(["model", "dataset", "condition", "selection"]):
        per = g.groupby("persona_id")[column]
        means = per.mean()
        samples = [v.to_numpy() for _, v in per]
        p = np.nan
        if len(samples) >= 2 and all(len(s) >= 2 for s in samples) and np.ptp(np.concatenate(samples)) > 0:
            p = float(kruskal(*samples).pvalue)
        out.append({**dict(zip(["model", "dataset", "condition", "selection"], key)),
                    "personas": len(means), "gaining": int((means > 0).sum()),
                    "min_gain": float(means.min()), "max_gain": float(means.max()),
                    "gap": float(means.max() - means.min()), "gap_p": p})
    return pd.DataFrame(out)


def fig_retrieval_and_gain(gains: pd.DataFrame, path: Path) -> Path | None:
    """Per persona: retrieval error (left) and gain over zero-shot (right), one bar per
    condition x selection."""
    if gains.empty:
        return None
    g = gains.assign(arm=gains.condition + " x " + gains.selection)
    err = g.groupby(["persona_id", "arm"]).retrieval_error.mean().unstack()
    gain = g.groupby(["persona_id", "arm"]).gain.mean().unstack()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, df, title in ((axes[0], err, "retrieval error (mean L, gold)"),
                          (axes[1], gain, "gain over zero-shot")):
        df.plot.bar(ax=ax, rot=30, width=0.8)
        ax.set_title(title)
        ax.set_xlabel("")
        ax.axhline(0, color="black", lw=0.6)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def section(cells: pd.DataFrame, out: Path) -> tuple[str, list[Path]]:
    """The report's Markdown section and the files it wrote (empty when no cell used a
    non-default selection)."""
    from analysis.tables import to_markdown

    table = selection_table(cells)
    if table.empty:
        return "", []
    gains = persona_gains(cells)
    equity = equity_table(gains)
    q_equity = equity_table(gains, "question_gain")
    written = []
    for name, df in (("selection.csv", table), ("selection_per_persona.csv", gains),
                     ("selection_equity.csv", equity), ("selection_equity_question.csv", q_equity)):
        df.to_csv(out / name, index=False)
        written.append(out / name)
    fig = fig_retrieval_and_gain(gains, out / "selection_retrieval_gain.png")
    if fig:
        written.append(fig)
    shown = table.assign(score=table.score.round(4), retrieval_error=table.retrieval_error.round(3),
                         selection=[s + (" *" if sup else "") for s, sup in zip(table.selection, table.supervised)])
    md = ["\n## Example selection (SPICA)\n",
          "Which examples each held-out question sees (`selection`): `all` (every example), `random`, "
          "`nearest` (SPICA's BASELINE: similarity only), `spica` (similarity and group terms, weights "
          "fitted per persona on an inner dev split of the training folds). `*`: the cell read gold "
          "labels (a gold condition, or SPICA's group terms from gold); `icm x spica` with the default "
          "`group_source=auto` reads ICM's confidences, no human label. Retrieval error: mean L between "
          "the held-out question's gold ratings and each retrieved question's.\n",
          to_markdown(shown.drop(columns=["supervised"]), digits=4)]
    if not equity.empty:
        md += ["\nEquity check (gain over zero-shot per persona; gap_p: Kruskal-Wallis across personas, "
               "needs two folds per persona):\n", to_markdown(equity, digits=4)]
    if not q_equity.empty:
        md += ["\nThe same on question accuracy (the option with the highest P(True) per question):\n",
               to_markdown(q_equity, digits=4)]
    w = gains.dropna(subset=["spica_w_sim"]) if "spica_w_sim" in gains else pd.DataFrame()
    if not w.empty:
        md += ["\nSPICA's fitted weights per persona (d = w_sim sim + w_stab g_stability + "
               "w_con g_contrast + c; fewer than 4 dev pairs: not fitted, similarity only, R^2 empty):\n",
               to_markdown(w[["model", "dataset", "condition", "fold", "persona_id", "group_source",
                              *WEIGHTS, *[k for k in FIT if k in w]]], digits=4)]
    if fig:
        md.append(f"\n![retrieval error and gain per persona]({fig.name})\n")
    return "\n".join(md) + "\n", written
