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
import pandas as pd  # noqa: E402

from analysis.paper_numbers import CONDITION_LABELS  # noqa: E402
from analysis.tables import display_scale, is_accuracy, sort_conditions  # noqa: E402

COND_COLORS = {"zero_shot_base": "#bbbbbb", "zero_shot": "#7f7f7f", "random": "#9ecae1",
               "bootstrap": "#9467bd",
               "acc_matched": "#fdae6b", "icm": "#d62728", "gold": "#2ca02c"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _label(c: str) -> str:
    return CONDITION_LABELS.get(c, c)


def _color(c: str, i: int = 0) -> str:
    return COND_COLORS.get(c, plt.cm.tab10(i % 10))


def _ylabel(dataset: str, delta: bool = False) -> str:
    if is_accuracy(dataset):
        return "Δ accuracy (percentage points)" if delta else "Accuracy (%)"
    return "Δ representation score (1–5 scale)" if delta else "Representation score (1–5)"


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
    for i, c in enumerate(conds):
        v = ratios[ratios.condition == c].ratio.dropna() * 100
        if len(v) == 0:
            continue
        ax.bar(i, v.mean(), color=_color(c, i), alpha=0.8, edgecolor="black", width=0.7)
        ax.text(i, v.mean() + 1, f"{v.mean():.1f}", ha="center", va="bottom", fontsize=8)
    for j, d in enumerate(datasets):
        sub = ratios[ratios.dataset == d]
        xs = [conds.index(c) + rng.uniform(-0.18, 0.18) for c in sub.condition]
        ax.scatter(xs, sub.ratio * 100, marker=MARKERS[j % len(MARKERS)], color="black",
                   facecolor="white", zorder=3, s=28, label=f"{d} (each model)")
    ax.axhline(100, color="#2ca02c", ls="--", lw=1, label="gold = 100%")
    ax.set_xticks(range(len(conds)), [_label(c) for c in conds], rotation=20, ha="right")
    ax.set_ylabel("Score as % of few-shot gold")
    lo = float(np.nanmin(ratios.ratio * 100))
    ax.set_ylim(min(50, lo - 5), max(110, float(np.nanmax(ratios.ratio * 100)) + 8))
    ax.set_title("Fig. 1 — Score relative to gold labels\n(bars: mean over model × dataset pairs)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="Points: one (model, dataset)", title_fontsize=8)
    ax.set_xlabel("Condition (ratios on the folds both the condition and gold have)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def fig2_dataset_condition(folds: pd.DataFrame, path: Path) -> Path | None:
    """Per dataset: mean over models of each condition's score, error bars = SE over the
    (model, fold) scores."""
    if folds.empty:
        return None
    datasets = sorted(folds.dataset.unique())
    fig, axes = _grid(len(datasets))
    for ax, d in zip(axes, datasets):
        sub = folds[folds.dataset == d]
        s = display_scale(d)
        conds = sort_conditions(sub.condition)
        # mean over models of the model's mean over folds; SE over all (model, fold) scores
        means, ses = [], []
        for c in conds:
            g = sub[sub.condition == c].dropna(subset=["score"])
            means.append(g.groupby("model").score.mean().mean() * s)
            ses.append(g.score.std(ddof=1) / math.sqrt(len(g)) * s if len(g) >= 2 else np.nan)
        x = np.arange(len(conds))
        ax.bar(x, means, yerr=[0 if np.isnan(e) else e for e in ses], capsize=4,
               color=[_color(c, i) for i, c in enumerate(conds)], edgecolor="black")
        for xi, m, e in zip(x, means, ses):
            if np.isnan(m):
                continue
            top = m + (0 if np.isnan(e) else e)
            ax.text(xi, top, f"{m:.1f}" if s > 1 else f"{m:.2f}", ha="center", va="bottom",
                    fontsize=7, bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
        ax.set_xticks(x, [_label(c) for c in conds], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(_ylabel(d))
        ax.set_title(f"{d} ({sub.model.nunique()} model(s))")
        ax.grid(axis="y", alpha=0.3)
        if s > 1:
            # Room above the tallest error bar for its value label (it used to touch the title).
            tops = np.array(means) + np.nan_to_num(np.array(ses, dtype=float))
            ax.set_ylim(max(0, np.nanmin(means) - 15), np.nanmax(tops) + 10)
    fig.suptitle("Fig. 2 — Score per dataset and condition (mean over models; "
                 "error bars: SE over model × fold)", fontsize=11)
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
        s = display_scale(d)
        models = sorted(sub.model.unique())
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
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right")
        ax.set_xlabel("Model")
        ax.set_ylabel(_ylabel(d, delta=True))
        ax.set_title(d)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.suptitle("Fig. 3 — Improvement over zero-shot (chat), per model\n(on the folds both "
                 "conditions have; error bars: SE over folds, none with one fold)", fontsize=11)
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
        s = display_scale(d)
        models = sorted(sub.model.unique())
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
        ax.set_xticks(range(len(models)), models)
        ax.set_xlabel("Model")
        ax.set_ylabel(_ylabel(d))
        ax.set_title(d)
        ax.grid(axis="y", alpha=0.3)
        if s > 1:
            ax.set_ylim(0, 100)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.suptitle("Fig. 8 — Absolute scores, all models, datasets and conditions\n(error bars: SE "
                 "over folds; hatched: not all folds present; no bar: cell missing)", fontsize=11)
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
        ax.set_xticks(range(len(personas)), personas, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(_ylabel(d))
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
    ax.set_xticks(range(len(pairs)), [f"{m}\n{d}" for m, d in pairs])
    ax.set_ylabel("Stable two-option questions (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Fig. 6 — Stability: exactly one option judged True")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def fig7_sample_efficiency(eff: pd.DataFrame, path: Path) -> Path | None:
    """Score vs number of in-context examples; only drawn when some condition has >= 2 n."""
    if eff.empty or "n_examples" not in eff.columns:
        return None
    eff = eff.dropna(subset=["n_examples", "score"])
    if eff.empty or eff.groupby(["model", "dataset", "condition"]).n_examples.nunique().max() < 2:
        return None
    pairs = sorted(eff.groupby(["model", "dataset"]).groups.keys())
    fig, axes = _grid(len(pairs))
    for ax, (m, d) in zip(axes, pairs):
        sub = eff[(eff.model == m) & (eff.dataset == d)]
        for j, c in enumerate(sort_conditions(sub.condition)):
            g = sub[sub.condition == c].sort_values("n_examples")
            ax.errorbar(g.n_examples, g.score, yerr=g.se.fillna(0), marker="o", capsize=3,
                        color=_color(c, j), label=_label(c))
        for n in (20, 30):
            ax.axvline(n, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("In-context examples per prompt (n)")
        ax.set_ylabel(_ylabel(d))
        ax.set_title(f"{m} / {d}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fig. 7 — Sample efficiency (dotted: n = 20, 30)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def fig_trajectories(traj: pd.DataFrame, path: Path, max_panels: int = 6) -> Path | None:
    """ICM search score U over iterations, one line per persona (first fold of each pair)."""
    if traj.empty or "U" not in traj.columns:
        return None
    pairs = sorted(traj.groupby(["model", "dataset"]).groups.keys())[:max_panels]
    fig, axes = _grid(len(pairs))
    for ax, (m, d) in zip(axes, pairs):
        sub = traj[(traj.model == m) & (traj.dataset == d)]
        fold = sub.fold.min()
        for p, g in sub[sub.fold == fold].groupby("persona"):
            ax.plot(g.iteration, g.U, lw=1, label=p)
        ax.set_xlabel("Iteration")
        ax.set_ylabel("Search objective U")
        ax.set_title(f"{m} / {d} / fold {fold}")
        ax.grid(alpha=0.3)
        if sub.persona.nunique() <= 8:
            ax.legend(fontsize=7)
    fig.suptitle("ICM search trajectories", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
