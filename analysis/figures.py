"""Figures of the report (matplotlib, Agg backend, PNG). Each function takes the tables of
:mod:`analysis.tables` and a path, and returns the path written or None when there is no data.

Missing cells are left out of a plot (no bar), never drawn as 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import paper_numbers as paper  # noqa: E402
from analysis.paper_numbers import CONDITION_LABELS  # noqa: E402
from analysis.tables import declared_metric, display_scale, is_accuracy, sort_conditions  # noqa: E402

COND_COLORS = {"zero_shot_base": "#bbbbbb", "zero_shot": "#7f7f7f", "random": "#9ecae1",
               "bootstrap": "#9467bd",
               "acc_matched": "#fdae6b", "icm": "#d62728", "gold": "#2ca02c"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _label(c: str) -> str:
    return CONDITION_LABELS.get(c, c)


def _color(c: str, i: int = 0) -> str:
    return COND_COLORS.get(c, plt.cm.tab10(i % 10))


def _ylabel(dataset: str, delta: bool = False, metric: str | None = None) -> str:
    if is_accuracy(dataset, metric):
        return "Δ accuracy (percentage points)" if delta else "Accuracy (%)"
    return "Δ representation score (1–5 scale)" if delta else "Representation score (1–5)"


#: Models ordered by family, then size (the paper's Table 3 order within a family).
MODEL_ORDER = ["llama8b", "llama70b", "qwen14b", "qwen30b", "olmo7b", "olmo32b"]
PAPER_STYLE = dict(marker="D", color="black", markerfacecolor="yellow", markersize=7, ls="none",
                   zorder=5)
PAPER_LABEL = f"paper ({paper.PAPER_MODEL})"


def sort_models(models) -> list[str]:
    """Known models by family and size (llama 8B, 70B, qwen 14B, 30B, olmo 7B, 32B), then the
    others alphabetically."""
    models = set(models)
    return [m for m in MODEL_ORDER if m in models] + sorted(models - set(MODEL_ORDER))


def paper_score(dataset: str, condition: str) -> float | None:
    """The paper's score of (dataset, condition) as a fraction (OT: 1-5): GQA from Table 6's
    averages (all six conditions from one table), otherwise the Section 5.1 headline."""
    if paper.key(dataset) == "gqa" and condition in paper.TABLE6_GQA:
        return paper.TABLE6_GQA[condition][1]
    return paper.headline(dataset, condition)


def _paper_points(ax, xs, values, labelled: bool) -> bool:
    """Yellow diamonds at the paper's values (None skipped); returns whether any was drawn."""
    pts = [(x, v) for x, v in zip(xs, values) if v is not None and not np.isnan(v)]
    if not pts:
        return False
    ax.plot([x for x, _ in pts], [v for _, v in pts], label=PAPER_LABEL if labelled else None,
            **PAPER_STYLE)
    return True


def _note_axis_start(ax) -> None:
    """Say so when a bar axis does not start at 0 (bar heights are then not proportional): in
    the axis label, where it cannot overlap a title or a subtitle."""
    lo = ax.get_ylim()[0]
    if lo > 0:
        ax.set_ylabel(f"{ax.get_ylabel()}\n(axis starts at {lo:g}, not 0)")
        ax.yaxis.label.set_color("#b00000")


#: The one error-bar rule of every bar figure: SE over folds (sample SD / sqrt(k)) with two or
#: more folds; with one fold, the cell's own binomial SE (``score_se``), as Table 6's ± column.
SE_RULE = "SE over folds; one fold: the cell's binomial SE"


def fold_se(scores: pd.Series, cell_se: pd.Series | None = None) -> float:
    """:data:`SE_RULE` for the scores of one bar (NaN when it cannot be given)."""
    vals = scores.dropna()
    if len(vals) >= 2:
        return float(vals.std(ddof=1) / math.sqrt(len(vals)))
    if len(vals) == 1 and cell_se is not None:
        se = cell_se.reindex(vals.index).dropna()
        return float(se.iloc[0]) if len(se) else np.nan
    return np.nan


def _mark_missing(ax, xs, values, label: bool = False) -> bool:
    """An "×" on the x axis where a cell is missing (NaN), so that no bar never reads as a
    silent 0 or as a forgotten condition; returns whether any was drawn."""
    drew = False
    for x, v in zip(xs, values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            ax.text(x, 0.02, "×", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=11, color="#b00000", zorder=6)
            drew = True
    if drew and label:
        ax.plot([], [], ls="none", marker="x", color="#b00000", label="missing cell")
    return drew


def _mark_zero_bars(ax, xs, values, width: float, text: bool = True) -> None:
    """A true 0 draws no visible bar: mark it with a thick line (and "0" unless the figure labels
    its bars already) so it does not read as a missing cell (missing cells are NaN, left empty)."""
    for x, v in zip(xs, values):
        if v is not None and not np.isnan(v) and v == 0:
            ax.hlines(ax.get_ylim()[0] if ax.get_ylim()[0] > 0 else 0, x - width / 2, x + width / 2,
                      colors="black", lw=3, zorder=4)
            if text:
                ax.annotate("0", (x, 0), xytext=(0, 3), textcoords="offset points", ha="center",
                            fontsize=7)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(n: int, max_cols: int = 3, w: float = 5.0, h: float = 3.8):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def fig1_percent_of_gold(ratios: pd.DataFrame, path: Path) -> Path | None:
    """Bars: each condition's score as % of gold, mean over (model, dataset) pairs; markers: the
    individual pairs, one marker shape per dataset (ratios on the folds both conditions have)."""
    if ratios.empty:
        return None
    conds = sort_conditions(ratios.condition)
    datasets = sorted(ratios.dataset.unique())
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(conds) + 2), 4.5))
    rng = np.random.default_rng(0)
    bar_means = []
    for i, c in enumerate(conds):
        v = ratios[ratios.condition == c].ratio.dropna() * 100
        bar_means.append(v.mean() if len(v) else np.nan)
        if len(v) == 0:
            continue
        ax.bar(i, v.mean(), color=_color(c, i), alpha=0.8, edgecolor="black", width=0.7)
        ax.text(i, v.mean() + 1, f"{v.mean():.1f}", ha="center", va="bottom", fontsize=8)
    # the paper's ratio (condition / gold, Llama-3.1-70B), mean over the datasets shown
    pub = []
    for c in conds:
        r = [paper_score(d, c) / paper_score(d, "gold") * 100 for d in datasets
             if paper_score(d, c) is not None and paper_score(d, "gold")]
        pub.append(float(np.mean(r)) if r else None)
    for j, d in enumerate(datasets):
        sub = ratios[ratios.dataset == d]
        xs = [conds.index(c) + rng.uniform(-0.18, 0.18) for c in sub.condition]
        ax.scatter(xs, sub.ratio * 100, marker=MARKERS[j % len(MARKERS)], color="black",
                   facecolor="white", zorder=3, s=28, label=f"{d} (each model)")
    ax.axhline(100, color="#2ca02c", ls="--", lw=1, label="gold = 100%")
    _paper_points(ax, np.arange(len(conds)) + 0.25, pub, labelled=True)
    ax.set_xticks(range(len(conds)), [_label(c) for c in conds], rotation=20, ha="right")
    ax.set_ylabel("Score as % of few-shot gold")
    lo = float(np.nanmin(ratios.ratio * 100))
    ax.set_ylim(min(50, lo - 5), max(110, float(np.nanmax(ratios.ratio * 100)) + 8))
    _mark_zero_bars(ax, range(len(conds)), bar_means, 0.7, text=False)
    _note_axis_start(ax)
    ax.set_title("Fig. 1 — Score relative to gold labels\n(bars: mean over model × dataset pairs)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="Points: one (model, dataset)", title_fontsize=8)
    ax.set_xlabel("Condition (ratios on the folds both the condition and gold have)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def fig2_dataset_condition(folds: pd.DataFrame, path: Path) -> Path | None:
    """Per dataset: each condition's score for Llama-3.1-70B (our ``llama70b``, the paper's
    Figure 2 model) when present, else the mean over the models there are (said in the panel
    title); error bars = SE over folds (over model x fold for a mean); yellow diamonds: the paper."""
    if folds.empty:
        return None
    datasets = sorted(folds.dataset.unique())
    all_conds = sort_conditions(folds.condition)
    fig, axes = _grid(len(datasets))
    for ax, d in zip(axes, datasets):
        sub = folds[folds.dataset == d]
        if paper.PAPER_MODEL_KEY in set(sub.model):
            sub, who = sub[sub.model == paper.PAPER_MODEL_KEY], paper.PAPER_MODEL
        else:
            who = f"no {paper.PAPER_MODEL_KEY} results: mean of {sub.model.nunique()} model(s)"
        s = display_scale(d, declared_metric(sub))
        conds = all_conds  # a condition this dataset lacks is marked missing, not left out
        # mean over models of the model's mean over folds; SE over all (model, fold) scores
        means, ses = [], []
        for c in conds:
            g = sub[sub.condition == c].dropna(subset=["score"])
            means.append(g.groupby("model").score.mean().mean() * s if len(g) else np.nan)
            ses.append(fold_se(g.score, g.get("score_se")) * s)
        x = np.arange(len(conds))
        ax.bar(x, means, yerr=[0 if np.isnan(e) else e for e in ses], capsize=4,
               color=[_color(c, i) for i, c in enumerate(conds)], edgecolor="black")
        for xi, m, e in zip(x, means, ses):
            if np.isnan(m):
                continue
            top = m + (0 if np.isnan(e) else e)
            ax.text(xi, top, f"{m:.1f}" if s > 1 else f"{m:.2f}", ha="center", va="bottom",
                    fontsize=7, bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
        pub = [None if paper_score(d, c) is None else paper_score(d, c) * s for c in conds]
        drew = _paper_points(ax, x + 0.3, pub, labelled=True)  # beside the bar's value label
        ax.set_xticks(x, [_label(c) for c in conds], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(conds) - 0.4)  # a missing condition keeps its slot (and its ×)
        ax.set_ylabel(_ylabel(d, metric=declared_metric(sub)))
        ax.set_title(f"{d} ({who})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if s > 1:
            # Room above the tallest error bar for its value label (it used to touch the title).
            vals = np.array(means + [v for v in pub if v is not None], dtype=float)
            tops = np.array(means) + np.nan_to_num(np.array(ses, dtype=float))
            ax.set_ylim(max(0, np.nanmin(vals) - 15), max(np.nanmax(tops), np.nanmax(vals)) + 10)
        _mark_zero_bars(ax, x, means, 0.8, text=False)
        missing = _mark_missing(ax, x, means, label=True)
        _note_axis_start(ax)
        if drew or missing:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Fig. 2 — Score per dataset and condition, {paper.PAPER_MODEL} as in the paper\n"
                 f"(error bars: {SE_RULE})", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def fig3_improvement(diffs: pd.DataFrame, path: Path) -> Path | None:
    """Per dataset: ICM − zero-shot and gold − zero-shot for each model (common folds)."""
    if diffs.empty:
        return None
    datasets = sorted(diffs.dataset.unique())
    fig, axes = _grid(len(datasets))
    for ax, d in zip(axes, datasets):
        sub = diffs[diffs.dataset == d]
        s = display_scale(d, declared_metric(sub))
        models = sort_models(sub.model.unique())
        conds = [c for c in ("icm", "gold") if c in set(sub.condition)]
        w = 0.8 / max(1, len(conds))
        for j, c in enumerate(conds):
            vals, errs = [], []
            for m in models:
                r = sub[(sub.model == m) & (sub.condition == c)]
                vals.append(r["diff"].iloc[0] * s if len(r) else np.nan)
                errs.append(r["diff_se"].iloc[0] * s if len(r) else np.nan)
            x = np.arange(len(models)) + (j - (len(conds) - 1) / 2) * w
            ax.bar(x, vals, w, yerr=[0 if np.isnan(e) else e for e in errs], capsize=3,
                   color=_color(c, j), edgecolor="black",
                   label=f"{_label(c)} − zero-shot" if d == datasets[0] else None)
            _mark_zero_bars(ax, x, vals, w)
            # the paper's difference, at its model's bar (Llama-3.1-70B)
            pc, pz = paper_score(d, c), paper_score(d, "zero_shot")
            if paper.PAPER_MODEL_KEY in models and pc is not None and pz is not None:
                k = models.index(paper.PAPER_MODEL_KEY)
                _paper_points(ax, [x[k]], [(pc - pz) * s], labelled=(d == datasets[0] and j == 0))
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right")
        ax.set_xlabel("Model")
        ax.set_ylabel(_ylabel(d, delta=True, metric=declared_metric(sub)))
        ax.set_title(d)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.suptitle("Fig. 3 — Improvement over zero-shot (chat), per model (by family and size)\n"
                 "(on the folds both conditions have; error bars: SE over folds, none with one "
                 f"fold; diamonds: the paper, {paper.PAPER_MODEL})", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def fig8_absolute(means: pd.DataFrame, path: Path) -> Path | None:
    """Absolute scores: one panel per dataset, models on x, one bar per condition, SE bars."""
    if means.empty:
        return None
    datasets = sorted(means.dataset.unique())
    fig, axes = _grid(len(datasets), max_cols=2, w=7.0, h=4.2)
    for ax, d in zip(axes, datasets):
        sub = means[means.dataset == d]
        s = display_scale(d, declared_metric(sub))
        models = sort_models(sub.model.unique())
        conds = sort_conditions(sub.condition)
        full = sub.n_folds.max()
        w = 0.85 / len(conds)
        for j, c in enumerate(conds):
            vals, errs, partial = [], [], []
            for m in models:
                r = sub[(sub.model == m) & (sub.condition == c)]
                vals.append(r.score.iloc[0] * s if len(r) else np.nan)
                errs.append(r.se.iloc[0] * s if len(r) and pd.notna(r.se.iloc[0]) else 0)
                partial.append(bool(len(r)) and r.n_folds.iloc[0] < full)
            x = np.arange(len(models)) + (j - (len(conds) - 1) / 2) * w
            bars = ax.bar(x, vals, w, yerr=errs, capsize=2, color=_color(c, j),
                          edgecolor="black", label=_label(c) if d == datasets[0] else None)
            for b, part in zip(bars, partial):
                if part:
                    b.set_hatch("//")
            _mark_zero_bars(ax, x, vals, w)
            _mark_missing(ax, x, vals)
            if paper.PAPER_MODEL_KEY in models and paper_score(d, c) is not None:
                k = models.index(paper.PAPER_MODEL_KEY)
                _paper_points(ax, [x[k]], [paper_score(d, c) * s],
                              labelled=(d == datasets[0] and not any(
                                  PAPER_LABEL == h for h in ax.get_legend_handles_labels()[1])))
        ax.set_xticks(range(len(models)), models)
        ax.set_xlabel("Model")
        ax.set_ylabel(_ylabel(d, metric=declared_metric(sub)))
        ax.set_title(d)
        ax.grid(axis="y", alpha=0.3)
        if s > 1:
            ax.set_ylim(0, 100)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.suptitle("Fig. 8 — Absolute scores, all models, datasets and conditions\n(error bars: "
                 f"{SE_RULE}; hatched: not all folds present; ×: cell missing; diamonds: "
                 f"the paper, {paper.PAPER_MODEL}, at our {paper.PAPER_MODEL_KEY})", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def fig5_per_persona(pp_table: pd.DataFrame, path: Path) -> Path | None:
    """Per (model, dataset): per-persona score of zero-shot, ICM and gold."""
    if pp_table.empty:
        return None
    conds = [c for c in ("zero_shot", "icm", "gold") if c in pp_table.columns]
    if not conds:
        return None
    pairs = sorted(pp_table.groupby(["model", "dataset"]).groups.keys())
    fig, axes = _grid(len(pairs), max_cols=2, w=7.0, h=4.0)
    for ax, (m, d) in zip(axes, pairs):
        sub = pp_table[(pp_table.model == m) & (pp_table.dataset == d)]
        personas = list(sub.persona)
        w = 0.8 / len(conds)
        for j, c in enumerate(conds):
            x = np.arange(len(personas)) + (j - (len(conds) - 1) / 2) * w
            ax.bar(x, sub[c], w, color=_color(c, j), edgecolor="black", label=_label(c))
            _mark_zero_bars(ax, x, list(sub[c]), w)
        ax.set_xticks(range(len(personas)), personas, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(_ylabel(d, metric=declared_metric(sub)))
        ax.set_title(f"{m} / {d}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fig. 5 — Per-persona scores (mean over folds)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def fig6_stability(stab: pd.DataFrame, path: Path) -> Path | None:
    """Stable fraction (%) of two-option questions per (model, dataset) and condition."""
    if stab.empty or "stable_fraction" not in stab.columns:
        return None
    stab = stab.dropna(subset=["stable_fraction"])
    if stab.empty:
        return None
    pairs = sorted(stab.groupby(["model", "dataset"]).groups.keys())
    conds = sort_conditions(stab.condition)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(pairs) + 2), 4.2))
    w = 0.85 / len(conds)
    for j, c in enumerate(conds):
        vals = []
        for m, d in pairs:
            r = stab[(stab.model == m) & (stab.dataset == d) & (stab.condition == c)]
            vals.append(r.stable_fraction.iloc[0] if len(r) else np.nan)
        x = np.arange(len(pairs)) + (j - (len(conds) - 1) / 2) * w
        ax.bar(x, vals, w, color=_color(c, j), edgecolor="black", label=_label(c))
        _mark_zero_bars(ax, x, vals, w)
    ax.set_xticks(range(len(pairs)), [f"{m}\n{d}" for m, d in pairs])
    ax.set_ylabel("Stable two-option questions (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Fig. 6 — Stability: exactly one option judged True")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


ZERO_SHOT = ("zero_shot", "zero_shot_base")


def fig7_sample_efficiency(eff: pd.DataFrame, path: Path) -> Path | None:
    """Score vs number of in-context examples; drawn when some few-shot condition has >= 2 points
    (an ``all`` cell counts: it sits at the number of examples it used, or at a separate "all"
    position when that is unknown). Zero-shot conditions are horizontal reference lines."""
    if eff.empty or "n_examples" not in eff.columns:
        return None
    eff = eff.dropna(subset=["score"]).copy()
    few = eff[~eff.condition.isin(ZERO_SHOT)]
    if few.empty or few.groupby(["model", "dataset", "condition"]).n.nunique().max() < 2:
        return None
    pairs = sorted(few.groupby(["model", "dataset"]).groups.keys())
    fig, axes = _grid(len(pairs))
    for ax, (m, d) in zip(axes, pairs):
        sub = few[(few.model == m) & (few.dataset == d)].copy()
        numeric = sub.n_examples.dropna()
        x_all = (numeric.max() * 1.25 if len(numeric) else 1.0)
        unknown_all = sub.n_examples.isna() & (sub.n.astype(str) == "all")
        sub.loc[unknown_all, "n_examples"] = x_all
        for j, c in enumerate(sort_conditions(sub.condition)):
            g = sub[sub.condition == c].dropna(subset=["n_examples"]).sort_values("n_examples")
            ax.errorbar(g.n_examples, g.score, yerr=g.se.fillna(0), marker="o", capsize=3,
                        color=_color(c, j), label=_label(c))
            alls = g[g.n.astype(str) == "all"]
            ax.scatter(alls.n_examples, alls.score, s=90, facecolor="none", edgecolor="black",
                       zorder=4, label="all examples" if j == 0 and len(alls) else None)
        zs = eff[(eff.model == m) & (eff.dataset == d) & eff.condition.isin(ZERO_SHOT)]
        for c, g in zs.groupby("condition"):
            ax.axhline(g.score.mean(), color=_color(c), ls="--", lw=1.2, label=_label(c))
        if unknown_all.any():
            ticks = sorted(set(numeric.round().astype(int))) + [x_all]
            ax.set_xticks(ticks, [str(t) for t in ticks[:-1]] + ["all"])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # example counts
        for n in (20, 30):
            ax.axvline(n, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("In-context examples per prompt (n)")
        ax.set_ylabel(_ylabel(d, metric=declared_metric(sub)))
        ax.set_title(f"{m} / {d}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fig. 7 — Sample efficiency (dotted: n = 20, 30; circled: all examples; "
                 "dashed: zero-shot)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def fig_label_sets(table: pd.DataFrame, path: Path) -> Path | None:
    """Coherence beyond accuracy: each label set of the training claims (gold, ICM, acc-matched,
    bootstrap, random) at its accuracy (x) and coherence P (y), marker size by consistency
    violations, one panel per (model, dataset, source cell). ``table``: tables.label_set_table."""
    if table is None or table.empty:
        return None
    panels = list(table.groupby(["model", "dataset", "source"], sort=True))
    fig, axes = _grid(len(panels))
    colors = {"gold": "#2ca02c", "icm": "#d62728", "acc_matched": "#fdae6b",
              "bootstrap": "#9467bd", "random": "#7f7f7f"}
    for ax, ((m, d, src), g) in zip(axes, panels):
        for _, r in g.iterrows():
            if pd.isna(r.accuracy) or pd.isna(r.coherence_P):
                continue
            ax.scatter(r.accuracy, r.coherence_P, s=40 + 20 * float(r.violations or 0),
                       color=colors.get(r.label_set, "#1f77b4"), edgecolor="black", zorder=3,
                       label=f"{r.label_set} ({r.violations:.1f} viol.)")
        ax.set_title(f"{m} / {d} (scored in {src} cells)", fontsize=9)
        ax.set_xlabel("label accuracy vs gold (%)")
        ax.set_ylabel("coherence P (mean signed log-odds)")
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Coherence beyond accuracy: the training label sets (marker size: violations)")
    return _save(fig, path)


def fig_collaborative(table: pd.DataFrame, path: Path) -> Path | None:
    """Table 1 as a figure: per persona, each selection method's test and label accuracy after the
    human labels (bars), before them (black ticks) and the paper's values (diamonds, GQA rows of
    simulated answers only). ``table``: tables.collaborative_table. Which of the paper's figures
    this corresponds to is not established here (its Table 1 holds these numbers)."""
    if table is None or table.empty:
        return None
    keys = ["model", "dataset", "persona"] + (["answers"] if "answers" in table.columns else [])
    panels = list(table.groupby(keys, sort=True))
    fig, axes = _grid(len(panels))
    metrics = (("test_accuracy", "test", "#1f77b4"), ("label_accuracy", "label", "#ff7f0e"))
    w = 0.38
    for ax, (key, g) in zip(axes, panels):
        g = g.reset_index(drop=True)
        xs = np.arange(len(g))
        for j, (col, name, color) in enumerate(metrics):
            pos = xs + (j - 0.5) * w
            vals = 100 * g[col].astype(float)
            ax.bar(pos, vals, w, color=color, label=f"{name} accuracy, after")
            _mark_missing(ax, pos, list(vals))
            before = 100 * g[f"before_{col}"].astype(float)
            ax.hlines(before, pos - w / 2, pos + w / 2, colors="black", lw=2,
                      label="before the labels" if j == 0 else None, zorder=4)
            paper = 100 * g[f"paper_{col}"].astype(float) if f"paper_{col}" in g else None
            if paper is not None and paper.notna().any():
                ax.plot(pos, paper, ls="none", marker="D", color="black", markersize=5,
                        markerfacecolor="white", label="paper" if j == 0 else None, zorder=5)
        ax.set_xticks(xs, [f"{m}\nk={k}" for m, k in zip(g.method, g.k)], fontsize=8)
        ax.set_ylim(0, 128)  # room above 100% for the legend
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(" / ".join(str(x) for x in key), fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    fig.suptitle("Collaborative elicitation (Table 1): accuracy after asking the k least-confident "
                 "(confidence), random or active-learning questions")
    return _save(fig, path)


def fig_trajectories(traj: pd.DataFrame, path: Path, max_rows: int = 6,
                     searches: pd.DataFrame | None = None) -> Path | None:
    """ICM search score U over iterations: one row of panels per (model, dataset), one panel per
    fold, one line per persona (one colour per persona in every panel, up to 20 distinct; one
    legend beside the figure, so GQA's 13 countries are all named). A dot marks each search's
    final U (``searches``' summary U, the U of the labels handed out, which differs from the last
    iteration's when claims the search never reached were labelled at the end; else the last
    iteration's U)."""
    if traj.empty or "U" not in traj.columns:
        return None
    pairs = sorted(traj.groupby(["model", "dataset"]).groups.keys())[:max_rows]
    folds = sorted(traj.fold.unique())
    personas = sorted(traj.persona.unique())
    colors = {p: plt.cm.tab20(i % 20) for i, p in enumerate(personas)}
    final_u = {}
    if searches is not None and not searches.empty and {"hash", "U"} <= set(searches.columns):
        final_u = {str(h): float(u) for h, u in zip(searches.hash, searches.U) if pd.notna(u)}
    fig, axes = plt.subplots(len(pairs), len(folds), figsize=(4.2 * len(folds), 3.2 * len(pairs)),
                             squeeze=False)
    for r, (m, d) in enumerate(pairs):
        for k, fold in enumerate(folds):
            ax = axes[r][k]
            sub = traj[(traj.model == m) & (traj.dataset == d) & (traj.fold == fold)]
            for p, g in sub.groupby("persona"):
                for h, gg in g.groupby("hash"):  # restarts: one line each
                    gg = gg.sort_values("iteration")
                    ax.plot(gg.iteration, gg.U, lw=1, color=colors[p])
                    ax.plot([gg.iteration.iloc[-1]], [final_u.get(h, gg.U.iloc[-1])], "o",
                            color=colors[p], markeredgecolor="black", markersize=5, zorder=4)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are counts
            ax.set_title(f"{m} / {d} / fold {fold}", fontsize=9)
            ax.set_xlabel("Iteration")
            ax.set_ylabel("Search objective U")
            ax.grid(alpha=0.3)
            if sub.empty:
                ax.text(0.5, 0.5, "no search", transform=ax.transAxes, ha="center")
    handles = [plt.Line2D([], [], color=colors[p], lw=2) for p in personas]
    handles.append(plt.Line2D([], [], ls="none", marker="o", color="grey", markeredgecolor="black"))
    personas = personas + ["final U of a search"]
    fig.legend(handles, personas, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="Persona", ncol=1 if len(personas) <= 16 else 2, frameon=False)
    fig.suptitle("ICM search trajectories (every fold; one line per persona and restart)",
                 fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
